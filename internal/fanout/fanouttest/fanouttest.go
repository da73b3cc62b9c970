// Package fanouttest is the conformance suite of fanout.Store: every
// store that keeps the destinations' queue passes it, on its own database.
package fanouttest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
)

// Store is what the suite needs of a store: the ledger's and the
// queue's sides.
type Store interface {
	ledger.Store
	fanout.Store
}

// Run runs the suite; newStore returns a new, empty store, which the
// suite closes.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("QueueOrder", func(t *testing.T) { testQueueOrder(t, newStore(t)) })
	t.Run("Deliver", func(t *testing.T) { testDeliver(t, newStore(t)) })
	t.Run("SlowAndRedirect", func(t *testing.T) { testSlowAndRedirect(t, newStore(t)) })
	t.Run("DeadDestination", func(t *testing.T) { testDeadDestination(t, newStore(t)) })
	t.Run("Runs", func(t *testing.T) { testRuns(t, newStore(t)) })
	t.Run("BodyDestinations", func(t *testing.T) { testBodyDestinations(t, newStore(t)) })
}

// testBodyDestinations: a conversation's events whose webhooks named
// different bot user ids (foreign events) go in separate requests, one
// after the other, in the conversation's order.
func testBodyDestinations(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	var mu sync.Mutex
	var order []int64
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var cb struct {
			Events []struct {
				Timestamp int64 `json:"timestamp"`
			} `json:"events"`
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &cb)
		mu.Lock()
		defer mu.Unlock()
		for _, e := range cb.Events {
			order = append(order, e.Timestamp)
		}
	}))
	defer srv.Close()
	var items []*pipeline.Item
	now := time.Now()
	for i, bot := range []string{"U0123456789abcdef0123456789abcdef", "Uffffffffffffffffffffffffffffffff", "U0123456789abcdef0123456789abcdef", "U0123456789abcdef0123456789abcdef", "Uffffffffffffffffffffffffffffffff"} {
		body := fmt.Sprintf(`{"destination":%q,"events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01BOT%03d","source":{"type":"user","userId":"U1"},"message":{"id":"%d","type":"text","text":"hi"}}]}`, bot, i+1, i, i)
		idx := webhookRecord(t, w, body, now)
		items = append(items, &pipeline.Item{Record: idx, Channel: "c", Key: fmt.Sprintf("id:%d", idx),
			Conversation: "user:U1", Type: "message", Outcome: pipeline.OutcomeProcessed})
	}
	d := &fanout.Destination{Name: "crm", Channel: "c", URL: srv.URL, AllowHTTP: true, Secret: []byte("s")}
	f, err := fanout.New(fanout.Options{Destinations: []*fanout.Destination{d}, Store: s, Log: w, Ledger: s, Poll: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, f.Follow(items)...); err != nil {
		t.Fatal(err)
	}
	runUntilDrained(t, s, f, "crm", 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(order) != "[1 2 3 4 5]" {
		t.Errorf("delivered in the order %v, want [1 2 3 4 5]", order)
	}
}

// testRuns: a conversation's queued events go together, in order, in one
// request (up to Batch); a failed request keeps them all back, and none
// overtakes another; redeliveries and first deliveries of one
// conversation never share a request.
func testRuns(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	type got struct {
		user  string
		ts    int64
		redel bool
	}
	var mu sync.Mutex
	var bodies [][]got
	fail := 2
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			http.Error(rw, "not now", 503)
			return
		}
		var cb struct {
			Events []struct {
				Timestamp       int64                   `json:"timestamp"`
				Source          struct{ UserID string } `json:"source"`
				DeliveryContext struct {
					IsRedelivery bool `json:"isRedelivery"`
				} `json:"deliveryContext"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &cb); err != nil {
			http.Error(rw, "bad body", 400)
			return
		}
		var b []got
		for _, e := range cb.Events {
			b = append(b, got{e.Source.UserID, e.Timestamp, e.DeliveryContext.IsRedelivery})
		}
		bodies = append(bodies, b)
	}))
	defer srv.Close()
	// U1 writes 45 times, U2 3 times; then 2 of U1's are queued again as
	// redeliveries (as a replay does).
	var items []*pipeline.Item
	now := time.Now()
	for i := range 48 {
		user := "U1"
		if i%16 == 15 {
			user = "U2"
		}
		body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01RUN%03d","source":{"type":"user","userId":%q},"message":{"id":"%d","type":"text","text":"hi"}}]}`, 1000+i, i, user, i)
		idx := webhookRecord(t, w, body, now)
		items = append(items, &pipeline.Item{Record: idx, Channel: "c", Key: fmt.Sprintf("id:%d", idx),
			Conversation: "user:" + user, Type: "message", Outcome: pipeline.OutcomeProcessed})
	}
	d := &fanout.Destination{Name: "crm", Channel: "c", URL: srv.URL, AllowHTTP: true, Secret: []byte("s")}
	f, err := fanout.New(fanout.Options{Destinations: []*fanout.Destination{d}, Store: s, Log: w, Ledger: s,
		BaseDelay: 5 * time.Millisecond, MaxDelay: 10 * time.Millisecond, BreakerFailures: 100, Poll: 5 * time.Millisecond, Batch: 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, f.Follow(items)...); err != nil {
		t.Fatal(err)
	}
	var again []*fanout.Entry
	for _, it := range items[:2] {
		again = append(again, &fanout.Entry{Destination: "crm", Conversation: it.Conversation, Channel: "c", Record: it.Record,
			Key: it.Key, Type: "message", Redelivery: true})
	}
	if _, err := w.Commit(ctx, nil, fanout.Enqueue{Entries: again}); err != nil {
		t.Fatal(err)
	}
	runUntilDrained(t, s, f, "crm", 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	// In order per conversation across all bodies: U1's 45 first
	// deliveries then its 2 redeliveries; U2's 3.
	seq := map[string][]got{}
	longest := 0
	for _, b := range bodies {
		if len(b) > 20 {
			t.Errorf("a request carried %d events, over the batch of 20", len(b))
		}
		n := 0
		for i, g := range b {
			seq[g.user] = append(seq[g.user], g)
			if g.user == "U1" {
				n++
			}
			if i > 0 && b[i-1].redel != g.redel && b[i-1].user == g.user {
				t.Errorf("a redelivery and a first delivery of %s in one request", g.user)
			}
		}
		longest = max(longest, n)
	}
	if len(seq["U1"]) != 47 || len(seq["U2"]) != 3 {
		t.Fatalf("delivered U1 %d (want 47), U2 %d (want 3)", len(seq["U1"]), len(seq["U2"]))
	}
	for user, gs := range seq {
		for i := 1; i < len(gs); i++ {
			if gs[i].redel == gs[i-1].redel && gs[i].ts < gs[i-1].ts || gs[i-1].redel && !gs[i].redel {
				t.Errorf("%s out of order at %d: %+v then %+v", user, i, gs[i-1], gs[i])
			}
		}
	}
	if longest < 2 {
		t.Errorf("no request carried more than one event of U1 (longest %d): a conversation's queued events go together", longest)
	}
}

// testSlowAndRedirect: a destination that hangs until its timeout does not
// delay another, which gets every event meanwhile; a redirect is a failed
// attempt, never followed.
func testSlowAndRedirect(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	var mu sync.Mutex
	fast, followed := 0, 0
	release := make(chan struct{})
	fastSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/moved" {
			followed++
			return
		}
		var cb struct{ Events []json.RawMessage }
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &cb)
		fast += len(cb.Events)
	}))
	defer fastSrv.Close()
	slowSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slowSrv.Close()
	defer close(release)
	movedSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, fastSrv.URL+"/moved", http.StatusFound)
	}))
	defer movedSrv.Close()
	var items []*pipeline.Item
	now := time.Now()
	for i := range 20 {
		body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"follow","mode":"active","timestamp":%d,"webhookEventId":"01SLOW%03d","source":{"type":"user","userId":"U%d"},"replyToken":"rt"}]}`, now.UnixMilli(), i, i)
		idx := webhookRecord(t, w, body, now)
		items = append(items, &pipeline.Item{Record: idx, Channel: "c", Key: fmt.Sprintf("id:%d", idx),
			Conversation: fmt.Sprintf("user:U%d", i), Type: "follow", Outcome: pipeline.OutcomeProcessed})
	}
	ds := []*fanout.Destination{
		{Name: "fast", Channel: "c", URL: fastSrv.URL, AllowHTTP: true, Secret: []byte("a")},
		{Name: "slow", Channel: "c", URL: slowSrv.URL, AllowHTTP: true, Secret: []byte("b"), Timeout: 3 * time.Second},
		{Name: "moved", Channel: "c", URL: movedSrv.URL, AllowHTTP: true, Secret: []byte("c")},
	}
	f, err := fanout.New(fanout.Options{Destinations: ds, Store: s, Log: w, Ledger: s, Poll: 5 * time.Millisecond,
		BaseDelay: time.Hour, BreakerFailures: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, f.Follow(items)...); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Run(rctx); close(done) }()
	start := time.Now()
	for {
		depths, err := s.QueueDepths(ctx)
		if err != nil {
			t.Fatal(err)
		}
		heads, err := s.Heads(ctx, "moved", 100, 1)
		if err != nil {
			t.Fatal(err)
		}
		tried := 0
		for _, h := range heads {
			if h.Attempts > 0 {
				tried++
			}
		}
		if depths["fast"] == 0 && tried == 20 {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("the fast and redirected destinations waited for the slow one: %v queued, %d tried, after 2s", depths, tried)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done
	depths, _ := s.QueueDepths(ctx)
	mu.Lock()
	defer mu.Unlock()
	if fast != 20 || followed != 0 {
		t.Errorf("fast got %d of 20; the redirect was followed %d times", fast, followed)
	}
	// The slow destination had one attempt in hand (cut short at the stop,
	// and rescheduled); the redirected one failed each event once.
	if depths["slow"] != 20 || depths["moved"] != 20 {
		t.Errorf("queued after the stop: %v, want slow 20 and moved 20", depths)
	}
	heads, err := s.Heads(ctx, "moved", 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range heads {
		if h.Attempts != 1 {
			t.Errorf("moved: entry %d has %d attempts, want 1 (a 302 is a failure, retried after BaseDelay)", h.Seq, h.Attempts)
		}
	}
}

// webhookRecord commits a webhook record of channel c holding body, and
// returns its index.
func webhookRecord(t *testing.T, w *ledger.Writer, body string, now time.Time) uint64 {
	t.Helper()
	payload, _ := record.EncodePayload(&record.Meta{Channel: "c", ReceivedMs: now.UnixMilli()}, []byte(body))
	idx, err := w.Commit(context.Background(), []ledger.Entry{{Kind: ledger.KindWebhook, Time: now, Channel: "c", Payload: payload}})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// runUntilDrained runs f until destination's queue in s is empty, and
// stops it; it fails the test if that takes longer than within.
func runUntilDrained(t *testing.T, s Store, f *fanout.Fanout, destination string, within time.Duration) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { stop(); <-done }()
	for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
		depths, err := s.QueueDepths(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if depths[destination] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained: %v", depths)
		}
	}
}

func entry(dest, conv string, rec uint64) *fanout.Entry {
	return &fanout.Entry{Destination: dest, Conversation: conv, Channel: "c", Record: rec, Key: fmt.Sprintf("id:%d", rec), Type: "message"}
}

// testQueueOrder: queued entries come back as the heads of their
// conversations, in queue order; a retry changes an entry in place; a
// delivered entry leaves; an effect on an entry no longer queued is a
// conflict that writes nothing.
func testQueueOrder(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	q := []*fanout.Entry{entry("a", "user:U1", 1), entry("a", "user:U2", 2), entry("a", "user:U1", 3), entry("b", "user:U1", 4)}
	if _, err := w.Commit(ctx, nil, fanout.Enqueue{Entries: q}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(q); i++ {
		if q[i].Seq <= q[i-1].Seq {
			t.Fatalf("seqs not increasing: %d then %d", q[i-1].Seq, q[i].Seq)
		}
	}
	depths, err := s.QueueDepths(ctx)
	if err != nil || depths["a"] != 3 || depths["b"] != 1 || len(depths) != 2 {
		t.Fatalf("depths = %v, %v; want a:3 b:1", depths, err)
	}
	heads, err := s.Heads(ctx, "a", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].Record != 1 || heads[1].Record != 2 || heads[0].Conversation != "user:U1" || heads[0].Destination != "a" {
		t.Fatalf("heads of a = %+v, want records 1 and 2", heads)
	}
	// Two per conversation: U1's two, in order, and U2's one.
	heads, _ = s.Heads(ctx, "a", 10, 2)
	if len(heads) != 3 || heads[0].Record != 1 || heads[1].Record != 2 || heads[2].Record != 3 {
		t.Fatalf("heads of a, two per conversation = %+v, want records 1, 2, 3", heads)
	}
	// One conversation: U1's first two only.
	heads, _ = s.Heads(ctx, "a", 1, 5)
	if len(heads) != 2 || heads[0].Record != 1 || heads[1].Record != 3 {
		t.Fatalf("heads of a, one conversation = %+v, want records 1 and 3", heads)
	}
	if _, err := w.Commit(ctx, nil, fanout.Retry{Seq: q[0].Seq, Attempts: 2, NextMs: 12345}); err != nil {
		t.Fatal(err)
	}
	heads, _ = s.Heads(ctx, "a", 1, 1)
	if len(heads) != 1 || heads[0].Attempts != 2 || heads[0].NextMs != 12345 || heads[0].Seq != q[0].Seq {
		t.Fatalf("after a retry, heads(limit 1) = %+v", heads)
	}
	// All or none: one entry no longer queued (b's, delivered here) takes
	// the whole effect back.
	if _, err := w.Commit(ctx, nil, fanout.Delivered{Seqs: []uint64{q[3].Seq}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, fanout.Delivered{Seqs: []uint64{q[0].Seq, q[3].Seq}}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("delivering a queued entry with one that is not: %v, want ErrConflict", err)
	}
	if heads, _ = s.Heads(ctx, "a", 10, 1); len(heads) != 2 || heads[0].Record != 1 {
		t.Fatalf("a refused delivery took an entry out: heads = %+v", heads)
	}
	if _, err := w.Commit(ctx, nil, fanout.Delivered{Seqs: []uint64{q[0].Seq}}); err != nil {
		t.Fatal(err)
	}
	heads, _ = s.Heads(ctx, "a", 10, 1)
	if len(heads) != 2 || heads[0].Record != 2 || heads[1].Record != 3 {
		t.Fatalf("after delivery, heads = %+v, want records 2 and 3", heads)
	}
	n, _ := s.Count(ctx)
	payload, _ := record.Encode(&record.Meta{Channel: "c"}, &record.Outbound{Endpoint: fanout.Endpoint})
	_, err = w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindOutbound, Time: time.Now(), Channel: "c", Payload: payload}}, fanout.Delivered{Seqs: []uint64{q[0].Seq}})
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("delivering an entry twice: %v, want ErrConflict", err)
	}
	if _, err := w.Commit(ctx, nil, fanout.Retry{Seq: q[0].Seq, Attempts: 1}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("retrying a delivered entry: %v, want ErrConflict", err)
	}
	if n2, _ := s.Count(ctx); n2 != n {
		t.Fatalf("a refused effect's record was stored: count %d -> %d", n, n2)
	}
}

type hit struct {
	conv  string
	ts    int64
	token bool
}

// testDeliver runs a Fanout on the store against a server that fails at
// first: events queued with their outcomes reach it, signed, in order per
// conversation, each attempt recorded; the queue empties.
func testDeliver(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	secret := []byte("dest-secret")
	var mu sync.Mutex
	var hits []hit
	fail := 3
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, secret)
		m.Write(body)
		if r.Header.Get("x-line-signature") != base64.StdEncoding.EncodeToString(m.Sum(nil)) {
			http.Error(rw, "bad signature", 401)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			http.Error(rw, "not now", 503)
			return
		}
		var cb struct {
			Events []struct {
				Timestamp  int64  `json:"timestamp"`
				ReplyToken string `json:"replyToken"`
				Source     struct {
					UserID string `json:"userId"`
				} `json:"source"`
			} `json:"events"`
		}
		json.Unmarshal(body, &cb)
		for _, e := range cb.Events {
			hits = append(hits, hit{e.Source.UserID, e.Timestamp, e.ReplyToken != ""})
		}
		io.WriteString(rw, "ok")
	}))
	defer srv.Close()

	// Webhook records: 3 users, 4 events each, one event per request.
	var items []*pipeline.Item
	now := time.Now()
	for i := range 4 {
		for u := range 3 {
			ts := now.UnixMilli() + int64(i)
			body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01FAN%03d%03d","source":{"type":"user","userId":"U%d"},"replyToken":"rt","message":{"id":"1","type":"text","text":"hi"}}]}`, ts, u, i, u)
			idx := webhookRecord(t, w, body, now)
			it := &pipeline.Item{Record: idx, Index: 0, Channel: "c", Key: fmt.Sprintf("id:%d", idx),
				Conversation: fmt.Sprintf("user:U%d", u), Type: "message", Outcome: pipeline.OutcomeProcessed}
			if u == 1 {
				// In hand, as the pipeline has a live event: U1's are
				// handed over; the others' are read back from their
				// records, as after a restart.
				cb, err := line.ParseCallback([]byte(body))
				if err != nil {
					t.Fatal(err)
				}
				it.Event, it.Destination = cb.Events[0], cb.Destination
			}
			items = append(items, it)
		}
	}
	// One more, a duplicate: not delivered by default.
	items = append(items, &pipeline.Item{Record: items[0].Record, Channel: "c", Key: "dup", Conversation: "user:U0", Type: "message", Outcome: pipeline.OutcomeDuplicate})
	d := &fanout.Destination{Name: "crm", Channel: "c", URL: srv.URL + "/hook", AllowHTTP: true, Secret: secret, SecretID: "test"}
	f, err := fanout.New(fanout.Options{Destinations: []*fanout.Destination{d}, Store: s, Log: w, Ledger: s,
		BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond, BreakerFailures: 2, BreakerCooldown: 30 * time.Millisecond, Poll: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, f.Follow(items)...); err != nil {
		t.Fatal(err)
	}
	runUntilDrained(t, s, f, "crm", 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(hits) != 12 {
		t.Fatalf("%d events delivered, want 12", len(hits))
	}
	last := map[string]int64{}
	for _, h := range hits {
		if h.ts < last[h.conv] {
			t.Errorf("conversation %s out of order", h.conv)
		}
		last[h.conv] = h.ts
		if h.token {
			t.Errorf("a destination that does not own the reply token got one")
		}
	}
	// Every attempt is a record: 12 delivered and the 3 failed ones.
	n, _ := s.Count(ctx)
	delivered, failed := 0, 0
	for rec, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var l ledger.Leaf
		if l.UnmarshalBinary(rec.Leaf) != nil || l.Kind != ledger.KindOutbound {
			continue
		}
		_, b, err := record.Decode(record.KindOutbound, rec.Payload)
		if err != nil {
			t.Fatal(err)
		}
		o := b.(*record.Outbound)
		if o.Endpoint != fanout.Endpoint || o.Destination != "crm" {
			t.Errorf("attempt record %+v", o)
		}
		switch o.Outcome {
		case "delivered":
			delivered += max(1, len(o.Events)) // events delivered
			if o.Status != 200 || o.ResponseBytes != 2 || o.ResponseSHA256 == "" {
				t.Errorf("delivered record without its answer's status, size and hash: %+v", o)
			}
		case "failed":
			failed++ // requests failed: the server failed 3
			if o.Status != 503 {
				t.Errorf("failed record status %d", o.Status)
			}
		}
	}
	if delivered != 12 || failed != 3 {
		t.Errorf("records: %d events delivered, %d requests failed; want 12 and 3", delivered, failed)
	}
}

