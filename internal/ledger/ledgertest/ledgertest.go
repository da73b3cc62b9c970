// Package ledgertest is the conformance suite of ledger.Store: every
// backend runs it, so that every backend keeps the same contract.
package ledgertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"golang.org/x/mod/sumdb/note"
)

// Harness opens stores for the suite.
type Harness struct {
	// New returns a new, empty store. The suite closes it.
	New func(t *testing.T) ledger.Store
	// Reopen closes s and opens the same storage again.
	Reopen func(t *testing.T, s ledger.Store) ledger.Store
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Empty", testEmpty},
		{"AppendDense", testAppendDense},
		{"AppendConcurrent", testAppendConcurrent},
		{"AppendGroups", testAppendGroups},
		{"ReadLeavesMissing", testReadLeavesMissing},
		{"IntegrateCompareAndSwap", testIntegrateCAS},
		{"TileGrows", testTileGrows},
		{"Durable", testDurable},
		{"LedgerRoundTrip", testLedgerRoundTrip},
		{"LedgerConcurrentSequencers", testConcurrentSequencers},
		{"SealedRoundTrip", testSealedRoundTrip},
		{"SubjectKeys", testSubjectKeys},
		{"Snapshot", testSnapshot},
		{"VerifyUnderLoad", testVerifyUnderLoad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
	}
}

func open(t *testing.T, h Harness) ledger.Store {
	s := h.New(t)
	t.Cleanup(func() { s.Close() })
	return s
}

func record(i int) ledger.Record {
	nonce := ledger.NewNonce()
	payload := fmt.Appendf(nil, "payload %d", i)
	leaf, err := ledger.Leaf{Kind: ledger.KindWebhook, Time: time.UnixMilli(int64(1700000000000 + i)), Channel: "c",
		Commitment: ledger.Commit(nonce, payload)}.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return ledger.Record{Leaf: leaf, Nonce: nonce, Payload: payload}
}

func records(from, n int) []ledger.Record {
	var rs []ledger.Record
	for i := from; i < from+n; i++ {
		rs = append(rs, record(i))
	}
	return rs
}

