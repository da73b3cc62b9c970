package pgstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// importTables are the tables Import copies from SQLite, with their
// columns (the same names in both schemas). The index of records by
// subject is not copied: the store rebuilds it from the records.
var importTables = []struct {
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
	{"fanout_queue", []string{"seq", "destination", "conversation", "attempts", "next_ms", "entry"}},
	{"cooldowns", []string{"key", "until_ms", "event"}},
	{"conversations", []string{"channel", "id", "state", "agent", "reason", "since_ms", "last_event_ms", "last_agent_ms", "waiting"}},
	{"notifications", []string{"id", "channel", "target", "body", "attempts", "next_ms", "created_ms"}},
	{"publications", []string{"name", "value", "updated_ms"}},
}

// ErrNotEmpty is returned by Import into a store that already holds a
// ledger.
var ErrNotEmpty = errors.New("pgstore: the PostgreSQL database already holds a ledger; give an empty one")

// Import copies an SQLite installation (src: its database, in the SQLite
// store's current schema, read only; see sqlitestore.Store.ReadDB) into
// this store, which must hold no ledger yet (ErrNotEmpty), in one
// transaction: the log is the same (same leaves, tiles, tree head and
// checkpoint history), and so is the state around it. It returns the
// number of records copied. Nothing may write to src meanwhile: what it
// wrote would not be copied.
func (s *Store) Import(ctx context.Context, src *sql.DB) (uint64, error) {
	var count uint64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var next, size int64
		if err := tx.QueryRow(ctx, "SELECT next FROM log_state WHERE id = 0 FOR UPDATE").Scan(&next); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT size FROM tree_head WHERE id = 0").Scan(&size); err != nil {
			return err
		}
		if next != 0 || size != 0 {
			return ErrNotEmpty
		}
		// The rows made by the empty store's first start (none yet, but
		// a gateway may have been started on it) are replaced.
		for _, t := range []string{"checkpoints", "settings", "queue", "dedup", "consent", "holds", "subject_keys", "fanout_queue",
			"cooldowns", "conversations", "notifications", "publications"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+t); err != nil {
				return err
			}
		}
		for _, t := range importTables {
			n, err := copyTable(ctx, src, tx, t.name, t.cols)
			if err != nil {
				return fmt.Errorf("pgstore: import %s: %w", t.name, err)
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
		if err := src.QueryRowContext(ctx, "SELECT size, hash, checkpoint FROM tree_head WHERE id = 0").Scan(&head.size, &head.hash, &head.cp); err != nil {
			return err
		}
		if err := src.QueryRowContext(ctx, "SELECT next FROM pipeline_cursor WHERE id = 0").Scan(&head.cursor); err != nil {
			return err
		}
		if err := src.QueryRowContext(ctx, "SELECT MAX(idx) FROM records").Scan(&head.maxIdx); err != nil {
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
			{"SELECT setval(pg_get_serial_sequence('fanout_queue', 'seq'), COALESCE((SELECT MAX(seq) FROM fanout_queue), 0) + 1, false)", nil},
			{"SELECT setval(pg_get_serial_sequence('notifications', 'id'), COALESCE((SELECT MAX(id) FROM notifications), 0) + 1, false)", nil},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return fmt.Errorf("pgstore: import: %w", err)
			}
		}
		return nil
	})
	return count, err
}

// copyTable streams one table's rows from SQLite with COPY.
func copyTable(ctx context.Context, src *sql.DB, tx pgx.Tx, table string, cols []string) (uint64, error) {
	rows, err := src.QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+table)
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
