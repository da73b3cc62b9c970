package pgstore_test

import (
	"context"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/ledger/ledgertest"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

func TestConformance(t *testing.T) {
	dsns := map[ledger.Store]string{}
	ledgertest.Run(t, ledgertest.Harness{
		New: func(t *testing.T) ledger.Store {
			dsn := pgtest.Schema(t)
			s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			dsns[s] = dsn
			return s
		},
		Reopen: func(t *testing.T, s ledger.Store) ledger.Store {
			dsn := dsns[s]
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}
