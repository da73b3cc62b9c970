package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pipeline"
)

var _ pipeline.Store = (*Store)(nil)

// Cursor implements pipeline.Store.
func (s *Store) Cursor(ctx context.Context) (uint64, error) {
	var n uint64
	if err := s.rq.QueryRowContext(ctx, "SELECT next FROM pipeline_cursor WHERE id = 0").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlitestore: read cursor: %w", err)
	}
	return n, nil
}

// Enqueue implements pipeline.Store, as the effect pipeline.Enqueue
// applied alone.
func (s *Store) Enqueue(ctx context.Context, next uint64, items []*pipeline.Item, now time.Time) error {
	_, err := s.Append(ctx, nil, pipeline.Enqueue{Next: next, Items: items, Now: now})
	return err
}

// enqueue applies pipeline.Enqueue inside tx.
func (s *Store) enqueue(ctx context.Context, tx *sql.Tx, e pipeline.Enqueue) error {
	res, err := s.exec(ctx, tx, "UPDATE pipeline_cursor SET next = ? WHERE id = 0 AND next < ?", e.Next, e.Next)
	if err != nil {
		return fmt.Errorf("sqlitestore: move cursor: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ledger.ErrConflict
	}
	ms := e.Now.UnixMilli()
	claimStmt, err := s.stmt(ctx, tx, "INSERT OR IGNORE INTO dedup (key, first_ms) VALUES (?, ?)")
	if err != nil {
		return err
	}
	seenStmt, err := s.stmt(ctx, tx, "SELECT EXISTS (SELECT 1 FROM dedup WHERE key = ?)")
	if err != nil {
		return err
	}
	queueStmt, err := s.stmt(ctx, tx, "INSERT INTO queue (item) VALUES (?)")
	if err != nil {
		return err
	}
	claim := func(key string) (bool, error) {
		res, err := claimStmt.ExecContext(ctx, key, ms)
		if err != nil {
			return false, fmt.Errorf("sqlitestore: dedup: %w", err)
		}
		n, err := res.RowsAffected()
		return n == 1, err
	}
	seen := func(key string) (bool, error) {
		var found bool
		if err := seenStmt.QueryRowContext(ctx, key).Scan(&found); err != nil {
			return false, fmt.Errorf("sqlitestore: dedup: %w", err)
		}
		return found, nil
	}
	for _, it := range e.Items {
		if err := it.Dedup(claim, seen); err != nil {
			return err
		}
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		res, err := queueStmt.ExecContext(ctx, b)
		if err != nil {
			return fmt.Errorf("sqlitestore: queue: %w", err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return err
		}
		it.Seq = uint64(seq)
	}
	return nil
}

// Pending implements pipeline.Store.
func (s *Store) Pending(ctx context.Context, after uint64, limit int) ([]*pipeline.Item, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT seq, item FROM queue WHERE seq > ? ORDER BY seq LIMIT ?", after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read queue: %w", err)
	}
	defer rows.Close()
	var out []*pipeline.Item
	for rows.Next() {
		var seq uint64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			return nil, fmt.Errorf("sqlitestore: read queue: %w", err)
		}
		it := &pipeline.Item{}
		if err := json.Unmarshal(b, it); err != nil {
			return nil, fmt.Errorf("sqlitestore: queue item %d: %w", seq, err)
		}
		it.Seq = seq
		out = append(out, it)
	}
	return out, rows.Err()
}

// dequeue applies pipeline.Dequeue inside tx.
func (s *Store) dequeue(ctx context.Context, tx *sql.Tx, seqs []uint64) error {
	for start := 0; start < len(seqs); start += 500 {
		chunk := seqs[start:min(len(seqs), start+500)]
		args := make([]any, len(chunk))
		for i, seq := range chunk {
			args[i] = seq
		}
		q := "DELETE FROM queue WHERE seq IN (?" + strings.Repeat(", ?", len(chunk)-1) + ")"
		if _, err := s.exec(ctx, tx, q, args...); err != nil {
			return fmt.Errorf("sqlitestore: dequeue: %w", err)
		}
	}
	return nil
}

// ForgetKeys implements pipeline.Store.
func (s *Store) ForgetKeys(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, "DELETE FROM dedup WHERE first_ms < ?", before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: forget keys: %w", err)
	}
	return res.RowsAffected()
}

// QueueDepth implements pipeline.Store.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	err := s.rq.QueryRowContext(ctx, "SELECT COUNT(*) FROM queue").Scan(&n)
	return n, err
}
