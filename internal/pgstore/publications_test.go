package pgstore_test

import (
	"context"
	"testing"

	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

// TestPublications: the archive's cursors are kept across a reopen.
func TestPublications(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Publication(ctx, "archive:tiles"); err != nil || v != "" {
		t.Fatalf("a cursor never set = %q, %v", v, err)
	}
	for _, v := range []string{"256", "512"} {
		if err := s.SetPublication(ctx, "archive:tiles", v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetPublication(ctx, "witness:w1", "7"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = pgstore.Open(ctx, dsn, pgstore.Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for k, want := range map[string]string{"archive:tiles": "512", "witness:w1": "7"} {
		if v, err := s.Publication(ctx, k); err != nil || v != want {
			t.Errorf("%s = %q, %v; want %q", k, v, err, want)
		}
	}
}
