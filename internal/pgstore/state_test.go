package pgstore_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/ledger/ledgertest"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

// TestStateConformance runs the shared suite of the state kept beside the
// log: the pipeline's queue and claims, settings and consent, cooldowns,
// retention, data keys, and every effect of Append.
func TestStateConformance(t *testing.T) {
	dsns := map[ledger.Store]string{}
	open := func(t *testing.T, dsn string) ledger.Store {
		s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		dsns[s] = dsn
		return s
	}
	ledgertest.RunState(t, ledgertest.StateHarness{
		Harness: ledgertest.Harness{
			New: func(t *testing.T) ledger.Store { return open(t, pgtest.Schema(t)) },
			Reopen: func(t *testing.T, s ledger.Store) ledger.Store {
				dsn := dsns[s]
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return open(t, dsn)
			},
		},
		DropRecord: func(t *testing.T, s ledger.Store, index uint64) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, dsns[s])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if tag, err := conn.Exec(ctx, "DELETE FROM records WHERE idx = $1", int64(index)); err != nil {
				t.Fatal(err)
			} else if tag.RowsAffected() != 1 {
				t.Fatalf("record %d not there to drop", index)
			}
		},
	})
}
