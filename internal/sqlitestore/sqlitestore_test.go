package sqlitestore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
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

// BenchmarkAppendSealed appends batches of 64 records sealed for one user
// each (of 100), as the gateway's group commit does: the cost of the index
// by subject beside the records.
func BenchmarkAppendSealed(b *testing.B) {
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "ledger.db"), sqlitestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ring := keys.NewRing(s, benchKEK(b))
	batch := make([]ledger.Record, 64)
	payload := make([]byte, 600)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			rec, err := ledger.SealRecord(ctx, ring, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c",
				Payload: payload, Subjects: []string{fmt.Sprintf("user:U%d", (i*64+j)%100)}})
			if err != nil {
				b.Fatal(err)
			}
			batch[j] = rec
		}
		if _, err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "records/s")
}

func benchKEK(b *testing.B) keys.KEK {
	k, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		b.Fatal(err)
	}
	return k
}
