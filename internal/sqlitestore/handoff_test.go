package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/linegate/linegate/internal/handoff/handofftest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

func TestHandoff(t *testing.T) {
	handofftest.Run(t, func(t *testing.T) handofftest.Store {
		s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
