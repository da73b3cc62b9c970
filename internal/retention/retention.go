// Package retention deletes payloads when their retention period is over,
// unless a legal hold covers them. The log keeps every leaf: a payload is
// deleted with its nonce, so that the salted commitment in the leaf stays
// verifiable and the deleted content stays unguessable, and each deletion
// is itself a record, of kind deletion, which tells "deleted by policy"
// from "missing".
package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// Presets are the retention classes taken from the product brief's table
// of retention by jurisdiction: how long a record's payload is kept after
// the record's time. They are defaults to check with counsel, not legal
// advice; a config can change them or add classes.
//
//   - jp-appi (Japan, APPI): kept while there is a business need; no
//     automatic deletion (0).
//   - th-pdpa (Thailand, PDPA): the statute period, 10 years.
//   - tw-pipa (Taiwan, PIPA): at least 3 years as marketing proof, at most
//     5 years: deleted after 5 years.
var Presets = map[string]time.Duration{
	"jp-appi": 0,
	"th-pdpa": 10 * 365 * 24 * time.Hour,
	"tw-pipa": 5 * 365 * 24 * time.Hour,
}

// Candidate is a record whose payload is past its delete-after time.
type Candidate struct {
	Index   uint64
	Channel string
	TimeMs  int64
	Class   string
}

// Hold is a legal hold: while active, it keeps the payloads of the records
// of a channel ("" for all) in a time range (0 for open) from deletion.
type Hold struct {
	ID         int64  `json:"id"`
	Channel    string `json:"channel"`
	FromMs     int64  `json:"from_ms"`
	ToMs       int64  `json:"to_ms"`
	Reason     string `json:"reason"`
	CreatedMs  int64  `json:"created_ms"`
	ReleasedMs int64  `json:"released_ms,omitempty"`
}

// Covers reports whether an active hold keeps a candidate.
func (h Hold) Covers(c Candidate) bool {
	return h.ReleasedMs == 0 && (h.Channel == "" || h.Channel == c.Channel) &&
		(h.FromMs == 0 || c.TimeMs >= h.FromMs) && (h.ToMs == 0 || c.TimeMs < h.ToMs)
}

// Store is the storage that purges need. Declared here, by its consumer.
type Store interface {
	// Expired returns up to limit records whose payload is still there
	// and whose delete-after time is at or before now, in index order,
	// from index from.
	Expired(ctx context.Context, now time.Time, from uint64, limit int) ([]Candidate, error)
	// Purge deletes the payloads and nonces of the records, so that their
	// bytes are gone from the database files too, and appends the
	// deletion record, in one transaction.
	Purge(ctx context.Context, indices []uint64, deletion ledger.Record) error
	Holds(ctx context.Context) ([]Hold, error)
	AddHold(ctx context.Context, h Hold) (int64, error)
	ReleaseHold(ctx context.Context, id int64, at time.Time) error
}

// Deletion is the body of a deletion record.
type Deletion struct {
	Deleted []uint64 `json:"deleted"`
	Reason  string   `json:"reason"`
}

// Report says what a purge did, or would do.
type Report struct {
	Deleted []uint64
	Held    int
}

// Purge deletes every expired payload that no active hold covers, in
// batches, each with its deletion record. With dryRun it only reports.
func Purge(ctx context.Context, s Store, now time.Time, dryRun bool) (Report, error) {
	var rep Report
	holds, err := s.Holds(ctx)
	if err != nil {
		return rep, err
	}
	after := int64(-1) // the first index is 0
	for {
		cands, err := s.Expired(ctx, now, uint64(after+1), 500)
		if err != nil {
			return rep, err
		}
		if len(cands) == 0 {
			return rep, nil
		}
		var batch []uint64
		for _, c := range cands {
			after = int64(c.Index)
			held := false
			for _, h := range holds {
				if h.Covers(c) {
					held = true
					break
				}
			}
			if held {
				rep.Held++
				continue
			}
			batch = append(batch, c.Index)
		}
		if len(batch) == 0 || dryRun {
			rep.Deleted = append(rep.Deleted, batch...)
			continue
		}
		body, _ := json.Marshal(Deletion{Deleted: batch, Reason: "retention period over"})
		payload, err := ledger.EncodePayload(&ledger.Meta{ReceivedMs: now.UnixMilli()}, body)
		if err != nil {
			return rep, err
		}
		rec, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindDeletion, Time: now, Payload: payload})
		if err != nil {
			return rep, err
		}
		if err := s.Purge(ctx, batch, rec); err != nil {
			return rep, fmt.Errorf("purge: %w", err)
		}
		rep.Deleted = append(rep.Deleted, batch...)
	}
}
