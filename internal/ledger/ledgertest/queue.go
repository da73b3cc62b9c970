package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
)

func pipelineStore(t *testing.T, s ledger.Store) pipeline.Store {
	ps, ok := s.(pipeline.Store)
	if !ok {
		t.Skip("the store keeps no pipeline queue")
	}
	return ps
}

// item returns a queue item with every stored field set.
func item(key, messageKey, conversation string) *pipeline.Item {
	return &pipeline.Item{Key: key, MessageKey: messageKey, Record: 7, Index: 1, Channel: "c", Destination: "Ubot",
		Retention: "r", Conversation: conversation, Subjects: []string{"user:U1"}, Type: "message",
		ReceivedMs: t0.UnixMilli(), Outcome: pipeline.OutcomeProcess, Header: map[string]string{"X-Line-Retry-Key": "k"}}
}

// enqueue enqueues items, moving the cursor to next.
func enqueue(t *testing.T, ps pipeline.Store, next uint64, now time.Time, items ...*pipeline.Item) []*pipeline.Item {
	t.Helper()
	if err := ps.Enqueue(context.Background(), next, items, now); err != nil {
		t.Fatalf("Enqueue(%d): %v", next, err)
	}
	return items
}

func pending(t *testing.T, ps pipeline.Store) []*pipeline.Item {
	t.Helper()
	items, err := ps.Pending(context.Background(), 0, 1000)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return items
}

func seqs(items []*pipeline.Item) []uint64 {
	var out []uint64
	for _, it := range items {
		out = append(out, it.Seq)
	}
	return out
}

func queueDepth(t *testing.T, ps pipeline.Store, want int64) {
	t.Helper()
	if n, err := ps.QueueDepth(context.Background()); err != nil || n != want {
		t.Errorf("QueueDepth = %d, %v; want %d", n, err, want)
	}
}

// testCursor: the cursor starts at 0 and only moves forward; an Enqueue
// from a stale cursor fails with ErrConflict and writes nothing: neither
// items nor dedup keys.
func testCursor(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	if c, err := ps.Cursor(ctx); err != nil || c != 0 {
		t.Errorf("Cursor of a new store = %d, %v; want 0", c, err)
	}
	enqueue(t, ps, 5, t0)
	if c, err := ps.Cursor(ctx); err != nil || c != 5 {
		t.Errorf("Cursor = %d, %v; want 5", c, err)
	}
	for _, next := range []uint64{5, 3, 0} {
		err := ps.Enqueue(ctx, next, []*pipeline.Item{item("id:a", "msg:c:a", "")}, t0)
		if !errors.Is(err, ledger.ErrConflict) {
			t.Errorf("Enqueue(%d) with the cursor at 5: err = %v, want ErrConflict", next, err)
		}
	}
	if c, err := ps.Cursor(ctx); err != nil || c != 5 {
		t.Errorf("Cursor after refused Enqueues = %d, %v; want 5", c, err)
	}
	queueDepth(t, ps, 0)
	// The refused items' keys were not claimed.
	got := enqueue(t, ps, 6, t0, item("id:a", "msg:c:a", ""))
	if got[0].Outcome != pipeline.OutcomeProcess || len(got[0].Flags) != 0 {
		t.Errorf("an item refused before is now %s %v; want it fresh", got[0].Outcome, got[0].Flags)
	}
	queueDepth(t, ps, 1)
}

