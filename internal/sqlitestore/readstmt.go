package sqlitestore

import (
	"context"
	"database/sql"
	"sync"
)

// readStmts is a querier on the readers' pool that keeps its queries
// prepared. SQLite parses a statement at every prepare, and the driver
// prepares every query it is not given prepared: the pipeline's reads of
// a conversation and of its cursor, at every event, spent more on parsing
// than on reading. A statement prepared on the pool is prepared again on
// each connection it runs on, once (database/sql keeps it there).
// Queries built with a varying number of arguments could be many: past
// maxStmts, a query runs unprepared.
type readStmts struct {
	db     *sql.DB
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool
}

func (r *readStmts) stmt(ctx context.Context, q string) *sql.Stmt {
	r.mu.Lock()
	st, full := r.stmts[q], len(r.stmts) >= maxStmts
	r.mu.Unlock()
	if st != nil || full {
		return st
	}
	// Prepared without the lock: it may wait for a free connection, and
	// the other readers must not wait for it.
	st, err := r.db.PrepareContext(ctx, q)
	if err != nil {
		return nil // run unprepared, which reports the error
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if kept := r.stmts[q]; kept != nil || r.closed {
		st.Close() // another reader's came first, or the store closed
		return kept
	}
	if r.stmts == nil {
		r.stmts = map[string]*sql.Stmt{}
	}
	r.stmts[q] = st
	return st
}

// QueryContext is sql.DB's, with q prepared once.
func (r *readStmts) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := r.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return r.db.QueryContext(ctx, q, args...)
}

// QueryRowContext is sql.DB's, with q prepared once.
func (r *readStmts) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := r.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return r.db.QueryRowContext(ctx, q, args...)
}

func (r *readStmts) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.stmts {
		st.Close()
	}
	r.stmts, r.closed = nil, true
}
