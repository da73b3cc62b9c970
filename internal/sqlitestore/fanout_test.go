package sqlitestore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/linegate/linegate/internal/fanout/fanouttest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func TestFanoutConformance(t *testing.T) {
	fanouttest.Run(t, func(t *testing.T) fanouttest.Store {
		s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestMigrateFanoutHeads: a database of version 9, with entries queued,
// gets each conversation's first entry, with its retry time, in the
// table of heads when it is opened.
func TestMigrateFanoutHeads(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "ledger.db")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sqlitestore.Migrations[:9] {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	// U1: two entries, the first waiting until 99; U2: one, due.
	for _, q := range []string{
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U1', 2, 99, '{"record":1}')`,
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U1', 0, 0, '{"record":2}')`,
		`INSERT INTO fanout_queue (destination, conversation, attempts, next_ms, entry) VALUES ('crm', 'user:U2', 0, 0, '{"record":3}')`,
		`PRAGMA user_version = 9`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := sqlitestore.Open(ctx, p, sqlitestore.Options{})
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
	s.Close()
	if db, err = sql.Open("sqlite", p); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM pragma_index_info('fanout_heads_order') ORDER BY seqno`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	if !slices.Equal(cols, []string{"destination", "next_ms", "seq"}) {
		t.Errorf("fanout_heads_order on %v, want destination, next_ms, seq", cols)
	}
}
