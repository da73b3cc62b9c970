// Command tesseraposix is a benchmark peer: transparency-dev/tessera's POSIX
// log, the reference tlog, appending entries of a given size from N
// concurrent writers for a given time. An append counts once Tessera has
// durably assigned its index (the IndexFuture has resolved).
//
//	tesseraposix -dir DIR -writers 32 -size 1024 -duration 5s
//
// It prints {"appends": N, "seconds": S, "appends_per_s": R} as JSON.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	dir := flag.String("dir", "", "log directory (created)")
	writers := flag.Int("writers", 32, "concurrent writers")
	size := flag.Int("size", 1024, "entry size in bytes")
	duration := flag.Duration("duration", 5*time.Second, "how long to append")
	batchAge := flag.Duration("batch-age", 10*time.Millisecond, "Tessera's batch max age")
	batchSize := flag.Uint("batch-size", 1024, "Tessera's batch max size")
	flag.Parse()
	ctx := context.Background()
	skey, _, err := note.GenerateKey(rand.Reader, "example.com/bench/tessera")
	if err != nil {
		log.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	drv, err := posix.New(ctx, posix.Config{Path: *dir})
	if err != nil {
		log.Fatal(err)
	}
	app, shutdown, _, err := tessera.NewAppender(ctx, drv, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(*batchSize, *batchAge).
		WithPushback(1<<20).
		WithCheckpointInterval(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*duration)
	for w := range *writers {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				data := make([]byte, *size)
				rand.Read(data)
				copy(data, fmt.Sprintf("%d/%d", w, i))
				if _, err := app.Add(ctx, tessera.NewEntry(data))(); err != nil {
					log.Printf("add: %v", err)
					continue
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	shutdown(sctx)
	json.NewEncoder(os.Stdout).Encode(map[string]any{"appends": n.Load(), "seconds": secs, "appends_per_s": float64(n.Load()) / secs})
}
