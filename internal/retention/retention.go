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
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// Policy is a retention class: how long payloads are kept, and what a
// user's deletion request or consent withdrawal does to them.
type Policy struct {
	// Law names the law the class follows, for the operator's reports.
	Law string `json:"law,omitempty"`
	// Keep is how long a payload is kept after its record's time; 0 keeps
	// it until a request or an operator deletes it.
	Keep time.Duration `json:"keep"`
	// MinKeep is the least time a payload is kept after its record's time,
	// whatever a request says (proof the law requires to be kept).
	MinKeep time.Duration `json:"min_keep,omitempty"`
	// AfterDeletionRequest, if set, is how long after a user's deletion
	// request that user's payloads are kept at most.
	AfterDeletionRequest *time.Duration `json:"after_deletion_request,omitempty"`
	// AfterWithdrawal, if set, is how long after a user withdraws consent
	// that user's payloads are kept at most.
	AfterWithdrawal *time.Duration `json:"after_withdrawal,omitempty"`
}

const year = 365 * 24 * time.Hour

func dur(d time.Duration) *time.Duration { return &d }

// Presets are the retention classes taken from the product brief's table
// of retention by jurisdiction. They are defaults to check with counsel,
// not legal advice; a config can change them or add classes.
//
//   - jp-appi (Japan, APPI): kept while there is a business need (no
//     automatic deletion); at most one year after the user's deletion
//     request.
//   - th-pdpa (Thailand, PDPA): the statute period, 10 years, as both the
//     least and the most: a request does not shorten it.
//   - tw-pipa (Taiwan, PIPA): at least 3 years as marketing proof, at most
//     5 years, or until consent is withdrawn (but not before 3 years).
func Presets() map[string]Policy {
	return map[string]Policy{
		"jp-appi": {Law: "Japan APPI", AfterDeletionRequest: dur(year)},
		"th-pdpa": {Law: "Thailand PDPA", Keep: 10 * year, MinKeep: 10 * year},
		"tw-pipa": {Law: "Taiwan PIPA", Keep: 5 * year, MinKeep: 3 * year, AfterWithdrawal: dur(0)},
	}
}

// Candidate is a record with a payload, as purges and requests see it.
type Candidate struct {
	Index         uint64
	Channel       string
	TimeMs        int64
	Class         string
	Subjects      []string
	DeleteAfterMs int64 // 0: no delete-after time
}

// NewCandidate builds a candidate from a record's stored columns: its
// index, leaf, keys (ledger.FormatKeys; "" for none) and delete-after time.
func NewCandidate(index uint64, leafBytes []byte, keys string, deleteAfterMs int64) (Candidate, error) {
	var leaf ledger.Leaf
	if err := leaf.UnmarshalBinary(leafBytes); err != nil {
		return Candidate{}, fmt.Errorf("record %d: %w", index, err)
	}
	ks, err := ledger.ParseKeys(keys)
	if err != nil {
		return Candidate{}, fmt.Errorf("record %d: %w", index, err)
	}
	return Candidate{Index: index, Channel: leaf.Channel, TimeMs: leaf.Time.UnixMilli(), Class: leaf.Retention,
		Subjects: ledger.Subjects(ks), DeleteAfterMs: deleteAfterMs}, nil
}

// Hold is a legal hold: while active, it keeps from deletion the payloads
// of the records of a channel ("" for all) and a subject ("" for all) in a
// time range (0 for open).
type Hold struct {
	ID         int64  `json:"id"`
	Channel    string `json:"channel"`
	Subject    string `json:"subject,omitempty"`
	FromMs     int64  `json:"from_ms"`
	ToMs       int64  `json:"to_ms"`
	Reason     string `json:"reason"`
	CreatedMs  int64  `json:"created_ms"`
	ReleasedMs int64  `json:"released_ms,omitempty"`
}

// Covers reports whether an active hold keeps a candidate.
func (h Hold) Covers(c Candidate) bool {
	return h.ReleasedMs == 0 && (h.Channel == "" || h.Channel == c.Channel) &&
		(h.Subject == "" || slices.Contains(c.Subjects, h.Subject)) &&
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
	//
	// It also destroys the data keys of the subjects in destroy, and fails
	// if a record still refers to one of them.
	Purge(ctx context.Context, indices []uint64, deletion ledger.Record, destroy []string) error
	// SubjectRecords returns up to limit records of a subject whose
	// payload is still there, in index order, from index from.
	SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]Candidate, error)
	// SetDeleteAfter sets the delete-after times of records, in one
	// transaction.
	SetDeleteAfter(ctx context.Context, cs []Candidate) error
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
func Purge(ctx context.Context, s Store, sealer ledger.Sealer, now time.Time, dryRun bool) (Report, error) {
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
		if err := deleteRecords(ctx, s, sealer, now, batch, "retention period over", nil); err != nil {
			return rep, err
		}
		rep.Deleted = append(rep.Deleted, batch...)
	}
}

