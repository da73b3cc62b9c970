package sqlitestore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/ledger/ledgertest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// TestStateConformance runs the shared suite of the state kept beside the
// log: the pipeline's queue, settings and consent, cooldowns, retention,
// data keys, and every effect of Append.
func TestStateConformance(t *testing.T) {
	paths := map[ledger.Store]string{}
	open := func(t *testing.T, p string) ledger.Store {
		s, err := sqlitestore.Open(context.Background(), p, sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		paths[s] = p
		return s
	}
	ledgertest.RunState(t, ledgertest.StateHarness{
		Harness: ledgertest.Harness{
			New: func(t *testing.T) ledger.Store {
				return open(t, filepath.Join(t.TempDir(), "ledger.db"))
			},
			Reopen: func(t *testing.T, s ledger.Store) ledger.Store {
				p := paths[s]
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return open(t, p)
			},
		},
		// A connection of its own, beside the store's, as another
		// program damaging the file would have.
		DropRecord: func(t *testing.T, s ledger.Store, index uint64) {
			db, err := sql.Open("sqlite", "file:"+paths[s]+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if res, err := db.Exec("DELETE FROM records WHERE idx = ?", index); err != nil {
				t.Fatal(err)
			} else if n, err := res.RowsAffected(); err != nil || n != 1 {
				t.Fatalf("record %d not there to drop (%v)", index, err)
			}
		},
	})
}