// testEnqueueDedup: a Key claimed before (earlier or in the same Enqueue)
// makes a duplicate; a MessageKey claimed before, a flag; a duplicate's
// MessageKey is not claimed.
func testEnqueueDedup(t *testing.T, h StateHarness) {
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	first := enqueue(t, ps, 1, t0, item("id:1", "msg:c:1", ""), item("sha256:x", "", ""))
	for _, it := range first {
		if it.Outcome != pipeline.OutcomeProcess || it.Flags != nil || it.Seq == 0 {
			t.Errorf("fresh item %s = outcome %s, flags %v, seq %d", it.Key, it.Outcome, it.Flags, it.Seq)
		}
	}
	if first[1].Seq <= first[0].Seq {
		t.Errorf("Seqs %d, %d: not increasing in the order given", first[0].Seq, first[1].Seq)
	}
	second := enqueue(t, ps, 2, t0,
		item("id:1", "msg:c:9", ""),  // the same event again
		item("sha256:x", "", ""),     // the same content again
		item("id:2", "msg:c:1", ""),  // a new event of a message seen before
		item("id:3", "msg:c:3", ""),  // new
		item("id:3", "msg:c:3b", ""), // twice in one Enqueue
		item("id:4", "msg:c:4", ""),  // new
		item("id:5", "msg:c:4", ""))  // its message twice in one Enqueue
	want := []struct {
		outcome pipeline.Outcome
		reason  string
		flags   []string
	}{
		{pipeline.OutcomeDuplicate, "event already received (same webhookEventId)", nil},
		{pipeline.OutcomeDuplicate, "event already received (same content)", nil},
		{pipeline.OutcomeProcess, "", []string{"duplicate_message_id"}},
		{pipeline.OutcomeProcess, "", nil},
		{pipeline.OutcomeDuplicate, "event already received (same webhookEventId)", nil},
		{pipeline.OutcomeProcess, "", nil},
		{pipeline.OutcomeProcess, "", []string{"duplicate_message_id"}},
	}
	for i, w := range want {
		it := second[i]
		if it.Outcome != w.outcome || it.Reason != w.reason || !slices.Equal(it.Flags, w.flags) {
			t.Errorf("item %d (%s, %s) = %s %q %v; want %s %q %v", i, it.Key, it.MessageKey, it.Outcome, it.Reason, it.Flags, w.outcome, w.reason, w.flags)
		}
	}
	// A duplicate's MessageKey (msg:c:9, msg:c:3b) was not claimed.
	third := enqueue(t, ps, 3, t0, item("id:6", "msg:c:9", ""), item("id:7", "msg:c:3b", ""))
	for _, it := range third {
		if it.Outcome != pipeline.OutcomeProcess || it.Flags != nil {
			t.Errorf("item %s with a duplicate's message key = %s %v; want fresh", it.Key, it.Outcome, it.Flags)
		}
	}
	// Duplicates are queued too, with their outcome, as given.
	all := slices.Concat(first, second, third)
	got := pending(t, ps)
	if len(got) != len(all) {
		t.Fatalf("Pending = %d items, want %d", len(got), len(all))
	}
	for i := range all {
		if !reflect.DeepEqual(got[i], all[i]) {
			t.Errorf("Pending item %d = %+v, want %+v", i, got[i], all[i])
		}
	}
}

