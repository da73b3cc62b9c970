package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func runMigrateStore(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "migrate-store", "-from sqlite:PATH -to postgres://...")
	from := fs.String("from", "", "the SQLite database to move: sqlite:PATH (data_dir/ledger.db)")
	to := fs.String("to", "", "the PostgreSQL database to move it to (empty, or never written)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path, ok := strings.CutPrefix(*from, "sqlite:")
	if !ok || path == "" || !isPostgres(*to) {
		return fmt.Errorf("%w: want -from sqlite:PATH -to postgres://HOST/DB", errUsage)
	}
	if _, err := os.Stat(path); err != nil {
		return err
	}
	n, err := migrateStore(ctx, path, *to)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "moved %d records, their tiles, checkpoints, pipeline state, settings, consent, holds and data keys to PostgreSQL; point the config's database at it and run linegate verify\n", n)
	return nil
}

// migrateStore copies an SQLite installation into an empty PostgreSQL
// database, in one PostgreSQL transaction (pgstore.Store.Import). The
// gateway must be stopped while it runs.
func migrateStore(ctx context.Context, path, dsn string) (uint64, error) {
	// Opening the SQLite store brings its schema up to date first. It
	// stays open to the end for its lock on the data directory: a gateway
	// running on it is named and refused, and none starts while the
	// records move (what it wrote would not be moved).
	src, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := pgstore.Open(ctx, dsn, pgstore.Options{}) // creates the schema
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	return dst.Import(ctx, src.ReadDB())
}
