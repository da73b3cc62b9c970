// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema in the server named by LINEGATE_TEST_POSTGRES. Without it, tests
// skip, unless LINEGATE_REQUIRE_POSTGRES=1 (as in CI), where they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// DSN returns the server's address, or skips (fails in CI) without one.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("LINEGATE_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("LINEGATE_REQUIRE_POSTGRES") == "1" {
			t.Fatal("LINEGATE_TEST_POSTGRES is not set, and LINEGATE_REQUIRE_POSTGRES=1")
		}
		t.Skip("LINEGATE_TEST_POSTGRES is not set (scripts/postgres.sh starts a server)")
	}
	return dsn
}

// Schema creates a new schema and returns a DSN whose connections use it;
// the schema is dropped when the test ends.
func Schema(t testing.TB) string {
	t.Helper()
	dsn := DSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}