// testEnqueueConcurrent: dispatchers enqueueing the same events at once,
// each from the cursor it read (retrying on ErrConflict): every event is
// fresh exactly once.
func testEnqueueConcurrent(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	const writers, rounds, per = 4, 10, 5
	var mu sync.Mutex
	fresh := map[string]int{}
	dups := map[string]int{}
	var allSeqs []uint64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for r := range rounds {
				var items []*pipeline.Item
				for {
					items = nil
					for k := range per {
						items = append(items, item(fmt.Sprintf("id:%d-%d", r, k), fmt.Sprintf("msg:c:%d-%d", r, k), ""))
					}
					c, err := ps.Cursor(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					err = ps.Enqueue(ctx, c+1, items, t0)
					if errors.Is(err, ledger.ErrConflict) {
						continue
					}
					if err != nil {
						t.Errorf("Enqueue: %v", err)
						return
					}
					break
				}
				mu.Lock()
				for _, it := range items {
					allSeqs = append(allSeqs, it.Seq)
					switch {
					case it.Outcome == pipeline.OutcomeProcess && it.Flags == nil:
						fresh[it.Key]++
					case it.Outcome == pipeline.OutcomeDuplicate:
						dups[it.Key]++
					default:
						t.Errorf("item %s = %s %v", it.Key, it.Outcome, it.Flags)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(fresh) != rounds*per {
		t.Errorf("%d keys fresh, want %d", len(fresh), rounds*per)
	}
	for k, n := range fresh {
		if n != 1 || dups[k] != writers-1 {
			t.Errorf("key %s: fresh %d times, duplicate %d times; want once and %d times", k, n, dups[k], writers-1)
		}
	}
	slices.Sort(allSeqs)
	if len(slices.Compact(allSeqs)) != writers*rounds*per {
		t.Errorf("Seqs assigned twice: %d distinct of %d items", len(slices.Compact(allSeqs)), writers*rounds*per)
	}
	queueDepth(t, ps, writers*rounds*per)
}

// testPending: items with Seq > after, in Seq order, up to limit.
func testPending(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	var all []*pipeline.Item
	for b := range 2 {
		var items []*pipeline.Item
		for k := range 5 {
			items = append(items, item(fmt.Sprintf("id:%d-%d", b, k), "", fmt.Sprintf("user:U%d", k%2)))
		}
		all = append(all, enqueue(t, ps, uint64(b+1), t0, items...)...)
	}
	got := pending(t, ps)
	if !slices.IsSorted(seqs(got)) || !slices.Equal(seqs(got), seqs(all)) {
		t.Fatalf("Pending Seqs = %v, want %v in order", seqs(got), seqs(all))
	}
	for _, c := range []struct {
		after uint64
		limit int
		want  []*pipeline.Item
	}{
		{0, 3, all[:3]},
		{all[2].Seq, 3, all[3:6]},
		{all[2].Seq + 0, 100, all[3:]},
		{all[8].Seq, 5, all[9:]},
		{all[9].Seq, 5, nil},
		{0, 0, nil},
	} {
		got, err := ps.Pending(ctx, c.after, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs(got), seqs(c.want)) {
			t.Errorf("Pending(%d, %d) = %v, want %v", c.after, c.limit, seqs(got), seqs(c.want))
		}
	}
	queueDepth(t, ps, 10)
}

// testForgetKeys: dedup keys claimed before t are forgotten (and counted):
// their events are fresh again; later ones are kept.
func testForgetKeys(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	enqueue(t, ps, 1, t0, item("id:a", "msg:c:a", ""), item("id:b", "", ""))
	enqueue(t, ps, 2, t0.Add(time.Minute), item("id:c", "msg:c:c", ""))
	if n, err := ps.ForgetKeys(ctx, t0); err != nil || n != 0 {
		t.Errorf("ForgetKeys(t0) = %d, %v; want 0: keys claimed at t0 are not before t0", n, err)
	}
	if n, err := ps.ForgetKeys(ctx, t0.Add(time.Millisecond)); err != nil || n != 3 {
		t.Errorf("ForgetKeys(t0+1ms) = %d, %v; want 3 (id:a, msg:c:a, id:b)", n, err)
	}
	got := enqueue(t, ps, 3, t0.Add(2*time.Minute), item("id:a", "msg:c:a", ""), item("id:c", "msg:c:c", ""))
	if got[0].Outcome != pipeline.OutcomeProcess || got[0].Flags != nil {
		t.Errorf("a forgotten event = %s %v; want fresh", got[0].Outcome, got[0].Flags)
	}
	if got[1].Outcome != pipeline.OutcomeDuplicate {
		t.Errorf("a kept event = %s; want a duplicate", got[1].Outcome)
	}
	if n, err := ps.ForgetKeys(ctx, t0.Add(time.Hour)); err != nil || n != 4 {
		t.Errorf("ForgetKeys(t0+1h) = %d, %v; want 4", n, err)
	}
	queueDepth(t, ps, 5) // forgetting keys dequeues nothing
}

// testDequeueEffect: Dequeue removes the items with the records appended
// with it.
func testDequeueEffect(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	items := enqueue(t, ps, 1, t0, item("id:1", "", ""), item("id:2", "", ""), item("id:3", "", ""), item("id:4", "", ""))
	queueDepth(t, ps, 4)
	first := appendWith(t, s, pipeline.Dequeue{Seqs: []uint64{items[0].Seq, items[2].Seq}})
	if n, err := s.Count(ctx); err != nil || n != first+1 {
		t.Errorf("Count = %d, %v; want the outcome record stored", n, err)
	}
	queueDepth(t, ps, 2)
	if got := seqs(pending(t, ps)); !slices.Equal(got, []uint64{items[1].Seq, items[3].Seq}) {
		t.Errorf("Pending after Dequeue = %v, want %v", got, []uint64{items[1].Seq, items[3].Seq})
	}
	// Several outcome records with one Dequeue; the cursor is the
	// dispatcher's, and does not move.
	if _, err := s.Append(ctx, records(0, 2), pipeline.Dequeue{Seqs: []uint64{items[1].Seq, items[3].Seq}}); err != nil {
		t.Fatal(err)
	}
	queueDepth(t, ps, 0)
	if c, err := ps.Cursor(ctx); err != nil || c != 1 {
		t.Errorf("Cursor = %d, %v; want 1", c, err)
	}
}

// testDequeueAtomic: an Append whose later effect fails leaves neither its
// records nor the dequeue.
func testDequeueAtomic(t *testing.T, h StateHarness) {
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	items := enqueue(t, ps, 1, t0, item("id:1", "", ""), item("id:2", "", ""))
	appendN(t, s, 3)
	d := pipeline.Dequeue{Seqs: []uint64{items[0].Seq}}
	refused(t, s, ledger.ErrUnsupportedEffect, d, unknownEffect{})
	queueDepth(t, ps, 2)
	if _, ok := s.(retention.Store); ok {
		refused(t, s, ledger.ErrNotFound, d, retention.ReleaseHold{ID: 12345, At: t0})
		queueDepth(t, ps, 2)
	}
	if got := seqs(pending(t, ps)); !slices.Equal(got, seqs(items)) {
		t.Errorf("Pending after refused Appends = %v, want %v", got, seqs(items))
	}
}

// testDequeueOwner: a store that is a pipeline.Claimer dequeues with an
// Owner only the items that owner still claims, and otherwise fails with
// ErrConflict, writing nothing; a store that has no claims refuses an
// Owner (ErrUnsupportedEffect), writing nothing.
func testDequeueOwner(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	items := enqueue(t, ps, 1, t0, item("id:1", "", "user:U1"), item("id:2", "", "user:U2"))
	cl, ok := s.(pipeline.Claimer)
	if !ok {
		refused(t, s, ledger.ErrUnsupportedEffect, pipeline.Dequeue{Seqs: []uint64{items[0].Seq}, Owner: "a"})
		queueDepth(t, ps, 2)
		return
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	claim := func(owner string, now, until time.Duration) []uint64 {
		t.Helper()
		got, err := cl.Claim(ctx, owner, 10, at(now), at(until))
		if err != nil {
			t.Fatalf("Claim(%s): %v", owner, err)
		}
		return seqs(got)
	}
	if got := claim("a", 0, time.Minute); !slices.Equal(got, seqs(items)) {
		t.Fatalf("Claim(a) = %v, want %v", got, seqs(items))
	}
	if got := claim("b", time.Second, time.Minute); got != nil {
		t.Errorf("Claim(b) of items a claims = %v, want none", got)
	}
	t.Run("not the owner", func(t *testing.T) {
		refused(t, s, ledger.ErrConflict, pipeline.Dequeue{Seqs: []uint64{items[0].Seq}, Owner: "b"})
		queueDepth(t, ps, 2)
	})
	t.Run("the owner", func(t *testing.T) {
		appendWith(t, s, pipeline.Dequeue{Seqs: []uint64{items[0].Seq}, Owner: "a"})
		queueDepth(t, ps, 1)
	})
	t.Run("a claim lost", func(t *testing.T) {
		// a's claim expires; b takes the item over.
		if got := claim("b", 2*time.Minute, 3*time.Minute); !slices.Equal(got, []uint64{items[1].Seq}) {
			t.Fatalf("Claim(b) after a's claim expired = %v, want %v", got, items[1].Seq)
		}
		refused(t, s, ledger.ErrConflict, pipeline.Dequeue{Seqs: []uint64{items[1].Seq}, Owner: "a"})
		queueDepth(t, ps, 1)
		// Partly claimed: all or nothing.
		refused(t, s, ledger.ErrConflict, pipeline.Dequeue{Seqs: []uint64{items[0].Seq, items[1].Seq}, Owner: "b"})
		queueDepth(t, ps, 1)
	})
	t.Run("renewed", func(t *testing.T) {
		if err := cl.Renew(ctx, "b", at(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got := claim("c", 30*time.Minute, time.Hour); got != nil {
			t.Errorf("Claim(c) of a renewed claim = %v, want none", got)
		}
		if got := claim("c", 2*time.Hour, 3*time.Hour); !slices.Equal(got, []uint64{items[1].Seq}) {
			t.Errorf("Claim(c) after the renewed claim expired = %v, want %v", got, items[1].Seq)
		}
		appendWith(t, s, pipeline.Dequeue{Seqs: []uint64{items[1].Seq}, Owner: "c"})
		queueDepth(t, ps, 0)
	})
}

// testClaimConversations: a Claimer takes conversations whole, in Seq
// order, up to limit conversations, never one another live claim holds.
func testClaimConversations(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	ps := pipelineStore(t, s)
	cl, ok := s.(pipeline.Claimer)
	if !ok {
		t.Skip("the store has no claims")
	}
	items := enqueue(t, ps, 1, t0, item("id:x1", "", "user:X"), item("id:y1", "", "user:Y"), item("id:x2", "", "user:X"), item("id:z1", "", ""))
	got, err := cl.Claim(ctx, "a", 1, t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{items[0].Seq, items[2].Seq}; !slices.Equal(seqs(got), want) {
		t.Errorf("Claim(a, 1 conversation) = %v, want %v (conversation X whole)", seqs(got), want)
	}
	for i, it := range got {
		if want := []*pipeline.Item{items[0], items[2]}; i < len(want) && !reflect.DeepEqual(it, want[i]) {
			t.Errorf("claimed item %d = %+v, want %+v", i, it, want[i])
		}
	}
	got, err = cl.Claim(ctx, "b", 10, t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{items[1].Seq, items[3].Seq}; !slices.Equal(seqs(got), want) {
		t.Errorf("Claim(b) = %v, want %v", seqs(got), want)
	}
	// X's first item done: its second stays a's.
	appendWith(t, s, pipeline.Dequeue{Seqs: []uint64{items[0].Seq}, Owner: "a"})
	if got, err := cl.Claim(ctx, "c", 10, t0.Add(time.Second), t0.Add(time.Minute)); err != nil || len(got) != 0 {
		t.Errorf("Claim(c) while every conversation is claimed = %v, %v; want none", seqs(got), err)
	}
}

// testPipelineDurable: the cursor, the queue and the dedup memory survive
// a reopen.
func testPipelineDurable(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := h.New(t)
	ps := pipelineStore(t, s)
	items := enqueue(t, ps, 4, t0, item("id:1", "msg:c:1", ""), item("id:2", "", ""))
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	ps = pipelineStore(t, s)
	if c, err := ps.Cursor(ctx); err != nil || c != 4 {
		t.Errorf("Cursor after reopen = %d, %v; want 4", c, err)
	}
	got := pending(t, ps)
	if len(got) != 2 || !reflect.DeepEqual(got[0], items[0]) || !reflect.DeepEqual(got[1], items[1]) {
		t.Errorf("Pending after reopen = %+v, want %+v", got, items)
	}
	again := enqueue(t, ps, 5, t0, item("id:1", "", ""), item("id:3", "msg:c:1", ""))
	if again[0].Outcome != pipeline.OutcomeDuplicate || !slices.Equal(again[1].Flags, []string{"duplicate_message_id"}) {
		t.Errorf("dedup memory after reopen: %s, %v; want a duplicate and a flag", again[0].Outcome, again[1].Flags)
	}
}
