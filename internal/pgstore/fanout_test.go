package pgstore_test

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/fanout/fanouttest"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func TestFanoutConformance(t *testing.T) {
	fanouttest.Run(t, func(t *testing.T) fanouttest.Store {
		s, err := pgstore.Open(context.Background(), pgtest.Schema(t), pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestImportFanoutQueue: migrate-store carries the destinations' queue
// over, entries, attempts and order, and later entries queue behind them.
func TestImportFanoutQueue(t *testing.T) {
	ctx := context.Background()
	src, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	q := []*fanout.Entry{
		{Destination: "crm", Conversation: "user:U1", Channel: "c", Record: 1, Key: "id:1", Type: "message"},
		{Destination: "crm", Conversation: "user:U1", Channel: "c", Record: 2, Key: "id:2", Type: "message"},
		{Destination: "crm", Conversation: "user:U2", Channel: "c", Record: 3, Key: "id:3", Type: "message", Redelivery: true},
	}
	if _, err := src.Append(ctx, nil, fanout.Enqueue{Entries: q}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Append(ctx, nil, fanout.Retry{Seq: q[0].Seq, Attempts: 3, NextMs: 99}); err != nil {
		t.Fatal(err)
	}
	dst, err := pgstore.Open(ctx, pgtest.Schema(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.Import(ctx, src.ReadDB()); err != nil {
		t.Fatal(err)
	}
	heads, err := dst.Heads(ctx, "crm", math.MaxInt64, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].Seq != q[0].Seq || heads[0].Attempts != 3 || heads[0].NextMs != 99 || heads[0].Key != "id:1" ||
		heads[1].Seq != q[2].Seq || !heads[1].Redelivery {
		t.Fatalf("heads after import: %+v %+v", heads[0], heads[1])
	}
	// Each conversation's first entry came over with its retry time: at
	// 98, U1's waits and U2's goes first.
	heads, err = dst.Heads(ctx, "crm", 98, 1, 1)
	if err != nil || len(heads) != 1 || heads[0].Seq != q[2].Seq {
		t.Fatalf("heads at 98, one conversation: %+v, %v; want U2's", heads, err)
	}
	more := []*fanout.Entry{{Destination: "crm", Conversation: "user:U3", Channel: "c", Record: 4, Key: "id:4"}}
	if _, err := dst.Append(ctx, nil, fanout.Enqueue{Entries: more}); err != nil {
		t.Fatal(err)
	}
	if more[0].Seq <= q[2].Seq {
		t.Errorf("an entry queued after the import got seq %d, not after %d", more[0].Seq, q[2].Seq)
	}
}

// TestMigrateFanoutHeads: a database of version 5, with entries queued,
// gets each conversation's first entry, with its retry time, in the
// table of heads when a replica opens it.
func TestMigrateFanoutHeads(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range pgstore.Migrations[:5] {
		if _, err := conn.Exec(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// U1: two entries, the first waiting until 99; U2: one, due.
	for _, q := range []string{
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U1', 2, 99, '{"record":1}')`,
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U1', 0, 0, '{"record":2}')`,
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U2', 0, 0, '{"record":3}')`,
		`CREATE TABLE schema_version (id INT PRIMARY KEY CHECK (id = 0), version INT NOT NULL)`,
		`INSERT INTO schema_version (id, version) VALUES (0, 5)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	heads, err := s.Heads(ctx, "crm", 98, 1, 2)
	if err != nil || len(heads) != 1 || heads[0].Record != 3 {
		t.Fatalf("heads at 98 = %+v, %v; want U2's record 3 (U1's first waits)", heads, err)
	}
	heads, err = s.Heads(ctx, "crm", 99, 2, 2)
	if err != nil || len(heads) != 3 || heads[0].Record != 1 || heads[0].Attempts != 2 || heads[1].Record != 2 || heads[2].Record != 3 {
		t.Fatalf("heads at 99 = %+v, %v; want records 1, 2, 3", heads, err)
	}
	// The index: the heads in the order they come due.
	if conn, err = pgx.Connect(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var def string
	if err := conn.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE indexname = 'fanout_heads_order' AND schemaname = current_schema()`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(def, "(destination, next_ms, seq)") {
		t.Errorf("fanout_heads_order: %s, want on (destination, next_ms, seq)", def)
	}
}
