package ledger_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// pingCounter counts the store's write probes.
type pingCounter struct {
	ledger.Store
	n atomic.Int64
}

func (p *pingCounter) Ping(ctx context.Context) error {
	p.n.Add(1)
	return p.Store.Ping(ctx)
}

// TestReadyProbesAtMostOnceASecond: a readiness endpoint polled in a loop
// does not turn into a synced write per request.
func TestReadyProbesAtMostOnceASecond(t *testing.T) {
	pc := &pingCounter{Store: openSQLite(t)}
	l := newLedger(t, pc, ledger.Options{})
	l.Start()
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	for range 500 {
		if err := l.Ready(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	if n, most := pc.n.Load(), int64(elapsed/time.Second)+1; n > most {
		t.Errorf("500 readiness checks in %v wrote %d probes, want at most %d", elapsed, n, most)
	}
}
