package periodic_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/periodic"
)

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		periodic.Every(ctx, 10*time.Millisecond, func(context.Context) {
			if calls.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return once its context ended")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("calls = %d, want 3 (none after the end)", n)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("3 calls in %v: the first must wait one interval", d)
	}
}

func TestEveryEndedBefore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	periodic.Every(ctx, time.Millisecond, func(context.Context) { t.Error("called after the end") })
}
