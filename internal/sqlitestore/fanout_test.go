package sqlitestore_test

import (
	"context"
	"path/filepath"
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
