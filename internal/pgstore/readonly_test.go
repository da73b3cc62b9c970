package pgstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

// TestOpenReadOnly: a read-only handle reads snapshots of a database that
// is written meanwhile, and refuses any schema version but its own, or a
// database that holds no ledger, leaving the version as it is.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	if _, err := pgstore.OpenReadOnly(ctx, dsn); err == nil || !strings.Contains(err.Error(), "holds no linegate ledger") {
		t.Errorf("read-only open of an empty database: %v", err)
	}
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := func(i int) ledger.Record {
		nonce := ledger.NewNonce()
		payload := fmt.Appendf(nil, "p%d", i)
		leaf, err := ledger.Leaf{Kind: ledger.KindWebhook, Channel: "c", Commitment: ledger.Commit(nonce, payload)}.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return ledger.Record{Leaf: leaf, Nonce: nonce, Payload: payload}
	}
	if _, err := s.Append(ctx, []ledger.Record{rec(0), rec(1)}); err != nil {
		t.Fatal(err)
	}
	r, err := pgstore.OpenReadOnly(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []ledger.Record{rec(2)}); err != nil {
		t.Fatal(err)
	}
	if n, err := v.Count(ctx); err != nil || n != 2 {
		t.Errorf("Count of the snapshot = %d, %v; want 2", n, err)
	}
	if err := v.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tt := range []struct {
		v    int
		want string
	}{
		{99, "database schema version 99 is newer than this linegate's"},
		{1, "database schema version 1 is older than this linegate's"},
	} {
		if _, err := conn.Exec(ctx, "UPDATE schema_version SET version = $1", tt.v); err != nil {
			t.Fatal(err)
		}
		_, err := pgstore.OpenReadOnly(ctx, dsn)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("read-only open of schema version %d: %v; want %q", tt.v, err, tt.want)
		}
		var got int
		if err := conn.QueryRow(ctx, "SELECT version FROM schema_version").Scan(&got); err != nil || got != tt.v {
			t.Errorf("schema version %d became %d, %v", tt.v, got, err)
		}
	}
}
