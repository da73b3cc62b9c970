package pgstore

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease is a session advisory lock held on a connection of its own.
// PostgreSQL releases it when that connection ends: the holder's process
// exits or is killed, or its network goes away (then after the server's TCP
// keepalive notices; see the deployment guide). It implements
// ledger.Lease and pipeline's lease.
type Lease struct {
	cfg *pgx.ConnConfig
	key int64

	mu   sync.Mutex
	conn *pgx.Conn
	held bool
}

// SequencerLease returns the lease that the replica integrating the log
// holds.
func (s *Store) SequencerLease() *Lease { return s.lease(lockSequencer) }

// DispatchLease returns the lease that the replica dispatching webhook
// records to the pipeline's queue holds.
func (s *Store) DispatchLease() *Lease { return s.lease(lockDispatch) }

func (s *Store) lease(key int64) *Lease {
	return &Lease{cfg: s.pool.Config().ConnConfig.Copy(), key: key}
}

// Held reports whether this process holds the lease, taking it if it is
// free. A holder checks its connection each time: a lease whose
// connection broke is lost (the server has released the lock).
func (l *Lease) Held(ctx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if l.conn != nil && l.held {
		if err := l.conn.Ping(ctx); err == nil {
			return true
		}
		l.drop()
	}
	if l.conn == nil {
		c, err := pgx.ConnectConfig(ctx, l.cfg)
		if err != nil {
			return false
		}
		l.conn = c
	}
	var ok bool
	if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock("+lockID+", $1)", int32(l.key)).Scan(&ok); err != nil {
		l.drop()
		return false
	}
	l.held = ok
	return ok
}

func (l *Lease) drop() {
	if l.conn != nil {
		l.conn.Close(context.Background())
	}
	l.conn, l.held = nil, false
}

// Holding reports whether this process held the lease at the last Held,
// without asking the database.
func (l *Lease) Holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Release gives the lease up: it unlocks, so that another process can
// take the lease at once, then closes its connection. (Closing alone would
// release it too, but only once the server has noticed, a moment later.)
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil && l.held {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var ok bool
		l.conn.QueryRow(ctx, "SELECT pg_advisory_unlock("+lockID+", $1)", int32(l.key)).Scan(&ok)
		cancel()
	}
	l.drop()
}