// testDeadDestination: a destination that never answers (a closed port),
// its worker run through a day of a clock that moves a minute at a time,
// is attempted a bounded number of times, each attempt one failed record:
// the breaker's probes back off up to an hour. The queue keeps every
// event. (At a fixed 30s cooldown, every minute of the day had one.)
func testDeadDestination(t *testing.T, s Store) {
	defer s.Close()
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	var items []*pipeline.Item
	for i := range 3 {
		body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"follow","mode":"active","timestamp":%d,"webhookEventId":"01DEAD%03d","source":{"type":"user","userId":"U%d"}}]}`, now.UnixMilli(), i, i)
		idx := webhookRecord(t, w, body, now)
		items = append(items, &pipeline.Item{Record: idx, Channel: "c", Key: fmt.Sprintf("id:%d", idx),
			Conversation: fmt.Sprintf("user:U%d", i), Type: "follow", Outcome: pipeline.OutcomeProcessed})
	}
	d := &fanout.Destination{Name: "dead", Channel: "c", URL: "http://" + addr + "/hook", AllowHTTP: true, Secret: []byte("s"), Timeout: time.Second}
	f, err := fanout.New(fanout.Options{Destinations: []*fanout.Destination{d}, Store: s, Log: w, Ledger: s,
		Poll: time.Millisecond, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, nil, f.Follow(items)...); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Run(rctx); close(done) }()
	for range 24 * 60 {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
	}
	stop()
	<-done
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	for rec, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var l ledger.Leaf
		if l.UnmarshalBinary(rec.Leaf) != nil || l.Kind != ledger.KindOutbound {
			continue
		}
		_, b, err := record.Decode(record.KindOutbound, rec.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if o := b.(*record.Outbound); o.Outcome != "failed" || o.Destination != "dead" {
			t.Errorf("attempt record: %+v", o)
		}
		attempts++
	}
	// 5 attempts open the breaker; then probes 30s, 1m ... 32m apart (a
	// minute at least here), then hourly: 34 a day, give or take the
	// clock's minute steps.
	t.Logf("%d attempt records in a day", attempts)
	if attempts < 25 || attempts > 40 {
		t.Errorf("%d attempt records in a day of a dead destination, want about 34", attempts)
	}
	if depths, err := s.QueueDepths(ctx); err != nil || depths["dead"] != 3 {
		t.Errorf("queue after a day: %v, %v; want the 3 events kept", depths, err)
	}
}
