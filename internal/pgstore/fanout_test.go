package pgstore_test

import (
	"context"
	"path/filepath"
	"testing"

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
	heads, err := dst.Heads(ctx, "crm", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].Seq != q[0].Seq || heads[0].Attempts != 3 || heads[0].NextMs != 99 || heads[0].Key != "id:1" ||
		heads[1].Seq != q[2].Seq || !heads[1].Redelivery {
		t.Fatalf("heads after import: %+v %+v", heads[0], heads[1])
	}
	more := []*fanout.Entry{{Destination: "crm", Conversation: "user:U3", Channel: "c", Record: 4, Key: "id:4"}}
	if _, err := dst.Append(ctx, nil, fanout.Enqueue{Entries: more}); err != nil {
		t.Fatal(err)
	}
	if more[0].Seq <= q[2].Seq {
		t.Errorf("an entry queued after the import got seq %d, not after %d", more[0].Seq, q[2].Seq)
	}
}
