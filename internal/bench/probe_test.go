package bench

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// The machine probes that docs/BENCHMARKS.md cites, to explain its
// figures:
//
//	go test ./internal/bench -run '^$' -bench Probe

// BenchmarkProbeFsync measures a bare 4 KiB write and fsync on the disk of
// the temporary directory: the floor under every durable commit.
func BenchmarkProbeFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	ds := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	report(b, ds)
}

// BenchmarkProbeSleepLag measures how late a goroutine wakes from a sleep
// of 1/1200 s: the open-loop load generator's own imprecision.
func BenchmarkProbeSleepLag(b *testing.B) {
	ds := make([]time.Duration, 0, b.N)
	for b.Loop() {
		due := time.Now().Add(time.Second / 1200)
		time.Sleep(time.Until(due))
		ds = append(ds, time.Since(due))
	}
	report(b, ds)
}

func report(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100])/1e6, "p99-ms")
}
