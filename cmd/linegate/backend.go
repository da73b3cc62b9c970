package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// backend is everything serve and the CLI keep in the database: the
// ledger, the pipeline's state, switches and consent, retention and the
// data keys. The SQLite and the PostgreSQL stores implement it.
type backend interface {
	ledger.Store
	pipeline.Store
	outbound.State
	retention.Store
	keys.Store
	rules.Cooldowns
	rules.CooldownForgetter
	retention.SubjectIndexer
	handoff.Store
}

// leases is what a store that replicas share has (PostgreSQL's): one
// replica sequences the log and one dispatches records to the pipeline,
// each under its lease, and all of them claim the pipeline's work. serve
// asks the store for it; a store without (SQLite's) has one process.
type leases interface {
	pipeline.Claimer
	SequencerLease() *pgstore.Lease
	DispatchLease() *pgstore.Lease
}

var (
	_ backend = (*sqlitestore.Store)(nil)
	_ backend = (*pgstore.Store)(nil)
	_ leases  = (*pgstore.Store)(nil)
)

// isPostgres reports whether a database address names PostgreSQL.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// databaseDSN returns the config's database address: "" for the embedded
// SQLite database under data_dir.
func (c *Config) databaseDSN(getenv func(string) string) (string, error) {
	b, err := (secretSource{"database", c.Database, c.DatabaseEnv, c.DatabaseFile}).resolve(getenv, false)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	dsn := string(b)
	if dsn != "" && !isPostgres(dsn) {
		return "", fmt.Errorf("config: database: want a postgres:// address (or nothing, for SQLite under data_dir)")
	}
	return dsn, nil
}

// storeAccess says whether a command must have an SQLite data directory
// to itself, under the store's lock (see sqlitestore.Options.Shared), or
// may run beside the gateway that holds it. PostgreSQL has no such lock:
// its replicas share the database under leases.
type storeAccess int

const (
	// exclusive: serve. A second gateway on one SQLite directory would
	// sequence and sign the same log as the first. (migrate-store takes
	// the lock too, opening the store itself: a gateway writing beside
	// it would lose records in the move.)
	exclusive storeAccess = iota
	// beside: export, which only reads (verify does not even open the
	// store: sqlitestore.OpenReadOnly), and the CLI's writes that may run
	// while serve does, as the README says: purge, hold, keys rotate and
	// keys shred. Each is a
	// transaction of its own under SQLite's write lock (an append takes
	// the next index inside it; a re-wrap and a shred are compare-and-
	// swaps on the key), and none of them sequences or signs the log.
	beside
)

// openBackend opens the config's database.
func openBackend(ctx context.Context, e *env, cfg *Config, access storeAccess) (backend, error) {
	dsn, err := cfg.databaseDSN(e.getenv)
	if err != nil {
		return nil, err
	}
	if dsn != "" {
		return pgstore.Open(ctx, dsn, pgstore.Options{Keep: cfg.keep()})
	}
	return sqlitestore.Open(ctx, filepath.Join(cfg.DataDir, "ledger.db"),
		sqlitestore.Options{MaxPages: cfg.Ledger.MaxPages, Keep: cfg.keep(), Shared: access == beside})
}

// openRing returns the key ring of a config over store, once its KEKs are
// known to unwrap the store's data keys. With create (serve), a missing
// default KEK file is created where the store holds no data keys.
func openRing(ctx context.Context, e *env, cfg *Config, store keys.Store, create bool, log *slog.Logger) (*keys.Ring, error) {
	kc, err := cfg.kekConfig(e.getenv)
	if err != nil {
		return nil, err
	}
	kc.Create = kc.Create && create
	ring, created, err := keys.OpenRing(ctx, store, kc)
	if err != nil {
		return nil, fmt.Errorf("config: encryption: %w", err)
	}
	if created && log != nil {
		log.Warn("created a key encryption key beside the data: move it to a key store or a separate disk and set encryption.kek_file, or backups of the data directory carry their key",
			"kek_file", kc.CurrentFile, "kek", ring.Current())
	}
	return ring, nil
}

// openConfigStore opens the store and the key ring of a config, for the
// CLI: with access beside for the commands that run beside serve (purge,
// hold, keys rotate and shred, export), which do not take the SQLite data
// directory's lock; exclusive for those that need it to themselves.
func openConfigStore(ctx context.Context, e *env, configPath string, access storeAccess) (*Config, backend, *keys.Ring, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := openBackend(ctx, e, cfg, access)
	if err != nil {
		return nil, nil, nil, err
	}
	ring, err := openRing(ctx, e, cfg, store, false, nil)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	return cfg, store, ring, nil
}

// appendAdmin records an admin action from the CLI straight into the
// store, with its effects in the same commit; serve integrates it into
// the log.
func appendAdmin(ctx context.Context, store backend, ring ledger.Sealer, action string, detail map[string]any,
	subjects []string, effects ...ledger.Effect) (uint64, error) {
	return outbound.RecordAdmin(ctx, ledger.NewWriter(store, ring, nil), action, detail, subjects, time.Now(), effects...)
}

// evidenceSource is what the commands that write evidence bundles read:
// the config, one snapshot of the store (every proof against one tree
// head, while serve writes), the key ring and the log's verifier key.
type evidenceSource struct {
	cfg   *Config
	store backend // the live store, for what was appended since the snapshot
	view  ledger.ReadView
	ring  *keys.Ring
	vkey  []byte
}

// openEvidenceSource opens a config's store beside a running serve and
// takes a snapshot of it; close releases both.
func openEvidenceSource(ctx context.Context, e *env, configPath string) (src evidenceSource, close func(), err error) {
	cfg, store, ring, err := openConfigStore(ctx, e, configPath, beside)
	if err != nil {
		return src, nil, err
	}
	vkey, err := os.ReadFile(vkeyPath(cfg.Log.KeyFile))
	if err != nil {
		store.Close()
		return src, nil, err
	}
	view, err := store.Snapshot(ctx)
	if err != nil {
		store.Close()
		return src, nil, err
	}
	return evidenceSource{cfg: cfg, store: store, view: view, ring: ring, vkey: vkey}, func() { view.Close(); store.Close() }, nil
}
