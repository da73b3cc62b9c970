package pgstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

// querier is what the reads of the log need: the store's pool, or the
// transaction of a view.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// reader reads the log and the data keys through q. A view's reader has
// mu: its transaction is one connection, which runs one query at a time,
// and Verify reads tiles while it iterates over records.
type reader struct {
	q  querier
	mu *sync.Mutex
}

// lock serializes the reader's queries, if it must; call the function
// it returns to unlock.
func (r reader) lock() func() {
	if r.mu == nil {
		return func() {}
	}
	r.mu.Lock()
	return r.mu.Unlock
}

// View is a ledger.ReadView on PostgreSQL: one REPEATABLE READ, READ ONLY
// transaction, whose every query sees the database as of the first, so
// that the tree head, tiles, records and checkpoints all agree however
// many replicas write meanwhile. It also reads the data keys of that
// moment (SubjectKeys), for a key ring that opens the view's payloads.
// The transaction holds a connection, and back vacuum, until Close.
type View struct {
	reader
	tx pgx.Tx
}

var _ ledger.ReadView = (*View)(nil)

// Snapshot implements ledger.Store.
func (s *Store) Snapshot(ctx context.Context) (ledger.ReadView, error) {
	return snapshot(ctx, s.pool)
}

func snapshot(ctx context.Context, pool *pgxpool.Pool) (*View, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("pgstore: snapshot: %w", err)
	}
	// The snapshot is taken at the transaction's first query: now.
	var n int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM tree_head").Scan(&n); err != nil {
		tx.Rollback(ctx)
		return nil, fmt.Errorf("pgstore: snapshot: %w", err)
	}
	return &View{reader: reader{q: tx, mu: new(sync.Mutex)}, tx: tx}, nil
}

// Close ends the view's transaction.
func (v *View) Close() error {
	defer v.lock()()
	if err := v.tx.Rollback(context.Background()); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("pgstore: end snapshot: %w", err)
	}
	return nil
}

// The reads below are those of ledger.ReadView, and the Store's own.

// Count returns the number of records appended.
func (r reader) Count(ctx context.Context) (uint64, error) {
	defer r.lock()()
	var n int64
	if err := r.q.QueryRow(ctx, "SELECT next FROM log_state WHERE id = 0").Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: count: %w", err)
	}
	return uint64(n), nil
}

// ReadLeaves returns the leaves of records [start, end).
func (r reader) ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error) {
	defer r.lock()()
	rows, err := r.q.Query(ctx, "SELECT idx, leaf FROM records WHERE idx >= $1 AND idx < $2 ORDER BY idx", int64(start), int64(end))
	if err != nil {
		return nil, fmt.Errorf("pgstore: read leaves: %w", err)
	}
	defer rows.Close()
	leaves := make([][]byte, 0, end-start)
	for rows.Next() {
		var idx int64
		var leaf []byte
		if err := rows.Scan(&idx, &leaf); err != nil {
			return nil, fmt.Errorf("pgstore: read leaves: %w", err)
		}
		if uint64(idx) != start+uint64(len(leaves)) {
			return nil, fmt.Errorf("pgstore: leaf %d: %w", start+uint64(len(leaves)), ledger.ErrNotFound)
		}
		leaves = append(leaves, leaf)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read leaves: %w", err)
	}
	if uint64(len(leaves)) != end-start {
		return nil, fmt.Errorf("pgstore: leaf %d: %w", start+uint64(len(leaves)), ledger.ErrNotFound)
	}
	return leaves, nil
}

// Records iterates over the records [start, end), gaps named. It reads
// in pages: a view's pages all come from its one snapshot.
func (r reader) Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error] {
	return func(yield func(ledger.Record, error) bool) {
		for lo := start; lo < end; lo += 2048 {
			hi := min(end, lo+2048)
			page, err := r.recordPage(ctx, lo, hi)
			if err != nil {
				yield(ledger.Record{}, err)
				return
			}
			next := lo
			for _, rec := range page {
				for ; next < rec.Index; next++ {
					if !yield(ledger.Record{Index: next}, nil) {
						return
					}
				}
				next = rec.Index + 1
				if !yield(rec, nil) {
					return
				}
			}
			for ; next < hi; next++ {
				if !yield(ledger.Record{Index: next}, nil) {
					return
				}
			}
		}
	}
}

