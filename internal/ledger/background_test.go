package ledger_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// commitLog counts the store's transactions of groups.
type commitLog struct {
	ledger.Store
	mu      sync.Mutex
	commits int
}

func (s *commitLog) AppendGroups(ctx context.Context, groups []ledger.Group) ([]uint64, []error, error) {
	s.mu.Lock()
	s.commits++
	s.mu.Unlock()
	return s.Store.AppendGroups(ctx, groups)
}

func (s *commitLog) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

func entry(channel string) ledger.Entry {
	return ledger.Entry{Kind: ledger.KindAdmin, Time: time.Now(), Channel: channel, Payload: []byte("x")}
}

// TestBackgroundRides: a background group (the fan-out's delivery
// records) does not start a commit of its own while others' appends come:
// it rides in the next append's commit, so that an acknowledgement never
// waits behind it. Alone, when nothing else came within BackgroundWait,
// it is committed at once; while appends come, it waits at most
// BackgroundWait.
func TestBackgroundRides(t *testing.T) {
	ctx := context.Background()
	cl := &commitLog{Store: openSQLite(t)}
	l := newLedger(t, cl, ledger.Options{BackgroundWait: time.Hour})
	l.Start()
	bg := l.Background()

	// Nothing else committed yet: committed at once, not an hour later.
	done := make(chan error, 1)
	go func() { _, err := bg.Commit(ctx, []ledger.Entry{entry("bg")}); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a background group with nothing else coming waited")
	}

	// An append now: appends are coming. The next background group waits
	// for one to ride in.
	if _, err := l.Append(ctx, entry("ack")); err != nil {
		t.Fatal(err)
	}
	before := cl.count()
	var first uint64
	go func() {
		var err error
		first, err = bg.Commit(ctx, []ledger.Entry{entry("bg")})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a background group was committed alone while appends were coming (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if n := cl.count(); n != before {
		t.Fatalf("%d commits while the background group waited, want none", n-before)
	}
	idx, err := l.Append(ctx, entry("ack"))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := cl.count(); n != before+1 {
		t.Fatalf("the append and the background group took %d commits, want 1", n-before)
	}
	// The append goes first in the commit it shares.
	if first != idx+1 {
		t.Errorf("background record at %d, the append at %d: want it right after", first, idx)
	}

	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBackgroundWaitBounded: while appends came recently but none comes
// now, a background group is committed once BackgroundWait has passed;
// Close commits the background groups still waiting.
func TestBackgroundWaitBounded(t *testing.T) {
	ctx := context.Background()
	cl := &commitLog{Store: openSQLite(t)}
	l := newLedger(t, cl, ledger.Options{BackgroundWait: 300 * time.Millisecond})
	l.Start()
	if _, err := l.Append(ctx, entry("ack")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Background().Commit(ctx, []ledger.Entry{entry("bg")}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a background group waited %v with nothing else coming", d)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Close: what waits is committed, not lost.
	cl = &commitLog{Store: openSQLite(t)}
	l2 := newLedger(t, cl, ledger.Options{BackgroundWait: time.Hour})
	l2.Start()
	if _, err := l2.Append(ctx, entry("ack")); err != nil {
		t.Fatal(err)
	}
	n0, err := cl.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := l2.Background().Commit(ctx, []ledger.Entry{entry("bg")}); done <- err }()
	time.Sleep(200 * time.Millisecond) // queued, waiting for an append
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a background group waiting at Close: %v", err)
	}
	if n, err := cl.Count(ctx); err != nil || n != n0+1 {
		t.Errorf("%d records after Close, want %d (%v)", n, n0+1, err)
	}
}
