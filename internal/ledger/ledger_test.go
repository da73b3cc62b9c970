package ledger_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

// gatedStore holds every append until the gate opens, so that a test can
// fill the ledger's queue.
type gatedStore struct {
	ledger.Store
	gate chan struct{}
}

func (s *gatedStore) Append(ctx context.Context, recs []ledger.Record, effects ...ledger.Effect) (uint64, error) {
	<-s.gate
	return s.Store.Append(ctx, recs, effects...)
}

func (s *gatedStore) AppendGroups(ctx context.Context, groups []ledger.Group) ([]uint64, []error, error) {
	<-s.gate
	return s.Store.AppendGroups(ctx, groups)
}

func newLedger(t *testing.T, store ledger.Store, opts ledger.Options) *ledger.Ledger {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/test")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Signer, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	if opts.Verifier, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	opts.Origin = "example.com/test"
	l, err := ledger.New(context.Background(), store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func openSQLite(t *testing.T) ledger.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPushback: when the queue is full, Append fails at once with
// ErrPushback instead of queueing without bound; queued appends complete
// once the store takes them.
func TestPushback(t *testing.T) {
	ctx := context.Background()
	gs := &gatedStore{Store: openSQLite(t), gate: make(chan struct{})}
	l := newLedger(t, gs, ledger.Options{QueueSize: 4, MaxBatch: 2})
	l.Start()
	e := ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: []byte("x")}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 20 {
		wg.Go(func() {
			_, err := l.Append(ctx, e)
			errs <- err
		})
	}
	// The writer holds at most one batch (0 to 2 appends: it may not have
	// run yet) in the gated Append; the queue holds 4 more; the rest must
	// be pushed back without waiting.
	deadline := time.After(5 * time.Second)
	pushed := 0
	for pushed < 20-4-2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ledger.ErrPushback) {
				t.Fatalf("Append while the queue is full: %v, want ErrPushback", err)
			}
			pushed++
		case <-deadline:
			t.Fatalf("only %d appends pushed back", pushed)
		}
	}
	close(gs.gate)
	wg.Wait()
	close(errs)
	acked := 0
	for err := range errs {
		switch {
		case err == nil:
			acked++
		case errors.Is(err, ledger.ErrPushback):
			pushed++
		default:
			t.Errorf("Append: %v", err)
		}
	}
	// An append is pushed back only while the queue is full, so at least
	// the queue's 4 are acknowledged.
	if acked < 4 || acked+pushed != 20 {
		t.Errorf("%d appended, %d pushed back", acked, pushed)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := gs.Count(ctx); err != nil || n != uint64(acked) {
		t.Errorf("%d records stored, want the %d acknowledged (%v)", n, acked, err)
	}
	if _, err := l.Append(ctx, e); !errors.Is(err, ledger.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
}

// failingStore fails every append, as a database that went away does.
type failingStore struct{ ledger.Store }

func (failingStore) Append(context.Context, []ledger.Record, ...ledger.Effect) (uint64, error) {
	return 0, errors.New("disk I/O error")
}

func (failingStore) AppendGroups(context.Context, []ledger.Group) ([]uint64, []error, error) {
	return nil, nil, errors.New("disk I/O error")
}

func TestAppendErrorIsNotAcknowledged(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t, failingStore{openSQLite(t)}, ledger.Options{})
	l.Start()
	defer l.Close(ctx)
	if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Payload: []byte("x")}); err == nil {
		t.Fatal("Append succeeded on a store that fails")
	}
}
