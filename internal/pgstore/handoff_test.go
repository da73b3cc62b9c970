package pgstore_test

import (
	"context"
	"testing"

	"github.com/linegate/linegate/internal/handoff/handofftest"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

func TestHandoff(t *testing.T) {
	handofftest.Run(t, func(t *testing.T) handofftest.Store {
		s, err := pgstore.Open(context.Background(), pgtest.Schema(t), pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
