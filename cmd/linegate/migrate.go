package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// migrateTables are the tables copied from SQLite to PostgreSQL, with
// their columns (the same names in both schemas). The index of records by
// subject is not copied: the new store rebuilds it from the records.
var migrateTables = []struct {
	name string
	cols []string
}{
	{"records", []string{"idx", "leaf", "nonce", "payload", "delete_after_ms", "keys"}},
	{"tiles", []string{"level", "idx", "data"}},
	{"checkpoints", []string{"seq", "size", "checkpoint"}},
	{"dedup", []string{"key", "first_ms"}},
	{"queue", []string{"seq", "item"}},
	{"settings", []string{"key", "value", "updated_ms"}},
	{"consent", []string{"channel", "user", "opt_in", "at_ms", "source"}},
	{"holds", []string{"id", "channel", "subject", "from_ms", "to_ms", "reason", "created_ms", "released_ms"}},
	{"subject_keys", []string{"subject", "id", "kek", "wrapped", "created_ms"}},
}

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
// database, in one PostgreSQL transaction: the log is the same (same
// leaves, tiles, tree head and checkpoint history), and so is the state
// around it. The gateway must be stopped while it runs.
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
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_pragma=query_only(ON)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	dst, err := pgstore.Open(ctx, dsn, pgstore.Options{}) // creates the schema
	if err != nil {
		return 0, err
	}
	dst.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("migrate-store: connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)

	var count uint64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var next, size int64
		if err := tx.QueryRow(ctx, "SELECT next FROM log_state WHERE id = 0 FOR UPDATE").Scan(&next); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT size FROM tree_head WHERE id = 0").Scan(&size); err != nil {
			return err
		}
		if next != 0 || size != 0 {
			return errors.New("migrate-store: the PostgreSQL database already holds a ledger; give an empty one")
		}
		// The rows made by the empty store's first start (none yet, but
		// a gateway may have been started on it) are replaced.
		for _, t := range []string{"checkpoints", "settings", "queue", "dedup", "consent", "holds", "subject_keys"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+t); err != nil {
				return err
			}
		}
		for _, t := range migrateTables {
			n, err := copyTable(ctx, db, tx, t.name, t.cols)
			if err != nil {
				return fmt.Errorf("migrate-store: %s: %w", t.name, err)
			}
			if t.name == "records" {
				count = n
			}
		}
		var head struct {
			size     int64
			hash, cp []byte
			cursor   int64
			maxIdx   sql.NullInt64
		}
		if err := db.QueryRowContext(ctx, "SELECT size, hash, checkpoint FROM tree_head WHERE id = 0").Scan(&head.size, &head.hash, &head.cp); err != nil {
			return err
		}
		if err := db.QueryRowContext(ctx, "SELECT next FROM pipeline_cursor WHERE id = 0").Scan(&head.cursor); err != nil {
			return err
		}
		if err := db.QueryRowContext(ctx, "SELECT MAX(idx) FROM records").Scan(&head.maxIdx); err != nil {
			return err
		}
		nextIdx := int64(0)
		if head.maxIdx.Valid {
			nextIdx = head.maxIdx.Int64 + 1
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"UPDATE tree_head SET size = $1, hash = $2, checkpoint = $3 WHERE id = 0", []any{head.size, head.hash, head.cp}},
			{"UPDATE log_state SET next = $1 WHERE id = 0", []any{nextIdx}},
			{"UPDATE pipeline_cursor SET next = $1 WHERE id = 0", []any{head.cursor}},
			{"UPDATE subject_index_cursor SET next = 0 WHERE id = 0", nil},
			{"SELECT setval(pg_get_serial_sequence('checkpoints', 'seq'), COALESCE((SELECT MAX(seq) FROM checkpoints), 0) + 1, false)", nil},
			{"SELECT setval(pg_get_serial_sequence('queue', 'seq'), COALESCE((SELECT MAX(seq) FROM queue), 0) + 1, false)", nil},
			{"SELECT setval(pg_get_serial_sequence('holds', 'id'), COALESCE((SELECT MAX(id) FROM holds), 0) + 1, false)", nil},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return fmt.Errorf("migrate-store: %w", err)
			}
		}
		return nil
	})
	return count, err
}

// copyTable streams one table's rows with COPY.
func copyTable(ctx context.Context, db *sql.DB, tx pgx.Tx, table string, cols []string) (uint64, error) {
	rows, err := db.QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	dstCols := cols
	if table == "queue" {
		dstCols = append(slices.Clone(cols), "conversation")
	}
	next := func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		switch table {
		case "consent":
			vals[2] = vals[2] != nil && vals[2] != int64(0) // SQLite keeps booleans as integers
		case "queue":
			// PostgreSQL keeps each item's conversation in a column.
			b, _ := vals[1].([]byte)
			var it struct{ Key, Conversation string }
			json.Unmarshal(b, &it)
			if it.Conversation == "" {
				it.Conversation = "event:" + it.Key
			}
			vals = append(vals, it.Conversation)
		}
		return vals, nil
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, dstCols, pgx.CopyFromFunc(next))
	return uint64(n), err
}
