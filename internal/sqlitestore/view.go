package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"strings"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

// querier is what the reads of the log need: the store's pool of readers,
// or the transaction of a view.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader reads the log and the data keys through q.
type reader struct{ q querier }

// View is a ledger.ReadView on SQLite: one read transaction, on a
// connection it holds until Close. Under WAL a read transaction sees the
// database as of its first read, however many commits follow, so every
// method of a View answers from the same moment. It also reads the data
// keys of that moment (SubjectKeys), for a key ring that opens the view's
// payloads: a key destroyed since, with its payloads, still opens them.
type View struct {
	reader
	tx *sql.Tx
	// done, if set, runs at Close: a read-only handle's check that the
	// file it read without locks did not change meanwhile.
	done func() error
}

var _ ledger.ReadView = (*View)(nil)

// Snapshot implements ledger.Store.
func (s *Store) Snapshot(ctx context.Context) (ledger.ReadView, error) {
	return snapshot(ctx, s.r, nil)
}

// snapshot begins a read transaction on a connection of db.
func snapshot(ctx context.Context, db *sql.DB, done func() error) (*View, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: snapshot: %w", err)
	}
	// BEGIN is deferred: the snapshot is taken at the first read. Read
	// now, so that the view is of this moment and not of its first use.
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM tree_head").Scan(&n); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("sqlitestore: snapshot: %w", err)
	}
	return &View{reader: reader{tx}, tx: tx, done: done}, nil
}

// Close ends the view's read transaction and gives its connection back.
func (v *View) Close() error {
	err := v.tx.Rollback()
	if errors.Is(err, sql.ErrTxDone) {
		err = nil // ended with the context given to Snapshot
	}
	if v.done != nil {
		err = errors.Join(err, v.done())
	}
	return err
}

// The reads below are those of ledger.ReadView, and the Store's own.

// Count returns the number of records.
func (r reader) Count(ctx context.Context) (uint64, error) {
	var n uint64
	if err := r.q.QueryRowContext(ctx, "SELECT COALESCE(MAX(idx)+1, 0) FROM records").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlitestore: count: %w", err)
	}
	return n, nil
}

// ReadLeaves returns the leaves of records [start, end).
func (r reader) ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error) {
	rows, err := r.q.QueryContext(ctx, "SELECT idx, leaf FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", start, end)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read leaves: %w", err)
	}
	defer rows.Close()
	leaves := make([][]byte, 0, end-start)
	for rows.Next() {
		var idx uint64
		var leaf []byte
		if err := rows.Scan(&idx, &leaf); err != nil {
			return nil, fmt.Errorf("sqlitestore: read leaves: %w", err)
		}
		if idx != start+uint64(len(leaves)) {
			return nil, fmt.Errorf("sqlitestore: leaf %d: %w", start+uint64(len(leaves)), ledger.ErrNotFound)
		}
		leaves = append(leaves, leaf)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: read leaves: %w", err)
	}
	if uint64(len(leaves)) != end-start {
		return nil, fmt.Errorf("sqlitestore: leaf %d: %w", start+uint64(len(leaves)), ledger.ErrNotFound)
	}
	return leaves, nil
}

// Records iterates over the records [start, end), gaps named.
func (r reader) Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error] {
	return func(yield func(ledger.Record, error) bool) {
		rows, err := r.q.QueryContext(ctx, "SELECT idx, leaf, nonce, payload, keys FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", start, end)
		if err != nil {
			yield(ledger.Record{}, fmt.Errorf("sqlitestore: read records: %w", err))
			return
		}
		defer rows.Close()
		next := start
		for rows.Next() {
			var r ledger.Record
			var keys sql.NullString
			if err := rows.Scan(&r.Index, &r.Leaf, &r.Nonce, &r.Payload, &keys); err != nil {
				yield(ledger.Record{}, fmt.Errorf("sqlitestore: read records: %w", err))
				return
			}
			if keys.Valid {
				if r.Keys, err = ledger.ParseKeys(keys.String); err != nil {
					yield(ledger.Record{}, fmt.Errorf("sqlitestore: record %d: %w", r.Index, err))
					return
				}
			}
			for ; next < r.Index; next++ {
				if !yield(ledger.Record{Index: next}, nil) {
					return
				}
			}
			next = r.Index + 1
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(ledger.Record{}, fmt.Errorf("sqlitestore: read records: %w", err))
			return
		}
		for ; next < end; next++ {
			if !yield(ledger.Record{Index: next}, nil) {
				return
			}
		}
	}
}

// TreeHead returns the tree head.
func (r reader) TreeHead(ctx context.Context) (ledger.TreeHead, error) {
	var h ledger.TreeHead
	var hash []byte
	err := r.q.QueryRowContext(ctx, "SELECT size, hash, checkpoint FROM tree_head WHERE id = 0").Scan(&h.Size, &hash, &h.Checkpoint)
	if err != nil {
		return h, fmt.Errorf("sqlitestore: read tree head: %w", err)
	}
	if len(hash) != len(h.Hash) {
		return h, errors.New("sqlitestore: tree head hash has the wrong length")
	}
	copy(h.Hash[:], hash)
	return h, nil
}

// ReadTile returns the data of tile (level, index).
func (r reader) ReadTile(ctx context.Context, level, index uint64) ([]byte, error) {
	var data []byte
	err := r.q.QueryRowContext(ctx, "SELECT data FROM tiles WHERE level = ? AND idx = ?", level, index).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlitestore: tile %d/%d: %w", level, index, ledger.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read tile: %w", err)
	}
	return data, nil
}

// Checkpoints iterates over the stored checkpoints by tree size.
func (r reader) Checkpoints(ctx context.Context) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		rows, err := r.q.QueryContext(ctx, "SELECT checkpoint FROM checkpoints ORDER BY size, seq")
		if err != nil {
			yield(nil, fmt.Errorf("sqlitestore: read checkpoints: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var cp []byte
			if err := rows.Scan(&cp); err != nil {
				yield(nil, fmt.Errorf("sqlitestore: read checkpoints: %w", err))
				return
			}
			if !yield(cp, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(nil, fmt.Errorf("sqlitestore: read checkpoints: %w", err))
		}
	}
}

// SubjectKeys returns the stored data keys of those subjects that have
// one, as keys.Store's method does.
func (r reader) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	var out []keys.Wrapped
	for start := 0; start < len(subjects); start += 500 {
		chunk := subjects[start:min(len(subjects), start+500)]
		args := make([]any, len(chunk))
		for i, x := range chunk {
			args[i] = x
		}
		rows, err := r.q.QueryContext(ctx, "SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject IN (?"+strings.Repeat(", ?", len(chunk)-1)+")", args...)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: read data keys: %w", err)
		}
		out, err = scanKeys(rows, out)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// KEKSamples returns one stored data key of each KEK that wraps any, as
// keys.Store's method does.
func (r reader) KEKSamples(ctx context.Context) ([]keys.Wrapped, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT subject, id, kek, wrapped, created_ms FROM subject_keys
		WHERE rowid IN (SELECT MIN(rowid) FROM subject_keys GROUP BY kek)`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read data keys: %w", err)
	}
	return scanKeys(rows, nil)
}
