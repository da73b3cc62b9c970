package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/ledger"
)

var _ fanout.Store = (*Store)(nil)

// applyFanout applies the fan-out queue's effects inside tx.
func applyFanout(ctx context.Context, tx pgx.Tx, e ledger.Effect) error {
	switch e := e.(type) {
	case fanout.Enqueue:
		if len(e.Entries) == 0 {
			return nil
		}
		// One statement for the outcome commit's entries: one round trip,
		// not one per event and destination.
		dests := make([]string, len(e.Entries))
		convs := make([]string, len(e.Entries))
		blobs := make([][]byte, len(e.Entries))
		attempts := make([]int64, len(e.Entries))
		nexts := make([]int64, len(e.Entries))
		for i, en := range e.Entries {
			attempts[i], nexts[i] = int64(en.Attempts), en.NextMs
			b, err := json.Marshal(en)
			if err != nil {
				return fmt.Errorf("encode fan-out entry: %w", err)
			}
			dests[i], convs[i], blobs[i] = en.Destination, en.Conversation, b
		}
		rows, err := tx.Query(ctx, `INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry)
			SELECT d, c, a, x, b FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[]) WITH ORDINALITY AS t(d, c, a, x, b, n) ORDER BY n
			RETURNING seq`, dests, convs, attempts, nexts, blobs)
		if err != nil {
			return err
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(seqs) != len(e.Entries) {
			return fmt.Errorf("queue for destinations: %d seqs for %d entries", len(seqs), len(e.Entries))
		}
		// Inserted in the order of n, each taking the sequence's next
		// value; RETURNING gives them in an order PostgreSQL does not
		// promise.
		slices.Sort(seqs)
		for i, en := range e.Entries {
			en.Seq = uint64(seqs[i])
		}
		return nil
	case fanout.Delivered:
		seqs := make([]int64, len(e.Seqs))
		for i, seq := range e.Seqs {
			seqs[i] = int64(seq)
		}
		tag, err := tx.Exec(ctx, "DELETE FROM fanout_queue WHERE seq = ANY($1)", seqs)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(seqs)) {
			return fmt.Errorf("%d of %d fan-out entries are not queued: %w", int64(len(seqs))-tag.RowsAffected(), len(seqs), ledger.ErrConflict)
		}
		return nil
	case fanout.Retry:
		tag, err := tx.Exec(ctx, "UPDATE fanout_queue SET attempts = $1, next_ms = $2 WHERE seq = $3", e.Attempts, e.NextMs, int64(e.Seq))
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("fan-out entry %d is not queued: %w", e.Seq, ledger.ErrConflict)
		}
		return nil
	}
	return ledger.ErrUnsupportedEffect
}

// Heads implements fanout.Store: the conversations from fanout_heads,
// due ones first, each part in the order of its index fanout_heads_order
// (next try, then seq), then each one's first entries from fanout_queue,
// one statement.
func (s *Store) Heads(ctx context.Context, destination string, nowMs int64, conversations, perConversation int) ([]*fanout.Entry, error) {
	rows, err := s.pool.Query(ctx, `WITH h AS (
			(SELECT conversation FROM fanout_heads WHERE destination = $1 AND next_ms <= $2 ORDER BY next_ms, seq LIMIT $3)
			UNION ALL
			(SELECT conversation FROM fanout_heads WHERE destination = $1 AND next_ms > $2 ORDER BY next_ms, seq LIMIT $3)
			LIMIT $3)
		SELECT q.seq, q.conversation, q.attempts, q.next_ms, q.entry FROM h, LATERAL
			(SELECT seq, conversation, attempts, next_ms, entry FROM fanout_queue WHERE destination = $1 AND conversation = h.conversation ORDER BY seq LIMIT $4) q
		ORDER BY q.seq`, destination, nowMs, conversations, perConversation)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read fan-out queue: %w", err)
	}
	defer rows.Close()
	var out []*fanout.Entry
	for rows.Next() {
		var e fanout.Entry
		var seq int64
		var b []byte
		if err := rows.Scan(&seq, &e.Conversation, &e.Attempts, &e.NextMs, &b); err != nil {
			return nil, fmt.Errorf("pgstore: read fan-out queue: %w", err)
		}
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("pgstore: fan-out entry %d: %w", seq, err)
		}
		e.Seq, e.Destination = uint64(seq), destination
		out = append(out, &e)
	}
	return out, rows.Err()
}

// QueuedConversations implements fanout.Store.
func (s *Store) QueuedConversations(ctx context.Context, destination string) (map[string]uint64, error) {
	rows, err := s.pool.Query(ctx, "SELECT conversation, entry FROM fanout_queue WHERE destination = $1", destination)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read fan-out queue: %w", err)
	}
	defer rows.Close()
	q := fanout.NewQueuedSet()
	for rows.Next() {
		var conv string
		var b []byte
		if err := rows.Scan(&conv, &b); err != nil {
			return nil, fmt.Errorf("pgstore: read fan-out queue: %w", err)
		}
		if err := q.Add(conv, b); err != nil {
			return nil, fmt.Errorf("pgstore: %w", err)
		}
	}
	return q.Map(), rows.Err()
}

// QueueDepths implements fanout.Store.
func (s *Store) QueueDepths(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, "SELECT destination, COUNT(*) FROM fanout_queue GROUP BY destination")
	if err != nil {
		return nil, fmt.Errorf("pgstore: read fan-out queue depths: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var d string
		var n int64
		if err := rows.Scan(&d, &n); err != nil {
			return nil, err
		}
		out[d] = n
	}
	return out, rows.Err()
}

// lockFanout is the second key of the fan-out's advisory lock (see the
// other uses beside lockID).
const lockFanout = 4

// FanoutLease returns the lease that the replica delivering to the fan-out
// destinations holds: one replica delivers, so that each destination sees
// each conversation in order.
func (s *Store) FanoutLease() *Lease { return s.lease(lockFanout) }