func testEmpty(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	head, err := s.TreeHead(ctx)
	if err != nil {
		t.Fatalf("TreeHead: %v", err)
	}
	if head.Size != 0 || head.Checkpoint != nil {
		t.Errorf("new store tree head = size %d, checkpoint %q; want empty", head.Size, head.Checkpoint)
	}
	if n, err := s.Count(ctx); err != nil || n != 0 {
		t.Errorf("Count = %d, %v; want 0", n, err)
	}
	if _, err := s.ReadTile(ctx, 0, 0); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("ReadTile on empty store: err = %v, want ErrNotFound", err)
	}
	if leaves, err := s.ReadLeaves(ctx, 0, 0); err != nil || len(leaves) != 0 {
		t.Errorf("ReadLeaves(0, 0) = %d leaves, %v", len(leaves), err)
	}
	for cp, err := range s.Checkpoints(ctx) {
		t.Errorf("Checkpoints on empty store yielded %q, %v", cp, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testAppendDense(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	want := records(0, 5)
	if first, err := s.Append(ctx, want[:3]); err != nil || first != 0 {
		t.Fatalf("Append = %d, %v; want 0", first, err)
	}
	if first, err := s.Append(ctx, want[3:]); err != nil || first != 3 {
		t.Fatalf("Append = %d, %v; want 3", first, err)
	}
	if n, err := s.Count(ctx); err != nil || n != 5 {
		t.Fatalf("Count = %d, %v; want 5", n, err)
	}
	leaves, err := s.ReadLeaves(ctx, 1, 4)
	if err != nil {
		t.Fatalf("ReadLeaves: %v", err)
	}
	for i, l := range leaves {
		if !bytes.Equal(l, want[1+i].Leaf) {
			t.Errorf("leaf %d differs", 1+i)
		}
	}
	i := 0
	for r, err := range s.Records(ctx, 0, 5) {
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		if r.Index != uint64(i) || !bytes.Equal(r.Leaf, want[i].Leaf) || !bytes.Equal(r.Nonce, want[i].Nonce) || !bytes.Equal(r.Payload, want[i].Payload) {
			t.Errorf("record %d = %+v, want %+v", i, r, want[i])
		}
		i++
	}
	if i != 5 {
		t.Errorf("Records yielded %d records, want 5", i)
	}
}

func testAppendConcurrent(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	const writers, batches, per = 8, 20, 3
	type got struct {
		first uint64
		recs  []ledger.Record
	}
	var mu sync.Mutex
	var all []got
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				recs := records((w*batches+b)*per, per)
				first, err := s.Append(ctx, recs)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				all = append(all, got{first, recs})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	total := uint64(writers * batches * per)
	if n, err := s.Count(ctx); err != nil || n != total {
		t.Fatalf("Count = %d, %v; want %d", n, err, total)
	}
	leaves, err := s.ReadLeaves(ctx, 0, total)
	if err != nil {
		t.Fatalf("ReadLeaves: %v", err)
	}
	seen := make(map[uint64]bool)
	for _, g := range all {
		for i, r := range g.recs {
			idx := g.first + uint64(i)
			if seen[idx] {
				t.Fatalf("index %d assigned twice", idx)
			}
			seen[idx] = true
			if !bytes.Equal(leaves[idx], r.Leaf) {
				t.Errorf("leaf at %d is not the one appended there", idx)
			}
		}
	}
}

func testReadLeavesMissing(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	if _, err := s.Append(ctx, records(0, 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadLeaves(ctx, 3, 10); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("ReadLeaves past the end: err = %v, want ErrNotFound", err)
	}
}

func testIntegrateCAS(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	head1 := ledger.TreeHead{Size: 2, Hash: [32]byte{1}, Checkpoint: []byte("cp1\n")}
	tile1 := []ledger.Tile{{Level: 0, Index: 0, Data: bytes.Repeat([]byte{1}, 64)}}
	if err := s.Integrate(ctx, ledger.TreeHead{}, head1, tile1); err != nil {
		t.Fatalf("Integrate: %v", err)
	}
	stale := ledger.TreeHead{Size: 3, Hash: [32]byte{2}, Checkpoint: []byte("cp-stale\n")}
	staleTiles := []ledger.Tile{{Level: 0, Index: 0, Data: bytes.Repeat([]byte{2}, 96)}}
	if err := s.Integrate(ctx, ledger.TreeHead{}, stale, staleTiles); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("Integrate from a stale size: err = %v, want ErrConflict", err)
	}
	// The same size with another hash is not the stored head either.
	forked := ledger.TreeHead{Size: 2, Hash: [32]byte{9}}
	if err := s.Integrate(ctx, forked, stale, staleTiles); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("Integrate from the stored size with another hash: err = %v, want ErrConflict", err)
	}
	got, err := s.TreeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != head1.Size || got.Hash != head1.Hash || !bytes.Equal(got.Checkpoint, head1.Checkpoint) {
		t.Errorf("TreeHead = %+v, want %+v", got, head1)
	}
	if d, err := s.ReadTile(ctx, 0, 0); err != nil || !bytes.Equal(d, tile1[0].Data) {
		t.Errorf("tile after a conflicting Integrate = %x, %v; want the first tile", d, err)
	}
	head2 := ledger.TreeHead{Size: 3, Hash: [32]byte{3}, Checkpoint: []byte("cp2\n")}
	if err := s.Integrate(ctx, head1, head2, nil); err != nil {
		t.Fatalf("Integrate: %v", err)
	}
	var cps []string
	for cp, err := range s.Checkpoints(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, string(cp))
	}
	if len(cps) != 2 || cps[0] != "cp1\n" || cps[1] != "cp2\n" {
		t.Errorf("Checkpoints = %q, want [cp1 cp2]", cps)
	}
}

