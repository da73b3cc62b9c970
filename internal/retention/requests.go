package retention

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// requestAction is the action of the admin record of a deletion request
// or consent withdrawal. Its detail's "delete_after" lists the records
// whose delete-after time it set: [index, Unix ms] (RequestReport).
const requestAction = "subject_request"

// requests are the delete-after times that the deletion requests and
// withdrawals recorded in the ledger set, by record index: the only basis
// on which a purge deletes a payload before its class's keep period. A
// later request of a record replaces an earlier one (as in verify; a
// request only ever moves the time earlier).
type requests struct {
	log    Log
	sealer ledger.Sealer
	read   uint64 // records [0, read) are scanned
	at     map[uint64]int64
}

// scanBatch is how many leaves a scan reads at a time.
const scanBatch = 4096

// update scans the records appended since the last scan: their leaves,
// and the payloads of the admin records among them only. A request record
// that does not open (its subject shredded since, or a row written by
// hand, unsealed) grants nothing.
//
// BUG: this is a scan of the whole log's leaves once per purge run (when
// some expired record is not due by its keep period): linear in the log's
// size. An index of requested times by record, filled by the request's
// own effect, would make it proportional to the candidates.
func (r *requests) update(ctx context.Context) error {
	if r.at == nil {
		r.at = map[uint64]int64{}
	}
	n, err := r.log.Count(ctx)
	if err != nil {
		return fmt.Errorf("purge: read the deletion requests: %w", err)
	}
	for r.read < n {
		end := min(n, r.read+scanBatch)
		leaves, err := r.log.ReadLeaves(ctx, r.read, end)
		if err != nil {
			return fmt.Errorf("purge: read the deletion requests: %w", err)
		}
		for i, b := range leaves {
			var leaf ledger.Leaf
			if leaf.UnmarshalBinary(b) != nil || leaf.Kind != ledger.KindAdmin {
				continue
			}
			if err := r.open(ctx, r.read+uint64(i)); err != nil {
				return err
			}
		}
		r.read = end
	}
	return nil
}

// open reads admin record index and, if it is a request, notes the times
// it set.
func (r *requests) open(ctx context.Context, index uint64) error {
	for rec, err := range r.log.Records(ctx, index, index+1) {
		if err != nil {
			return fmt.Errorf("purge: read the deletion requests: %w", err)
		}
		leaf, payload, err := ledger.CheckRecord(ctx, r.sealer, rec)
		if err != nil || payload == nil || leaf.Kind != ledger.KindAdmin {
			continue
		}
		_, body, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			continue
		}
		a, ok := body.(*record.Admin)
		if !ok || a.Action != requestAction || a.Detail["delete_after"] == nil {
			continue
		}
		var set [][2]int64
		j, err := json.Marshal(a.Detail["delete_after"])
		if err != nil || json.Unmarshal(j, &set) != nil {
			continue
		}
		for _, s := range set {
			// A request names records before it, as verify requires.
			if s[0] >= 0 && uint64(s[0]) < rec.Index {
				r.at[uint64(s[0])] = s[1]
			}
		}
	}
	return nil
}