// deleteRecords deletes payloads, and destroys data keys, with their
// deletion record.
func deleteRecords(ctx context.Context, s Store, sealer ledger.Sealer, now time.Time, indices []uint64, reason string, destroy []string) error {
	if indices == nil {
		indices = []uint64{}
	}
	body, _ := json.Marshal(Deletion{Deleted: indices, Reason: reason})
	payload, err := ledger.EncodePayload(&ledger.Meta{ReceivedMs: now.UnixMilli()}, body)
	if err != nil {
		return err
	}
	rec, err := ledger.SealRecord(ctx, sealer, ledger.Entry{Kind: ledger.KindDeletion, Time: now, Payload: payload})
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, indices, rec, destroy); err != nil {
		if sealer != nil {
			sealer.Reset()
		}
		return fmt.Errorf("purge: %w", err)
	}
	return nil
}

// ErrHeld is returned when a legal hold forbids an operation.
var ErrHeld = errors.New("retention: a legal hold covers records of this subject")

// subjectRecords returns every record of a subject with a payload.
func subjectRecords(ctx context.Context, s Store, subject string) ([]Candidate, error) {
	var out []Candidate
	var from uint64
	for {
		cs, err := s.SubjectRecords(ctx, subject, from, 1000)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
		if len(cs) < 1000 {
			return out, nil
		}
		from = cs[len(cs)-1].Index + 1
	}
}

// Shred destroys a subject's data key and deletes the payloads sealed with
// it, with a deletion record, in one transaction: crypto-shredding. Every
// copy of those payloads (a backup, a replica's disk) becomes unreadable
// with the key, and verify reports them as deleted by policy. It refuses
// while a legal hold covers one of the subject's records. The system's own
// key is never shredded.
func Shred(ctx context.Context, s Store, sealer ledger.Sealer, subject string, now time.Time) ([]uint64, error) {
	if subject == ledger.SubjectSystem || !ledger.ValidSubject(subject) {
		return nil, errors.New("retention: not a subject whose key can be destroyed (user:, group: or room: and a LINE id)")
	}
	holds, err := s.Holds(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := subjectRecords(ctx, s, subject)
	if err != nil {
		return nil, err
	}
	indices := make([]uint64, 0, len(cs))
	for _, c := range cs {
		for _, h := range holds {
			if h.Covers(c) {
				return nil, fmt.Errorf("%w (hold %d)", ErrHeld, h.ID)
			}
		}
		indices = append(indices, c.Index)
	}
	if err := deleteRecords(ctx, s, sealer, now, indices, "the subject's data key was destroyed", []string{subject}); err != nil {
		return nil, err
	}
	if sealer != nil {
		sealer.Reset()
	}
	return indices, nil
}

// RequestKind is a user's request that shortens retention.
type RequestKind string

// The requests.
const (
	DeletionRequest RequestKind = "deletion"
	Withdrawal      RequestKind = "withdrawal"
)

// RequestReport says what a request changed.
type RequestReport struct {
	Records int `json:"records"` // records of the subject with a payload
	Changed int `json:"changed"` // records whose delete-after time moved earlier
	// Unchanged by class: records whose class has no rule for the request.
	NoRule map[string]int `json:"no_rule,omitempty"`
}

// Apply applies a user's deletion request or consent withdrawal, made at
// time at, to the delete-after time of each of the subject's records, by
// the policy of its class: at most the policy's time after the request,
// never before the record's time plus the class's MinKeep, and never later
// than it already was. Records whose class has no rule for the request
// keep their time. Purges then delete them on schedule.
func Apply(ctx context.Context, s Store, policies map[string]Policy, subject string, kind RequestKind, at time.Time) (RequestReport, error) {
	rep := RequestReport{NoRule: map[string]int{}}
	if !ledger.ValidSubject(subject) || subject == ledger.SubjectSystem {
		return rep, errors.New("retention: not a subject (user:, group: or room: and a LINE id)")
	}
	if kind != DeletionRequest && kind != Withdrawal {
		return rep, fmt.Errorf("retention: unknown request kind %q (deletion or withdrawal)", kind)
	}
	cs, err := subjectRecords(ctx, s, subject)
	if err != nil {
		return rep, err
	}
	rep.Records = len(cs)
	var changed []Candidate
	for _, c := range cs {
		p := policies[c.Class]
		d := p.AfterDeletionRequest
		if kind == Withdrawal {
			d = p.AfterWithdrawal
		}
		if d == nil {
			rep.NoRule[c.Class]++
			continue
		}
		t := max(at.Add(*d).UnixMilli(), c.TimeMs+p.MinKeep.Milliseconds())
		if c.DeleteAfterMs == 0 || t < c.DeleteAfterMs {
			c.DeleteAfterMs = t
			changed = append(changed, c)
		}
	}
	for start := 0; start < len(changed); start += 1000 {
		if err := s.SetDeleteAfter(ctx, changed[start:min(len(changed), start+1000)]); err != nil {
			return rep, err
		}
	}
	rep.Changed = len(changed)
	if len(rep.NoRule) == 0 {
		rep.NoRule = nil
	}
	return rep, nil
}