func testTileGrows(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	small := bytes.Repeat([]byte{7}, 2*32)
	big := append(bytes.Clone(small), bytes.Repeat([]byte{8}, 32)...)
	if err := s.Integrate(ctx, ledger.TreeHead{}, ledger.TreeHead{Size: 2, Checkpoint: []byte("a\n")}, []ledger.Tile{{Level: 0, Index: 0, Data: small}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Integrate(ctx, ledger.TreeHead{Size: 2}, ledger.TreeHead{Size: 3, Checkpoint: []byte("b\n")}, []ledger.Tile{{Level: 0, Index: 0, Data: big}}); err != nil {
		t.Fatal(err)
	}
	if d, err := s.ReadTile(ctx, 0, 0); err != nil || !bytes.Equal(d, big) {
		t.Errorf("ReadTile = %d bytes, %v; want the wider tile", len(d), err)
	}
}

func testDurable(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.New(t)
	want := records(0, 10)
	if _, err := s.Append(ctx, want); err != nil {
		t.Fatal(err)
	}
	head := ledger.TreeHead{Size: 10, Hash: [32]byte{9}, Checkpoint: []byte("cp\n")}
	if err := s.Integrate(ctx, ledger.TreeHead{}, head, []ledger.Tile{{Level: 0, Index: 0, Data: make([]byte, 320)}}); err != nil {
		t.Fatal(err)
	}
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	if n, err := s.Count(ctx); err != nil || n != 10 {
		t.Fatalf("Count after reopen = %d, %v", n, err)
	}
	if got, err := s.TreeHead(ctx); err != nil || got.Size != 10 || got.Hash != head.Hash {
		t.Errorf("TreeHead after reopen = %+v, %v", got, err)
	}
	if d, err := s.ReadTile(ctx, 0, 0); err != nil || len(d) != 320 {
		t.Errorf("ReadTile after reopen = %d bytes, %v", len(d), err)
	}
}

func newSigner(t testing.TB, origin string) (note.Signer, note.Verifier) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// testLedgerRoundTrip runs a Ledger over the store: concurrent appends,
// integration across several tiles, verification, and the read side.
func testLedgerRoundTrip(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	const origin = "example.com/ledgertest"
	signer, verifier := newSigner(t, origin)
	l, err := ledger.New(ctx, s, ledger.Options{Origin: origin, Signer: signer, Verifier: verifier, CheckpointInterval: 20 * time.Millisecond, MaxIntegrate: 300})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	const n = 700 // crosses two full tiles and integrates in several steps
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < n; i += 10 {
				_, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: fmt.Appendf(nil, "p%d", i)})
				if err != nil {
					t.Errorf("Append: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if _, err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.Verify(ctx, s, verifier, origin, []ledger.External{{Name: "checkpoint file", Signed: l.Head().Checkpoint}}, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.TreeSize != n || rep.Records != n {
		t.Errorf("Verify report = %+v, want %d records integrated", rep, n)
	}
	srv := httptest.NewServer(http.StripPrefix("/log", l.Handler()))
	defer srv.Close()
	for path, want := range map[string]int{
		"/log/checkpoint":               200,
		"/log/tile/0/000":               200,
		"/log/tile/0/001":               200,
		"/log/tile/0/002":               404, // only 188 of 256 leaves
		"/log/tile/0/002.p/188":         200,
		"/log/tile/0/002.p/100":         200,
		"/log/tile/0/002.p/189":         404,
		"/log/tile/1/000.p/2":           200,
		"/log/tile/entries/000":         200,
		"/log/tile/entries/002.p/188":   200,
		"/log/tile/0/x000/000":          400, // not canonical
		"/log/tile/0/00":                400,
		"/log/tile/0/000.p/256":         400,
		"/log/tile/99999999999999999/0": 400,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// testConcurrentSequencers runs two ledgers over one store, as two gateway
// replicas would: both append, both sequence, and the log stays one.
func testConcurrentSequencers(t *testing.T, h Harness) {
	// At 3ms, the sequencers admit records only as they integrate; at
	// 40ms, they admit ahead of it too (every 10ms), and each one's
	// admitted records go stale as the other moves the tree.
	for _, interval := range []time.Duration{3 * time.Millisecond, 40 * time.Millisecond} {
		t.Run(interval.String(), func(t *testing.T) { testConcurrentSequencersAt(t, h, interval) })
	}
}

func testConcurrentSequencersAt(t *testing.T, h Harness, interval time.Duration) {
	ctx := context.Background()
	s := open(t, h)
	const origin = "example.com/ledgertest"
	signer, verifier := newSigner(t, origin)
	var ls []*ledger.Ledger
	for range 2 {
		l, err := ledger.New(ctx, s, ledger.Options{Origin: origin, Signer: signer, Verifier: verifier, CheckpointInterval: interval})
		if err != nil {
			t.Fatal(err)
		}
		l.Start()
		ls = append(ls, l)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if _, err := ls[w%2].Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: fmt.Appendf(nil, "%d/%d", w, i)}); err != nil {
					t.Errorf("Append: %v", err)
				}
			}
		})
	}
	wg.Wait()
	for _, l := range ls {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := ledger.Verify(ctx, s, verifier, origin, nil, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.TreeSize != 800 {
		t.Errorf("tree size %d, want 800", rep.TreeSize)
	}
}
