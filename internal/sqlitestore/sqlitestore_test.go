package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/ledger/ledgertest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func TestConformance(t *testing.T) {
	paths := map[ledger.Store]string{}
	ledgertest.Run(t, ledgertest.Harness{
		New: func(t *testing.T) ledger.Store {
			p := filepath.Join(t.TempDir(), "ledger.db")
			s, err := sqlitestore.Open(context.Background(), p, sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			paths[s] = p
			return s
		},
		Reopen: func(t *testing.T, s ledger.Store) ledger.Store {
			p := paths[s]
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := sqlitestore.Open(context.Background(), p, sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}
