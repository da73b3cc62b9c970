package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/ledger"
)

var _ fanout.Store = (*Store)(nil)

// applyFanout applies the fan-out queue's effects inside tx.
func (s *Store) applyFanout(ctx context.Context, tx *sql.Tx, e ledger.Effect) error {
	switch e := e.(type) {
	case fanout.Enqueue:
		// One statement per chunk of entries: an outcome commit queues
		// each of its events for each destination that takes it.
		for start := 0; start < len(e.Entries); start += enqueueChunk {
			if err := s.enqueueFanout(ctx, tx, e.Entries[start:min(len(e.Entries), start+enqueueChunk)]); err != nil {
				return err
			}
		}
		return nil
	case fanout.Delivered:
		// One statement per 500 entries: a request's entries leave in one.
		for start := 0; start < len(e.Seqs); start += 500 {
			chunk := e.Seqs[start:min(len(e.Seqs), start+500)]
			args := make([]any, len(chunk))
			for i, seq := range chunk {
				args[i] = seq
			}
			res, err := s.exec(ctx, tx, "DELETE FROM fanout_queue WHERE seq IN (?"+strings.Repeat(", ?", len(chunk)-1)+")", args...)
			if err != nil {
				return fmt.Errorf("sqlitestore: dequeue delivered events: %w", err)
			}
			if n, _ := res.RowsAffected(); n != int64(len(chunk)) {
				return fmt.Errorf("sqlitestore: %d of %d fan-out entries are not queued: %w", int64(len(chunk))-n, len(chunk), ledger.ErrConflict)
			}
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

// enqueueChunk bounds the entries one INSERT statement queues (at most
// enqueueChunk statements are kept prepared, one per size).
const enqueueChunk = 32

// enqueueFanout queues entries in one statement and gives each its Seq.
func (s *Store) enqueueFanout(ctx context.Context, tx *sql.Tx, entries []*fanout.Entry) error {
	args := make([]any, 0, 5*len(entries))
	for _, en := range entries {
		b, err := json.Marshal(en)
		if err != nil {
			return fmt.Errorf("sqlitestore: encode fan-out entry: %w", err)
		}
		args = append(args, en.Destination, en.Conversation, en.Attempts, en.NextMs, b)
	}
	st, err := s.stmt(ctx, tx, "INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES (?, ?, ?, ?, ?)"+
		strings.Repeat(", (?, ?, ?, ?, ?)", len(entries)-1)+" RETURNING seq")
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("sqlitestore: queue for destinations: %w", err)
	}
	defer rows.Close()
	var seqs []uint64
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return fmt.Errorf("sqlitestore: queue for destinations: %w", err)
		}
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlitestore: queue for destinations: %w", err)
	}
	if len(seqs) != len(entries) {
		return fmt.Errorf("sqlitestore: queue for destinations: %d seqs for %d entries", len(seqs), len(entries))
	}
	// The rows are inserted in the order of VALUES, each with a larger
	// seq (AUTOINCREMENT); RETURNING gives them in an order SQLite does
	// not promise.
	slices.Sort(seqs)
	for i, en := range entries {
		en.Seq = seqs[i]
	}
	return nil
}

// Heads implements fanout.Store: the conversations from fanout_heads,
// due ones first, each part in the order of its index fanout_heads_order
// (next try, then seq), then each one's first entries from fanout_queue,
// one statement.
func (s *Store) Heads(ctx context.Context, destination string, nowMs int64, conversations, perConversation int) ([]*fanout.Entry, error) {
	rows, err := s.rq.QueryContext(ctx, `WITH h AS (
			SELECT conversation FROM (SELECT conversation FROM fanout_heads WHERE destination = ?1 AND next_ms <= ?2 ORDER BY next_ms, seq LIMIT ?3)
			UNION ALL
			SELECT conversation FROM (SELECT conversation FROM fanout_heads WHERE destination = ?1 AND next_ms > ?2 ORDER BY next_ms, seq LIMIT ?3)
			LIMIT ?3)
		SELECT q.seq, q.conversation, q.attempts, q.next_ms, q.entry FROM h JOIN fanout_queue q ON q.seq IN
			(SELECT seq FROM fanout_queue WHERE destination = ?1 AND conversation = h.conversation ORDER BY seq LIMIT ?4)
		ORDER BY q.seq`, destination, nowMs, conversations, perConversation)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
	}
	defer rows.Close()
	var out []*fanout.Entry
	for rows.Next() {
		var e fanout.Entry
		var b []byte
		if err := rows.Scan(&e.Seq, &e.Conversation, &e.Attempts, &e.NextMs, &b); err != nil {
			return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
		}
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("sqlitestore: fan-out entry %d: %w", e.Seq, err)
		}
		e.Destination = destination
		out = append(out, &e)
	}
	return out, rows.Err()
}

// QueuedConversations implements fanout.Store.
func (s *Store) QueuedConversations(ctx context.Context, destination string) (map[string]uint64, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT conversation, entry FROM fanout_queue WHERE destination = ?", destination)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
	}
	defer rows.Close()
	q := fanout.NewQueuedSet()
	for rows.Next() {
		var conv string
		var b []byte
		if err := rows.Scan(&conv, &b); err != nil {
			return nil, fmt.Errorf("sqlitestore: read fan-out queue: %w", err)
		}
		if err := q.Add(conv, b); err != nil {
			return nil, fmt.Errorf("sqlitestore: %w", err)
		}
	}
	return q.Map(), rows.Err()
}

// QueueDepths implements fanout.Store.
func (s *Store) QueueDepths(ctx context.Context) (map[string]int64, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT destination, COUNT(*) FROM fanout_queue GROUP BY destination")
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
