package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
)

// sharedAction records which process handled which event, in order.
type sharedAction struct {
	owner string
	mu    *sync.Mutex
	seen  map[string][]string // event key -> owners
	convs map[string][]int64  // conversation -> timestamps, in handling order
}

func (a *sharedAction) Handle(_ context.Context, it *pipeline.Item, e *line.Event) error {
	time.Sleep(time.Millisecond) // work, so that both processes get some
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen[it.Key] = append(a.seen[it.Key], a.owner)
	a.convs[it.Conversation] = append(a.convs[it.Conversation], e.Timestamp)
	return nil
}

// TestSharedPipeline runs two pipelines (two replicas) on one database:
// every event is handled once, by one of them, each conversation in
// order, duplicates are caught across them, and both take work.
func TestSharedPipeline(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	var stores []*pgstore.Store
	for range 2 {
		s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	const users, perUser = 20, 15
	now := time.Now()
	var recs []ledger.Record
	for i := range perUser {
		for u := range users {
			ts := now.UnixMilli() + int64(i)
			body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01SHR%09d%012d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U%d"},"replyToken":"r","message":{"id":"%d","type":"text","text":"hi","quoteToken":"q"}}]}`,
				ts, u, i, u, u*1000+i)
			payload, err := record.EncodePayload(&record.Meta{Channel: "c", ReceivedMs: now.UnixMilli()}, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			rec, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: now, Channel: "c", Payload: payload})
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
			if u == 0 && i == 0 {
				// The same event delivered twice: a record of its own
				// (a new nonce, as every append has), not a copy.
				again, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: now, Channel: "c", Payload: payload})
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, again)
			}
		}
	}
	mu := &sync.Mutex{}
	seen, convs := map[string][]string{}, map[string][]int64{}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var pipes []*pipeline.Pipeline
	for i, s := range stores {
		p := pipeline.New(pipeline.Options{Ledger: s, Store: s, Claimer: s, DispatchLease: s.DispatchLease(),
			Owner: fmt.Sprintf("replica-%d", i), Poll: 5 * time.Millisecond, Linger: time.Millisecond, Workers: 4,
			Action:   &sharedAction{owner: fmt.Sprintf("replica-%d", i), mu: mu, seen: seen, convs: convs},
			Channels: map[string]pipeline.ChannelPolicy{"c": {}}})
		pipes = append(pipes, p)
		wg.Go(func() {
			if err := p.Run(pctx); err != nil {
				t.Error(err)
			}
		})
	}
	// Appended in several batches while the pipelines run.
	for start := 0; start < len(recs); start += 37 {
		if _, err := stores[start%2].Append(ctx, recs[start:min(len(recs), start+37)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		idle, err := pipes[0].Idle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never idle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()

	owners := map[string]int{}
	for key, by := range seen {
		if len(by) != 1 {
			t.Errorf("event %s handled %d times (%v)", key, len(by), by)
		}
		owners[by[0]]++
	}
	if len(seen) != users*perUser {
		t.Errorf("%d events handled, want %d", len(seen), users*perUser)
	}
	if len(owners) != 2 {
		t.Errorf("work by owner: %v, want both", owners)
	}
	for conv, ts := range convs {
		for i := 1; i < len(ts); i++ {
			if ts[i] < ts[i-1] {
				t.Errorf("conversation %s out of order: %v", conv, ts)
				break
			}
		}
	}
	// Every event has exactly one outcome record, the duplicate included.
	n, err := stores[0].Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes int
	for rec, err := range stores[0].Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		if err := leaf.UnmarshalBinary(rec.Leaf); err != nil {
			t.Fatal(err)
		}
		if leaf.Kind == ledger.KindEvent {
			outcomes++
		}
	}
	if outcomes != users*perUser+1 {
		t.Errorf("%d outcome records, want %d", outcomes, users*perUser+1)
	}
}
