package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/periodic"
)

// Claimer shares the queue among processes on one database (several
// gateway replicas). Declared here, by its consumer; the PostgreSQL store
// implements it with FOR UPDATE SKIP LOCKED.
type Claimer interface {
	// Claim takes, for owner until until, the queued items of up to limit
	// conversations whose first queued item no live claim holds, every
	// queued item of each (so that one process handles a conversation's
	// events, in Seq order), and returns them in Seq order. A claim
	// expires at until unless renewed; then another process takes the
	// conversation over.
	Claim(ctx context.Context, owner string, limit int, now, until time.Time) ([]*Item, error)
	// Renew extends owner's claims to until.
	Renew(ctx context.Context, owner string, until time.Time) error
	// Claimed items are completed with the effect Dequeue{Owner: owner}.
}

// claimKick wakes the claimer.
func (p *Pipeline) claimKick() {
	select {
	case p.claimWake <- struct{}{}:
	default:
	}
}

// maxInFlight bounds the events a process has claimed and not completed.
func (p *Pipeline) maxInFlight() int64 { return int64(p.o.Workers) * 16 }

// claimer claims queued events and hands them to the workers.
func (p *Pipeline) claimer(ctx context.Context, workers []chan *Item) {
	for p.wait(ctx, p.claimWake) {
		for ctx.Err() == nil {
			room := p.maxInFlight() - p.inQueue.Load()
			if room <= 0 {
				break
			}
			// As many conversations as there are workers at a time, so
			// that the other processes get the rest.
			now := p.o.Now()
			items, err := p.o.Claimer.Claim(ctx, p.o.Owner, int(min(room, int64(p.o.Workers))), now, now.Add(p.o.ClaimFor))
			if err != nil {
				if ctx.Err() == nil {
					p.log.Error("pipeline: claim", "err", err)
				}
				break
			}
			if len(items) == 0 {
				break
			}
			p.inQueue.Add(int64(len(items)))
			for _, it := range items {
				p.loadEvent(ctx, it)
				if !p.route(ctx, workers, it) {
					return
				}
			}
		}
	}
}

// renewer keeps this process's claims alive while it runs.
func (p *Pipeline) renewer(ctx context.Context) {
	periodic.Every(ctx, p.o.ClaimFor/3, func(ctx context.Context) {
		if err := p.o.Claimer.Renew(ctx, p.o.Owner, p.o.Now().Add(p.o.ClaimFor)); err != nil && ctx.Err() == nil {
			p.log.Error("pipeline: renew claims", "err", err)
		}
	})
}

// completeClaimed records outcomes of claimed items. Items whose claim was
// lost (this process stalled past ClaimFor and another took them over) are
// dropped here: their new owner records them.
func (p *Pipeline) completeClaimed(ctx context.Context, items []*Item, seqs []uint64, recs []ledger.Entry) error {
	_, err := p.o.Log.Commit(ctx, recs, append([]ledger.Effect{Dequeue{Seqs: seqs, Owner: p.o.Owner}}, p.follow(items)...)...)
	if !errors.Is(err, ledger.ErrConflict) || len(seqs) == 1 {
		if errors.Is(err, ledger.ErrConflict) {
			p.log.Warn("pipeline: an event's claim was lost to another process; it records the outcome", "seq", seqs[0])
			return nil
		}
		return err
	}
	for i := range seqs {
		if err := p.completeClaimed(ctx, items[i:i+1], seqs[i:i+1], recs[i:i+1]); err != nil {
			return err
		}
	}
	return nil
}
