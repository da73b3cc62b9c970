package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// TestPreadmit: the records the sequencer admits between checkpoints are
// the ones the next integration signs, and the log verifies; a row copied
// from a record admitted but not yet signed is refused as a copy, as it
// is when both are read by one integration; a refusal found ahead of the
// checkpoint makes the ledger unready at once, and nothing past it is
// signed.
func TestPreadmit(t *testing.T) {
	ctx := context.Background()
	store := openSQLite(t)
	k := newKey(t)
	// An hour between checkpoints: the sequencer sleeps, and the test
	// runs its admission slices itself.
	l, err := ledger.New(ctx, store, k.options(ledger.Options{CheckpointInterval: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Close(ctx)
	appendN := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: fmt.Appendf(nil, "webhook %d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}

	appendN(3)
	l.Preadmit(ctx)
	if got := l.Admitted(); got != 3 {
		t.Fatalf("%d records admitted ahead of the checkpoint, want 3", got)
	}
	appendN(2) // admitted by the integration itself
	head, err := l.Sync(ctx)
	if err != nil || head.Size != 5 {
		t.Fatalf("Sync: size %d, %v; want 5", head.Size, err)
	}
	if got := l.Admitted(); got != 0 {
		t.Errorf("%d records still admitted after the integration, want 0", got)
	}
	if rep, err := ledger.Verify(ctx, store, k.verifier, testOrigin, []ledger.External{{Name: "head", Signed: head.Checkpoint}}, nil); err != nil || rep.TreeSize != 5 {
		t.Fatalf("Verify: size %d, %v", rep.TreeSize, err)
	}

	// Record 5 admitted, not signed; a copy of its row appended as
	// record 6 by someone with write access to the database.
	appendN(1)
	l.Preadmit(ctx)
	if got := l.Admitted(); got != 1 {
		t.Fatalf("%d records admitted, want 1", got)
	}
	var orig ledger.Record
	for rec, err := range store.Records(ctx, 5, 6) {
		if err != nil {
			t.Fatal(err)
		}
		orig = rec
	}
	if _, err := store.Append(ctx, []ledger.Record{{Leaf: orig.Leaf, Nonce: orig.Nonce, Payload: orig.Payload}}); err != nil {
		t.Fatal(err)
	}
	l.Preadmit(ctx)
	err = l.Ready(ctx)
	if err == nil || !strings.Contains(err.Error(), "record 6: a copy of record 5") {
		t.Fatalf("Ready after the copy was read ahead of the checkpoint: %v, want it to name record 6 as a copy of record 5", err)
	}
	if got := l.Admitted(); got != 1 {
		t.Errorf("%d records admitted, want the 1 before the copy", got)
	}
	// The integration reads on from the admitted record, finds the copy
	// and signs nothing: the tree stays at 5.
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = l.Sync(sctx)
	cancel()
	if head := l.Head(); err == nil || head.Size != 5 {
		t.Errorf("tree size %d (Sync: %v), want 5: nothing signed with the copy after it", head.Size, err)
	}
}
