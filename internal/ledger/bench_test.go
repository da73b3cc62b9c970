package ledger_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

// BenchmarkAppend measures durable appends through group commit on the
// SQLite store, at 1, 32 and 1024 concurrent writers, with payloads of the
// size of a one-event LINE webhook and its headers (about 1 KiB). Every
// append returns only once its record is durable (synchronous commit).
//
//	go test ./internal/ledger -run '^$' -bench Append
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 32, 1024} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ctx := context.Background()
			store, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "ledger.db"), sqlitestore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/bench")
			if err != nil {
				b.Fatal(err)
			}
			signer, err := note.NewSigner(skey)
			if err != nil {
				b.Fatal(err)
			}
			verifier, err := note.NewVerifier(vkey)
			if err != nil {
				b.Fatal(err)
			}
			l, err := ledger.New(ctx, store, ledger.Options{Origin: "example.com/bench", Signer: signer, Verifier: verifier})
			if err != nil {
				b.Fatal(err)
			}
			l.Start()
			defer l.Close(ctx)
			payload := make([]byte, 1024)
			rand.Read(payload)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						_, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "bench", Payload: payload})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
		})
	}
}
