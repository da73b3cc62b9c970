package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func testRecord(i int) ledger.Record {
	nonce := ledger.NewNonce()
	payload := fmt.Appendf(nil, "payload %d", i)
	leaf, err := ledger.Leaf{Kind: ledger.KindWebhook, Channel: "c", Commitment: ledger.Commit(nonce, payload)}.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return ledger.Record{Leaf: leaf, Nonce: nonce, Payload: payload}
}

// newDB writes a database of n records, closed.
func newDB(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "ledger.db")
	s, err := sqlitestore.Open(ctx, p, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := s.Append(ctx, []ledger.Record{testRecord(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func dirState(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %d %x", e.Name(), fi.Size(), fi.ModTime().UnixNano(), b))
	}
	return out
}

// TestOpenReadOnly: a read-only handle reads a stopped database without
// changing the directory, reads a database a gateway writes beside it as
// snapshots, and reports a write to a file it read as immutable.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	p := newDB(t, 5)
	before := dirState(t, filepath.Dir(p))
	r, err := sqlitestore.OpenReadOnly(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Count(ctx); err != nil || n != 5 {
		t.Fatalf("Count = %d, %v", n, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := dirState(t, filepath.Dir(p)); !slices.Equal(before, after) {
		t.Errorf("reading changed the directory:\n%q\n%q", before, after)
	}

	// A writer starts while the file is read as immutable.
	r, err = sqlitestore.OpenReadOnly(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err = r.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sqlitestore.Open(ctx, p, sqlitestore.Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, []ledger.Record{testRecord(5)}); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); !errors.Is(err, sqlitestore.ErrChanged) {
		t.Errorf("Close of a view of a file written meanwhile: %v, want ErrChanged", err)
	}

	// With the writer's WAL there, a new handle reads through it, a
	// snapshot at a time.
	r2, err := sqlitestore.OpenReadOnly(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	v2, err := r2.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, []ledger.Record{testRecord(6)}); err != nil {
		t.Fatal(err)
	}
	if n, err := v2.Count(ctx); err != nil || n != 6 {
		t.Errorf("Count of the snapshot = %d, %v; want 6", n, err)
	}
	if err := v2.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	w.Close()
}

// TestOpenReadOnlySchemaVersion: a read-only handle refuses any schema
// version but its own, and leaves it as it is.
func TestOpenReadOnlySchemaVersion(t *testing.T) {
	ctx := context.Background()
	p := newDB(t, 1)
	version := func(set int) int {
		db, err := sql.Open("sqlite", "file:"+p)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if set >= 0 {
			if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", set)); err != nil {
				t.Fatal(err)
			}
		}
		var v int
		if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	current := version(-1)
	for _, tt := range []struct {
		v    int
		want string
	}{
		{current + 1, fmt.Sprintf("schema version %d is newer than this linegate's (%d)", current+1, current)},
		{current - 1, fmt.Sprintf("schema version %d is older than this linegate's (%d), and a read-only open does not migrate", current-1, current)},
		{0, "is not a linegate ledger (schema version 0)"},
	} {
		version(tt.v)
		r, err := sqlitestore.OpenReadOnly(ctx, p)
		if err == nil {
			r.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("open of schema version %d: %v; want an error naming %s and %q", tt.v, err, p, tt.want)
		}
		if got := version(-1); got != tt.v {
			t.Errorf("schema version %d became %d", tt.v, got)
		}
	}
	if _, err := sqlitestore.OpenReadOnly(ctx, filepath.Join(t.TempDir(), "none.db")); err == nil {
		t.Error("open of a missing file succeeded")
	}
}
