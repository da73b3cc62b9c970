package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/ledger"
)

var _ fanout.Store = (*Store)(nil)

// applyFanout applies the fan-out queue's effects inside tx.
func (s *Store) applyFanout(ctx context.Context, tx *sql.Tx, e ledger.Effect) error {
	switch e := e.(type) {
	case fanout.Enqueue:
		for _, en := range e.Entries {
			b, err := json.Marshal(en)
			if err != nil {
				return fmt.Errorf("sqlitestore: encode fan-out entry: %w", err)
			}
			res, err := s.exec(ctx, tx, "INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES (?, ?, 0, 0, ?)",
				en.Destination, en.Conversation, b)
			if err != nil {
				return fmt.Errorf("sqlitestore: queue for destination: %w", err)
			}
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			en.Seq = uint64(id)
		}
		return nil
	case fanout.Delivered:
		res, err := s.exec(ctx, tx, "DELETE FROM fanout_queue WHERE seq = ?", e.Seq)
		if err != nil {
			return fmt.Errorf("sqlitestore: dequeue delivered event: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("sqlitestore: fan-out entry %d is not queued: %w", e.Seq, ledger.ErrConflict)
		}
		return nil
	case fanout.Retry:
		res, err := s.exec(ctx, tx, "UPDATE fanout_queue SET attempts = ?, next_ms = ? WHERE seq = ?", e.Attempts, e.NextMs, e.Seq)
		if err != nil {
			return fmt.Errorf("sqlitestore: schedule retry: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("sqlitestore: fan-out entry %d is not queued: %w", e.Seq, ledger.ErrConflict)
		}
		return nil
	}
	return fmt.Errorf("sqlitestore: %s: %w", e.EffectName(), ledger.ErrUnsupportedEffect)
}

// Heads implements fanout.Store.
func (s *Store) Heads(ctx context.Context, destination string, limit int) ([]*fanout.Entry, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT seq, conversation, attempts, next_ms, entry FROM fanout_queue WHERE destination = ? ORDER BY seq LIMIT ?",
		destination, fanout.HeadsWindow)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
	}
	defer rows.Close()
	var out []*fanout.Entry
	seen := map[string]bool{}
	for rows.Next() {
		var e fanout.Entry
		var b []byte
		if err := rows.Scan(&e.Seq, &e.Conversation, &e.Attempts, &e.NextMs, &b); err != nil {
			return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
		}
		e.Destination = destination
		if seen[e.Conversation] || len(out) >= limit {
			continue // decoded only for a head
		}
		seen[e.Conversation] = true
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("sqlitestore: fan-out entry %d: %w", e.Seq, err)
		}
		out = append(out, &e)
	}
	return out, rows.Err()
}

// QueueDepths implements fanout.Store.
func (s *Store) QueueDepths(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT destination, COUNT(*) FROM fanout_queue GROUP BY destination")
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read fan-out queue depths: %w", err)
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
