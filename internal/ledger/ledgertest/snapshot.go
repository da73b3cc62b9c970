package ledgertest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// testSnapshot checks that a view keeps showing the store as it was when
// it was taken, while records are appended and integrated.
func testSnapshot(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	if _, err := s.Append(ctx, records(0, 3)); err != nil {
		t.Fatal(err)
	}
	head1 := ledger.TreeHead{Size: 2, Hash: [32]byte{1}, Checkpoint: []byte("cp1\n")}
	tile1 := bytes.Repeat([]byte{1}, 64)
	if err := s.Integrate(ctx, ledger.TreeHead{}, head1, []ledger.Tile{{Level: 0, Index: 0, Data: tile1}}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer v.Close()

	// Writes after the snapshot: more records, a wider tile, a new head.
	if _, err := s.Append(ctx, records(3, 2)); err != nil {
		t.Fatal(err)
	}
	head2 := ledger.TreeHead{Size: 5, Hash: [32]byte{2}, Checkpoint: []byte("cp2\n")}
	if err := s.Integrate(ctx, head1, head2, []ledger.Tile{{Level: 0, Index: 0, Data: bytes.Repeat([]byte{1}, 160)}}); err != nil {
		t.Fatal(err)
	}

	// Every method at once, as Verify calls them.
	var wg sync.WaitGroup
	check := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	check("TreeHead", func() error {
		if got, err := v.TreeHead(ctx); err != nil || got.Size != 2 || !bytes.Equal(got.Checkpoint, head1.Checkpoint) {
			return fmt.Errorf("= size %d, %q, %v; want the head of the snapshot", got.Size, got.Checkpoint, err)
		}
		return nil
	})
	check("Count", func() error {
		if n, err := v.Count(ctx); err != nil || n != 3 {
			return fmt.Errorf("= %d, %v; want 3", n, err)
		}
		return nil
	})
	check("ReadTile", func() error {
		if d, err := v.ReadTile(ctx, 0, 0); err != nil || !bytes.Equal(d, tile1) {
			return fmt.Errorf("= %d bytes, %v; want the tile of the snapshot", len(d), err)
		}
		return nil
	})
	check("ReadLeaves", func() error {
		if _, err := v.ReadLeaves(ctx, 0, 4); err == nil {
			return fmt.Errorf("record 3, appended after the snapshot, was read")
		}
		_, err := v.ReadLeaves(ctx, 0, 3)
		return err
	})
	check("Records", func() error {
		n := 0
		for r, err := range v.Records(ctx, 0, 5) {
			if err != nil {
				return err
			}
			if r.Leaf != nil {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("%d records, want 3", n)
		}
		return nil
	})
	check("Checkpoints", func() error {
		n := 0
		for _, err := range v.Checkpoints(ctx) {
			if err != nil {
				return err
			}
			n++
		}
		if n != 1 {
			return fmt.Errorf("%d checkpoints, want 1", n)
		}
		return nil
	})
	wg.Wait()
	if err := v.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// A new snapshot sees the writes.
	v2, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if got, err := v2.TreeHead(ctx); err != nil || got.Size != 5 {
		t.Errorf("new snapshot: TreeHead = size %d, %v; want 5", got.Size, err)
	}
}

// testVerifyUnderLoad verifies the log again and again while it is
// appended to and integrated from several goroutines: every verification
// of a snapshot passes, whatever moment it was taken at.
func testVerifyUnderLoad(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	const origin = "example.com/ledgertest"
	signer, verifier := newSigner(t, origin)
	l, err := ledger.New(ctx, s, ledger.Options{Origin: origin, Signer: signer, Verifier: verifier, CheckpointInterval: 2 * time.Millisecond, MaxIntegrate: 200})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	// The log grows by about 10 records per verification, after 300 first:
	// always written to, never so large that the verifications take long.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var appended, verified atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				if appended.Load() >= 300+10*verified.Load() {
					continue
				}
				if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: fmt.Appendf(nil, "%d/%d", w, i)}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				appended.Add(1)
			}
		})
	}
	// A log past its first full tile, so that tiles fill up and new ones
	// start while it is verified.
	for deadline := time.Now().Add(10 * time.Second); appended.Load() < 300; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d records appended in 10s", appended.Load())
		}
	}
	const runs = 200
	failures, sizes, pending := 0, map[uint64]bool{}, 0
	for i := range runs {
		v, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		rep, err := ledger.Verify(ctx, v, verifier, origin, nil, nil)
		v.Close()
		verified.Add(1)
		if err != nil {
			if failures++; failures <= 3 {
				t.Errorf("verification %d: %v", i, err)
			}
			continue
		}
		sizes[rep.TreeSize] = true
		if rep.Records > rep.TreeSize {
			pending++
		}
	}
	close(stop)
	wg.Wait()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if failures > 0 {
		t.Errorf("%d of %d verifications under load failed", failures, runs)
	}
	t.Logf("%d records appended; %d verifications saw %d tree sizes, %d of them records awaiting integration",
		appended.Load(), runs, len(sizes), pending)
	if len(sizes) < 10 {
		t.Errorf("only %d tree sizes seen: the log did not grow during the verifications", len(sizes))
	}
}
