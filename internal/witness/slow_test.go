package witness_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/witness"
	"github.com/linegate/linegate/internal/witness/witnesstest"
	"golang.org/x/mod/sumdb/note"
)

// TestSlowWitnessDoesNotDelayOthers: one witness that never answers does
// not hold up the rounds of a real one. Each round returns once the
// quorum is in, well before the slow witness's timeout; the slow one is
// not sent a second checkpoint while its first request is in flight, and
// counts as no cosignature.
func TestSlowWitnessDoesNotDelayOthers(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	logV, _ := note.NewVerifier(vkey)
	wt := witnesstest.Start(t, "example.com/witness-fast", origin, vkey)
	fast, err := witness.New(wt.URL, wt.VKey)
	if err != nil {
		t.Fatal(err)
	}

	var requests atomic.Int32
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	defer hang.Close()
	defer close(release)
	_, slowKey, err := note.GenerateKey(rand.Reader, "example.com/witness-slow")
	if err != nil {
		t.Fatal(err)
	}
	slow, err := witness.New(hang.URL, slowKey)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := newTree(t, leaves("record ", 40))
	c := witness.NewCosigner([]witness.Witness{slow, fast}, 1, &http.Client{Timeout: 30 * time.Second}, tr.proofs, memState{},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, size := range []int64{10, 20, 30} {
		start := time.Now()
		cosigned, err := c.Cosign(ctx, tr.checkpoint(t, signer, size), uint64(size))
		took := time.Since(start)
		if _, names, qerr := witness.VerifyQuorum(cosigned, logV, []note.Verifier{fast.Verifier}, 1); qerr != nil || len(names) != 1 {
			t.Fatalf("size %d: the fast witness's cosignature is missing: %v (%v)", size, qerr, err)
		}
		if err == nil {
			t.Errorf("size %d: no error for the witness that did not answer", size)
		}
		if took > 5*time.Second {
			t.Fatalf("size %d: the round took %v: the slow witness held up the fast one", size, took)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the slow witness got %d requests while its first was in flight; want 1", n)
	}
}
