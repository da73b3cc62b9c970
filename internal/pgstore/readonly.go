package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/linegate/linegate/internal/ledger"
)

// ReadOnly is a database opened to be read and nothing else (linegate
// verify): it never migrates, and its sessions are read-only
// (default_transaction_read_only), so that not even a mistake writes. Its
// views are snapshots (Snapshot), which also read the data keys.
type ReadOnly struct {
	pool *pgxpool.Pool
}

var _ ledger.Snapshotter = (*ReadOnly)(nil)

// OpenReadOnly connects to the database at dsn to read it. It refuses a
// database of any other schema version than this code's, older or newer,
// naming both: it does not migrate.
func OpenReadOnly(ctx context.Context, dsn string) (*ReadOnly, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", redact(err))
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", redact(err))
	}
	r := &ReadOnly{pool: pool}
	if err := r.checkVersion(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

// ErrNoLedger is returned by OpenReadOnly for a database that holds no
// linegate ledger yet (no gateway has started on it).
var ErrNoLedger = errors.New("pgstore: the database holds no linegate ledger (no schema version)")

// checkVersion refuses a database of another schema than this code's.
func (r *ReadOnly) checkVersion(ctx context.Context) error {
	var v int
	err := r.pool.QueryRow(ctx, "SELECT version FROM schema_version WHERE id = 0").Scan(&v)
	var pe *pgconn.PgError
	if errors.Is(err, pgx.ErrNoRows) || errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return ErrNoLedger
	}
	if err != nil {
		return fmt.Errorf("pgstore: read schema version: %w", err)
	}
	switch {
	case v == schemaVersion:
		return nil
	case v > schemaVersion:
		return fmt.Errorf("pgstore: database schema version %d is newer than this linegate's (%d): read it with a linegate as new as the one that wrote it", v, schemaVersion)
	default:
		return fmt.Errorf("pgstore: database schema version %d is older than this linegate's (%d), and a read-only open does not migrate: read it with the linegate that wrote it", v, schemaVersion)
	}
}

// Snapshot returns a view of the database as it is now; it is a *View.
func (r *ReadOnly) Snapshot(ctx context.Context) (ledger.ReadView, error) {
	return snapshot(ctx, r.pool)
}

// Close closes the connection pool.
func (r *ReadOnly) Close() error {
	r.pool.Close()
	return nil
}
