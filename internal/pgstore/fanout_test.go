package pgstore_test

import (
	"context"
	"testing"

	"github.com/linegate/linegate/internal/fanout/fanouttest"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
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
