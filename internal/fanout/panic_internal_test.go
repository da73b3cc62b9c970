package fanout

import (
	"context"
	"iter"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// queueOf is a fan-out Store holding fixed entries.
type queueOf struct{ entries []*Entry }

func (q queueOf) Heads(context.Context, string, int64, int, int) ([]*Entry, error) {
	return q.entries, nil
}
func (q queueOf) QueueDepths(context.Context) (map[string]int64, error) {
	return map[string]int64{"d": int64(len(q.entries))}, nil
}
func (q queueOf) Setting(context.Context, string) (string, error) { return "", nil }
func (q queueOf) QueuedConversations(context.Context, string) (map[string]uint64, error) {
	return map[string]uint64{"user:U1": 0}, nil
}

// panicking is a ledger store whose reads panic, as a fault in reading a
// record would.
type panicking struct{ ledger.Store }

func (panicking) Records(context.Context, uint64, uint64) iter.Seq2[ledger.Record, error] {
	panic("a fault in reading a record")
}

// commits counts what the worker commits.
type commits struct{ n atomic.Int64 }

func (c *commits) Commit(context.Context, []ledger.Entry, ...ledger.Effect) (uint64, error) {
	c.n.Add(1)
	return 0, nil
}

// TestWorkerPanicIsolated: a panic while delivering (here, in reading the
// event's record) does not stop the process: it is counted, nothing is
// committed (the entry stays queued, nothing dropped), and the
// destination's breaker counts it a failure, so that it backs off.
func TestWorkerPanicIsolated(t *testing.T) {
	var c commits
	f, err := New(Options{
		Destinations: []*Destination{{Name: "d", Channel: "c", URL: "https://d.example/hook", Secret: []byte("s")}},
		Store:        queueOf{[]*Entry{{Seq: 1, Destination: "d", Conversation: "user:U1", Channel: "c", Record: 7, Key: "k", Type: "message"}}},
		Log:          &c, Ledger: panicking{}, Poll: time.Millisecond, Linger: time.Millisecond,
		BreakerFailures: 3, BreakerCooldown: time.Hour, Table: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	f.Run(ctx) // returns at the timeout, not by a panic
	w := f.byName["d"]
	if got := testutil.ToFloat64(f.m.internalErrors.WithLabelValues("d")); got != 3 {
		t.Errorf("%v internal errors counted, want 3 (then the breaker opened for an hour)", got)
	}
	if n := c.n.Load(); n != 0 {
		t.Errorf("%d commits after a panic: the entry must stay queued as it was", n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != breakerOpen || w.lastError != "internal error" {
		t.Errorf("breaker %s, last error %q; want open after 3 internal errors", breakerNames[w.state], w.lastError)
	}
}
