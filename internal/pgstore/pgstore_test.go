package pgstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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

// TestMigrations: replicas starting at once on an empty database all
// start, one of them having created the schema; a schema newer than the
// binary is refused.
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent start: %v", err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE schema_version SET version = 99"); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(ctx, dsn, pgstore.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this linegate") {
		t.Fatalf("open on a newer schema: %v", err)
	}
}

// TestLease: one holder at a time; when the holder's connection ends, the
// other takes the lease.
func TestLease(t *testing.T) {
	ctx := context.Background()
	s, err := pgstore.Open(ctx, pgtest.Schema(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := s.SequencerLease(), s.SequencerLease()
	if !a.Held(ctx) || b.Held(ctx) || !a.Held(ctx) {
		t.Fatal("want a to hold the lease, and b not")
	}
	a.Release() // as when its process dies: the session ends
	if !b.Held(ctx) || a.Held(ctx) {
		t.Fatal("want b to take the lease over")
	}
	b.Release()
}
