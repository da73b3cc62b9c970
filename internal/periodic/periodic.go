// Package periodic runs a function at a fixed interval until its context
// ends: the one loop behind linegate's background jobs (switch refreshes,
// rejection summaries, dedup and cooldown expiry, claim renewals, purges,
// the subject index, rule reload watching, WAL checkpoints) and the CLI's
// polls (serve's watch of its parent, tail). Each job lives with the
// package whose work it does and calls Every; main only starts it and
// stops it with its context.
//
// Loops that also wake on a signal of their own (the ledger's sequencer
// and the pipeline's dispatcher, kicked by appends) or that sleep until a
// time of day (the ledger's anchors) keep their own select.
package periodic

import (
	"context"
	"time"
)

// Every calls fn every interval, the first time one interval from now,
// until ctx ends, and returns then. A call that overruns the interval
// delays the next one; ticks missed meanwhile are dropped, not queued.
// fn gets ctx, and should return soon once it ends.
func Every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A tick and the end may come together: the end wins.
		if ctx.Err() != nil {
			return
		}
		fn(ctx)
	}
}