func (r reader) recordPage(ctx context.Context, start, end uint64) ([]ledger.Record, error) {
	defer r.lock()()
	rows, err := r.q.Query(ctx, "SELECT idx, leaf, nonce, payload, keys FROM records WHERE idx >= $1 AND idx < $2 ORDER BY idx", int64(start), int64(end))
	if err != nil {
		return nil, fmt.Errorf("pgstore: read records: %w", err)
	}
	defer rows.Close()
	var out []ledger.Record
	for rows.Next() {
		var rec ledger.Record
		var idx int64
		var keys *string
		if err := rows.Scan(&idx, &rec.Leaf, &rec.Nonce, &rec.Payload, &keys); err != nil {
			return nil, fmt.Errorf("pgstore: read records: %w", err)
		}
		rec.Index = uint64(idx)
		if keys != nil {
			if rec.Keys, err = ledger.ParseKeys(*keys); err != nil {
				return nil, fmt.Errorf("pgstore: record %d: %w", idx, err)
			}
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read records: %w", err)
	}
	return out, nil
}

// TreeHead returns the tree head.
func (r reader) TreeHead(ctx context.Context) (ledger.TreeHead, error) {
	defer r.lock()()
	var h ledger.TreeHead
	var size int64
	var hash []byte
	if err := r.q.QueryRow(ctx, "SELECT size, hash, checkpoint FROM tree_head WHERE id = 0").Scan(&size, &hash, &h.Checkpoint); err != nil {
		return h, fmt.Errorf("pgstore: read tree head: %w", err)
	}
	if len(hash) != len(h.Hash) {
		return h, errors.New("pgstore: tree head hash has the wrong length")
	}
	h.Size = uint64(size)
	copy(h.Hash[:], hash)
	return h, nil
}

// ReadTile returns the data of tile (level, index).
func (r reader) ReadTile(ctx context.Context, level, index uint64) ([]byte, error) {
	defer r.lock()()
	var data []byte
	err := r.q.QueryRow(ctx, "SELECT data FROM tiles WHERE level = $1 AND idx = $2", int64(level), int64(index)).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgstore: tile %d/%d: %w", level, index, ledger.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read tile: %w", err)
	}
	return data, nil
}

// Checkpoints iterates over the stored checkpoints by tree size. It reads
// them all before yielding the first, so that the caller may query while
// it iterates.
func (r reader) Checkpoints(ctx context.Context) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		all, err := r.checkpoints(ctx)
		if err != nil {
			yield(nil, err)
			return
		}
		for _, cp := range all {
			if !yield(cp, nil) {
				return
			}
		}
	}
}

func (r reader) checkpoints(ctx context.Context) ([][]byte, error) {
	defer r.lock()()
	rows, err := r.q.Query(ctx, "SELECT checkpoint FROM checkpoints ORDER BY size, seq")
	if err != nil {
		return nil, fmt.Errorf("pgstore: read checkpoints: %w", err)
	}
	defer rows.Close()
	var all [][]byte
	for rows.Next() {
		var cp []byte
		if err := rows.Scan(&cp); err != nil {
			return nil, fmt.Errorf("pgstore: read checkpoints: %w", err)
		}
		all = append(all, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read checkpoints: %w", err)
	}
	return all, nil
}

// SubjectKeys returns the stored data keys of those subjects that have
// one, as keys.Store's method does.
func (r reader) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	defer r.lock()()
	rows, err := r.q.Query(ctx, "SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject = ANY($1)", subjects)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read data keys: %w", err)
	}
	return scanKeys(rows)
}

// KEKSamples returns one stored data key of each KEK that wraps any, as
// keys.Store's method does.
func (r reader) KEKSamples(ctx context.Context) ([]keys.Wrapped, error) {
	defer r.lock()()
	rows, err := r.q.Query(ctx, `SELECT DISTINCT ON (kek) subject, id, kek, wrapped, created_ms FROM subject_keys ORDER BY kek, subject`)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read data keys: %w", err)
	}
	return scanKeys(rows)
}
