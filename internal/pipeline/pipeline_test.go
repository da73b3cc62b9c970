package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
	"github.com/prometheus/client_golang/prometheus"
)

// countingAction records every call, in order.
type countingAction struct {
	mu    sync.Mutex
	calls []string // event keys
	convs map[string][]int64
}

func (a *countingAction) Handle(_ context.Context, it *pipeline.Item, e *line.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, it.Key)
	if a.convs == nil {
		a.convs = map[string][]int64{}
	}
	a.convs[it.Conversation] = append(a.convs[it.Conversation], e.Timestamp)
	return nil
}

func (a *countingAction) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, k := range a.calls {
		if k == key {
			n++
		}
	}
	return n
}

type fixture struct {
	t       testing.TB
	sealer  ledger.Sealer // nil: records stored as they are
	store   *sqlitestore.Store
	now     time.Time
	action  *countingAction
	policy  pipeline.ChannelPolicy
	horizon time.Duration
	// other channels' policies, beside "c" (policy)
	channels map[string]pipeline.ChannelPolicy
	// metrics of the last run
	metrics *prometheus.Registry
	// completed, if set, is the pipeline's Completed hook
	completed func(items []*pipeline.Item, first uint64)
}

func newFixture(t testing.TB) *fixture {
	s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{t: t, store: s, now: time.UnixMilli(1700000000000), action: &countingAction{}}
}

// webhook appends a webhook record as ingress would, received at
// f.now + offset.
func (f *fixture) webhook(body string, offset time.Duration) {
	f.t.Helper()
	f.webhookTo("c", body, offset)
}

// webhookTo appends a webhook record of channel.
func (f *fixture) webhookTo(channel, body string, offset time.Duration) {
	f.t.Helper()
	recv := f.now.Add(offset)
	payload, err := record.EncodePayload(&record.Meta{Channel: channel, ReceivedMs: recv.UnixMilli()}, []byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	rec, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: recv, Channel: channel, Payload: payload})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.Append(context.Background(), []ledger.Record{rec}); err != nil {
		f.t.Fatal(err)
	}
}

// run runs a pipeline until everything is processed.
func (f *fixture) run() {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	channels := map[string]pipeline.ChannelPolicy{"c": f.policy}
	for ch, pol := range f.channels {
		channels[ch] = pol
	}
	p := pipeline.New(pipeline.Options{Ledger: f.store, Sealer: f.sealer, Store: f.store, Action: f.action, Poll: 5 * time.Millisecond, DedupHorizon: f.horizon,
		Channels: channels, Now: func() time.Time { return f.now }, Completed: f.completed})
	f.metrics = prometheus.NewRegistry()
	f.metrics.MustRegister(p.Collectors()...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			f.t.Error(err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		idle, err := p.Idle(context.Background())
		if err != nil {
			f.t.Fatal(err)
		}
		if idle {
			break
		}
		if time.Now().After(deadline) {
			f.t.Fatal("pipeline never idle")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

type outcome struct {
	Record  uint64
	Index   int
	Key     string
	Type    string
	Outcome string
	Reason  string
	Flags   []string
}

func (f *fixture) outcomes() []outcome {
	f.t.Helper()
	ctx := context.Background()
	n, err := f.store.Count(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []outcome
	for r, err := range f.store.Records(ctx, 0, n) {
		if err != nil {
			f.t.Fatal(err)
		}
		var leaf ledger.Leaf
		if err := leaf.UnmarshalBinary(r.Leaf); err != nil {
			f.t.Fatal(err)
		}
		if leaf.Kind != ledger.KindEvent {
			continue
		}
		var o outcome
		_, b, err := record.DecodePayload(r.Payload)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := json.Unmarshal(b, &o); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b outcome) int {
		if a.Record != b.Record {
			return int(a.Record) - int(b.Record)
		}
		return a.Index - b.Index
	})
	return out
}

func event(typ, id string, ts int64, extra string) string {
	idPart := ""
	if id != "" {
		idPart = `"webhookEventId":"` + id + `","deliveryContext":{"isRedelivery":false},`
	}
	return `{"type":"` + typ + `","mode":"active","timestamp":` + fmt.Sprint(ts) + `,` + idPart + `"source":{"type":"user","userId":"U1"}` + extra + `}`
}

func text(id, msgID, s string, ts int64) string {
	return event("message", id, ts, `,"replyToken":"tok`+id+`","message":{"id":"`+msgID+`","type":"text","text":"`+s+`","quoteToken":"q"}`)
}

func body(events ...string) string {
	return `{"destination":"U0123456789abcdef0123456789abcdef","events":[` + strings.Join(events, ",") + `]}`
}

func TestBatchWithBadEvents(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	f.webhook(body(
		text("01A", "1", "hello", ts),
		event("postback", "01B", ts, `,"replyToken":"r","postback":{}`), // malformed: no data
		event("greatNewFeature", "01C", ts, ``),                         // unknown
		event("follow", "01D", ts, `,"replyToken":"r","follow":{"isUnblocked":false}`),
	), 0)
	f.run()
	got := f.outcomes()
	want := []string{"processed", "quarantined", "unknown", "processed"}
	if len(got) != 4 {
		t.Fatalf("outcomes %+v", got)
	}
	for i, o := range got {
		if o.Outcome != want[i] {
			t.Errorf("event %d: %s (%s), want %s", i, o.Outcome, o.Reason, want[i])
		}
	}
	if !strings.Contains(got[1].Reason, "postback.data") || !strings.Contains(got[2].Reason, "greatNewFeature") {
		t.Errorf("reasons: %q, %q", got[1].Reason, got[2].Reason)
	}
	if len(f.action.calls) != 2 {
		t.Errorf("action called %d times, want 2", len(f.action.calls))
	}
}

func TestNotACallback(t *testing.T) {
	f := newFixture(t)
	f.webhook(`{"hello":"world"}`, 0)
	f.webhook(body(), 0) // the console's Verify: no events, no outcome
	f.run()
	got := f.outcomes()
	if len(got) != 1 || got[0].Outcome != "quarantined" {
		t.Errorf("outcomes %+v", got)
	}
}

// TestRedelivery: the same event twice, in two requests, the second marked
// isRedelivery, is processed once; a third copy after a restart of the
// pipeline is still a duplicate.
func TestRedelivery(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	e := text("01HREDELIVER", "7", "hi", ts)
	f.webhook(body(e), 0)
	f.webhook(body(strings.Replace(e, `"isRedelivery":false`, `"isRedelivery":true`, 1)), time.Minute)
	f.run()
	f.webhook(body(e), 2*time.Minute)
	f.run()
	var outs []string
	for _, o := range f.outcomes() {
		outs = append(outs, o.Outcome)
	}
	if strings.Join(outs, ",") != "processed,duplicate,duplicate" {
		t.Errorf("outcomes %v", outs)
	}
	if n := f.action.count("id:01HREDELIVER"); n != 1 {
		t.Errorf("action ran %d times", n)
	}
}

func TestLegacyEventsWithoutID(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	e := text("", "8", "old", ts)
	f.webhook(`{"events":[`+e+`]}`, 0) // no destination, no webhookEventId
	f.webhook(`{"events":[`+e+`]}`, 0)
	f.run()
	got := f.outcomes()
	if len(got) != 2 || got[0].Outcome != "processed" || got[1].Outcome != "duplicate" ||
		!slices.Contains(got[0].Flags, "legacy:webhookEventId") || !slices.Contains(got[0].Flags, "legacy:destination") {
		t.Errorf("outcomes %+v", got)
	}
}

func TestDuplicateMessageID(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	f.webhook(body(text("01X1", "99", "a", ts), text("01X2", "99", "a", ts)), 0)
	f.run()
	got := f.outcomes()
	if len(got) != 2 || got[1].Outcome != "processed" || !slices.Contains(got[1].Flags, "duplicate_message_id") {
		t.Errorf("outcomes %+v", got)
	}
}

func TestStandbyAndVerifyDummies(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	standby := strings.Replace(text("01S", "5", "x", ts), `"mode":"active"`, `"mode":"standby"`, 1)
	// The 2019 Verify request: no destination, two dummy events.
	dummy := `{"events":[{"replyToken":"00000000000000000000000000000000","type":"message","timestamp":` + fmt.Sprint(ts) +
		`,"source":{"type":"user","userId":"Udeadbeefdeadbeefdeadbeefdeadbeef"},"message":{"id":"100001","type":"text","text":"Hello, world"}},` +
		`{"replyToken":"ffffffffffffffffffffffffffffffff","type":"message","timestamp":` + fmt.Sprint(ts) +
		`,"source":{"type":"user","userId":"Udeadbeefdeadbeefdeadbeefdeadbeef"},"message":{"id":"100002","type":"sticker","packageId":"1","stickerId":"1"}}]}`
	f.webhook(body(standby), 0)
	f.webhook(dummy, 0)
	f.run()
	var outs []string
	for _, o := range f.outcomes() {
		outs = append(outs, o.Outcome)
	}
	if strings.Join(outs, ",") != "standby,dummy,dummy" || len(f.action.calls) != 0 {
		t.Errorf("outcomes %v, %d actions", outs, len(f.action.calls))
	}
}

func TestClockSkew(t *testing.T) {
	for _, hold := range []bool{false, true} {
		t.Run(fmt.Sprint("hold=", hold), func(t *testing.T) {
			f := newFixture(t)
			f.policy.HoldSkewed = hold
			ts := f.now.UnixMilli()
			late := text("01L", "1", "late", ts)
			redelivered := strings.Replace(text("01R", "2", "redelivered", ts), `"isRedelivery":false`, `"isRedelivery":true`, 1)
			f.webhook(body(late, redelivered, text("01OK", "3", "fresh", ts+9500)), 10*time.Second)
			f.run()
			got := f.outcomes()
			wantFirst := "processed"
			if hold {
				wantFirst = "held"
			}
			if got[0].Outcome != wantFirst || !slices.Contains(got[0].Flags, "clock_skew:timestamp") {
				t.Errorf("late event: %+v", got[0])
			}
			if got[1].Outcome != "processed" || slices.Contains(got[1].Flags, "clock_skew:timestamp") {
				t.Errorf("redelivered event flagged: %+v", got[1])
			}
			if got[2].Outcome != "processed" || slices.Contains(got[2].Flags, "clock_skew:timestamp") {
				t.Errorf("fresh event: %+v", got[2])
			}
		})
	}
}

func TestDriftPolicy(t *testing.T) {
	for _, strict := range []bool{false, true} {
		f := newFixture(t)
		f.policy.QuarantineDrift = strict
		f.webhook(body(event("leave", "01D", f.now.UnixMilli(), `,"sparkle":true`)), 0)
		f.run()
		got := f.outcomes()
		want := map[bool]string{false: "processed", true: "quarantined"}[strict]
		if len(got) != 1 || got[0].Outcome != want || !slices.Equal(got[0].Flags, []string{"drift:sparkle"}) || !strings.Contains(got[0].Reason, "sparkle") {
			t.Errorf("strict=%v: %+v", strict, got)
		}
	}
}

// TestConversationOrder: events of one user are handled in the order
// received; users in parallel.
func TestConversationOrder(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	for i := range 200 {
		user := fmt.Sprintf("U%02d", i%10)
		e := strings.Replace(text(fmt.Sprintf("01O%03d", i), fmt.Sprint(i), "x", ts+int64(i)), `"userId":"U1"`, `"userId":"`+user+`"`, 1)
		f.webhook(body(e), 0)
	}
	f.run()
	if len(f.action.convs) != 10 {
		t.Fatalf("%d conversations", len(f.action.convs))
	}
	for conv, tss := range f.action.convs {
		if !slices.IsSorted(tss) || len(tss) != 20 {
			t.Errorf("%s handled out of order or incompletely: %v", conv, tss)
		}
	}
}

// BenchmarkPipeline measures events processed per second, from webhook
// records in the ledger to outcomes recorded, on the SQLite store: the
// rate to compare with BenchmarkAppend in internal/ledger, the ingress
// side.
//
//	go test ./internal/pipeline -run '^$' -bench Pipeline
func BenchmarkPipeline(b *testing.B) {
	f := newFixture(b)
	// Sealed, as serve seals them: the pipeline opens each webhook record
	// and seals each outcome.
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		b.Fatal(err)
	}
	f.sealer = keys.NewRing(f.store, kek)
	ts := f.now.UnixMilli()
	const per = 256
	for i := 0; i < b.N; i += per {
		recs := make([]ledger.Record, 0, per)
		for j := i; j < min(b.N, i+per); j++ {
			user := fmt.Sprintf("U%04d", j%1000)
			e := strings.Replace(text(fmt.Sprintf("01B%09d", j), fmt.Sprint(j), "where is my parcel?", ts), `"userId":"U1"`, `"userId":"`+user+`"`, 1)
			payload, err := record.EncodePayload(&record.Meta{Channel: "c", ReceivedMs: ts, Headers: map[string][]string{"X-Line-Signature": {"x"}}}, []byte(body(e)))
			if err != nil {
				b.Fatal(err)
			}
			rec, err := ledger.SealRecord(context.Background(), f.sealer, ledger.Entry{Kind: ledger.KindWebhook, Time: f.now, Channel: "c",
				Payload: payload, Subjects: []string{"user:" + user}})
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, rec)
		}
		if _, err := f.store.Append(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	f.run()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// TestDedupHorizon: keys older than the horizon are forgotten, and an
// event older than the horizon is held, whatever the clock_skew policy and
// redelivered or not: a replay past the horizon is never acted on again
// (START, STOP, then the signed START body replayed would opt the user in
// again). Within the horizon, it is a duplicate.
func TestDedupHorizon(t *testing.T) {
	for _, hold := range []bool{false, true} {
		for _, redelivered := range []bool{false, true} {
			t.Run(fmt.Sprintf("hold=%v,redelivered=%v", hold, redelivered), func(t *testing.T) {
				f := newFixture(t)
				f.horizon = time.Hour
				f.policy.HoldSkewed = hold
				start := text("01HORIZONSTART", "5", "START", f.now.UnixMilli())
				f.webhook(body(start), 0)
				f.webhook(body(text("01HORIZONSTOP", "6", "STOP", f.now.UnixMilli()+1000)), time.Second)
				f.run()
				f.now = f.now.Add(30 * time.Minute)
				f.webhook(body(start), 0)
				f.run() // within the horizon: a duplicate
				f.now = f.now.Add(2 * time.Hour)
				replay := start
				if redelivered {
					replay = strings.Replace(start, `"isRedelivery":false`, `"isRedelivery":true`, 1)
				}
				f.webhook(body(replay), 0)
				f.run() // the pipeline forgets old keys when it starts, then every hour
				var outs []string
				got := f.outcomes()
				for _, o := range got {
					outs = append(outs, o.Outcome)
				}
				if strings.Join(outs, ",") != "processed,processed,duplicate,held" {
					t.Errorf("outcomes %v", outs)
				}
				if last := got[len(got)-1]; !strings.Contains(last.Reason, "dedup horizon") {
					t.Errorf("replay held for %q", last.Reason)
				}
				if n := f.action.count("id:01HORIZONSTART"); n != 1 {
					t.Errorf("START acted on %d times", n)
				}
			})
		}
	}
}

// TestEdgeCases: what becomes of each kind of odd event, under the
// channel's policies: its outcome, its flags (each naming its field), the
// reason, and whether the actions see it.
func TestEdgeCases(t *testing.T) {
	ts := time.UnixMilli(1700000000000).UnixMilli() // newFixture's now
	const ours, theirs = "U0123456789abcdef0123456789abcdef", "Ufedcba9876543210fedcba9876543210"
	msg := func(m string) string {
		return event("message", "01EDGE", ts, `,"replyToken":"r","message":{"id":"1",`+m+`}`)
	}
	mention := func(typ string) string {
		return msg(`"type":"text","text":"@a","quoteToken":"q","mention":{"mentionees":[{"type":"` + typ + `","index":0,"length":2}]}`)
	}
	mode := func(m string) string {
		return strings.Replace(text("01EDGE", "1", "hi", ts), `"mode":"active"`, `"mode":"`+m+`"`, 1)
	}
	at := func(t int64) string { return text("01EDGE", "1", "hi", t) }
	redelivered := func(e string) string { return strings.Replace(e, `"isRedelivery":false`, `"isRedelivery":true`, 1) }
	to := func(destination string, e string) string {
		return `{"destination":` + destination + `,"events":[` + e + `]}`
	}
	stale := ts - (7*24*time.Hour + time.Minute).Milliseconds() // the default horizon is 7 days
	drift := pipeline.ChannelPolicy{QuarantineDrift: true}
	hold := pipeline.ChannelPolicy{HoldSkewed: true}
	tests := []struct {
		name    string
		body    string
		policy  pipeline.ChannelPolicy
		outcome string
		flags   []string // sorted
		reason  string   // in the reason
	}{
		{name: "valid", body: body(at(ts)), outcome: "processed"},
		// Empty types are malformed.
		{name: "empty event type", body: body(event("", "01EDGE", ts, ``)), outcome: "quarantined", reason: "type: empty type"},
		{name: "empty message type", body: body(msg(`"type":"","text":"hi"`)), outcome: "quarantined", reason: "message.type: empty type"},
		{name: "empty source type", body: body(strings.Replace(at(ts), `"type":"user"`, `"type":""`, 1)), outcome: "quarantined", reason: "source.type"},
		{name: "empty mode", body: body(mode("")), outcome: "quarantined", reason: "mode: empty value"},
		{name: "message without type", body: body(msg(`"text":"hi","quoteToken":"q"`)), outcome: "quarantined", reason: "message.type"},
		// Unknown kinds: of the event, its message or its source.
		{name: "unknown event type", body: body(event("hologram", "01EDGE", ts, ``)), outcome: "unknown", reason: "hologram"},
		{name: "unknown message type", body: body(msg(`"type":"hologram"`)), outcome: "unknown", reason: "hologram"},
		// Unknown nested kinds of known events: drift.
		{name: "unknown mentionee type", body: body(mention("group")), outcome: "processed",
			flags: []string{"drift:message.mention.mentionees[0].type"}, reason: `unknown type "group"`},
		{name: "unknown mentionee type, drift quarantined", body: body(mention("group")), policy: drift, outcome: "quarantined",
			flags: []string{"drift:message.mention.mentionees[0].type"}, reason: "mentionees[0].type"},
		{name: "unknown membership type", body: body(event("membership", "01EDGE", ts, `,"replyToken":"r","membership":{"type":"upgraded","membershipId":3}`)),
			outcome: "processed", flags: []string{"drift:membership.type"}},
		{name: "unknown module type", body: body(event("module", "01EDGE", ts, `,"module":{"type":"paused","botId":"U4"}`)),
			outcome: "processed", flags: []string{"drift:module.type"}},
		{name: "new field", body: body(msg(`"type":"text","text":"hi","quoteToken":"q","foo":1`)), outcome: "processed",
			flags: []string{"drift:message.foo"}, reason: "message.foo"},
		// Modes: only active is answered.
		{name: "standby", body: body(mode("standby")), outcome: "standby"},
		{name: "unknown mode", body: body(mode("paused")), outcome: "unknown_mode", flags: []string{"drift:mode"}, reason: `"paused"`},
		{name: "unknown mode, drift quarantined", body: body(mode("paused")), policy: drift, outcome: "quarantined", flags: []string{"drift:mode"}},
		// Timestamps.
		{name: "timestamp 0", body: body(at(0)), outcome: "processed", flags: []string{"clock_skew:timestamp"}},
		{name: "timestamp 0, held", body: body(at(0)), policy: hold, outcome: "held", flags: []string{"clock_skew:timestamp"}, reason: "timestamp 0"},
		{name: "negative timestamp, held", body: body(at(-5)), policy: hold, outcome: "held", flags: []string{"clock_skew:timestamp"}, reason: "timestamp -5"},
		{name: "skewed", body: body(at(ts - 60000)), outcome: "processed", flags: []string{"clock_skew:timestamp"}},
		{name: "skewed redelivery", body: body(redelivered(at(ts - 60000))), outcome: "processed"},
		{name: "older than the horizon", body: body(at(stale)), outcome: "held", flags: []string{"clock_skew:timestamp"}, reason: "dedup horizon"},
		{name: "older than the horizon, redelivered", body: body(redelivered(at(stale))), outcome: "held", reason: "dedup horizon"},
		{name: "older than the horizon, held", body: body(redelivered(at(stale))), policy: hold, outcome: "held", reason: "dedup horizon"},
		// Legacy shapes: each missing field named.
		{name: "no webhookEventId", body: body(text("", "1", "hi", ts)), outcome: "processed",
			flags: []string{"legacy:deliveryContext", "legacy:webhookEventId"}},
		{name: "no destination", body: `{"events":[` + at(ts) + `]}`, outcome: "processed", flags: []string{"legacy:destination"}},
		// The destination, judged apart from the events.
		{name: "destination a number", body: to(`12345`, at(ts)), outcome: "processed", flags: []string{"malformed:destination"}},
		{name: "destination not a user id", body: to(`"U1"`, at(ts)), policy: pipeline.ChannelPolicy{BotUserID: ours},
			outcome: "processed", flags: []string{"malformed:destination"}},
		{name: "destination ours", body: to(`"`+ours+`"`, at(ts)), policy: pipeline.ChannelPolicy{BotUserID: ours}, outcome: "processed"},
		{name: "destination another bot", body: to(`"`+theirs+`"`, at(ts)), policy: pipeline.ChannelPolicy{BotUserID: ours},
			outcome: "foreign", flags: []string{"foreign:destination"}, reason: theirs},
		{name: "destination unchecked", body: to(`"`+theirs+`"`, at(ts)), outcome: "processed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.policy = tt.policy
			f.webhook(tt.body, 0)
			f.run()
			got := f.outcomes()
			if len(got) != 1 {
				t.Fatalf("outcomes %+v", got)
			}
			o := got[0]
			slices.Sort(o.Flags)
			if o.Outcome != tt.outcome || !slices.Equal(o.Flags, tt.flags) || !strings.Contains(o.Reason, tt.reason) {
				t.Errorf("outcome %s, flags %q, reason %q; want %s, %q, a reason with %q", o.Outcome, o.Flags, o.Reason, tt.outcome, tt.flags, tt.reason)
			}
			if answered := len(f.action.calls) == 1; answered != (tt.outcome == "processed") {
				t.Errorf("actions called %d times for outcome %s", len(f.action.calls), o.Outcome)
			}
		})
	}
}

// TestDedupPerChannel: the same event reaches two channels (a module
// channel and its primary, or a standby channel): each processes it once.
func TestDedupPerChannel(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	b := body(text("01HSHARED", "42", "hi", ts))
	f.webhookTo("c", b, 0)
	f.webhookTo("module", b, 0)
	f.webhookTo("module", b, time.Second)
	f.webhookTo("c", b, time.Second)
	f.run()
	var outs []string
	for _, o := range f.outcomes() {
		outs = append(outs, o.Outcome+fmt.Sprint(o.Flags))
	}
	if strings.Join(outs, ",") != "processed[],processed[],duplicate[],duplicate[]" {
		t.Errorf("outcomes %v", outs)
	}
	if n := f.action.count("id:01HSHARED"); n != 2 {
		t.Errorf("action ran %d times, want once per channel", n)
	}
}

// TestMetricsFirstDeliveries: the drift and clock-skew metrics count
// events, not their duplicates.
func TestMetricsFirstDeliveries(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	drifted := event("leave", "01MDRIFT", ts, `,"sparkle":true`)
	skewed := text("01MSKEW", "1", "hi", ts-60000)
	for i := range 3 {
		f.webhook(body(drifted, skewed), time.Duration(i)*time.Millisecond)
	}
	f.run()
	mfs, err := f.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "linegate_pipeline_delivery_delay_seconds" {
			// First deliveries only: on time and 60 s late.
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() < 60 || h.GetSampleSum() > 61.5 {
				t.Errorf("delivery delay: %d samples, sum %v s; want 2, about 60 s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					name += "/" + l.GetValue()
				}
			}
			got[name] += m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"linegate_pipeline_schema_drift_total":          1,
		"linegate_pipeline_clock_skew_total":            1,
		"linegate_pipeline_events_total/processed":      2,
		"linegate_pipeline_events_total/duplicate":      4,
		"linegate_pipeline_duplicate_message_ids_total": 0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

// flakySealer fails its first opens as a key store that went away does.
type flakySealer struct {
	ledger.Sealer
	fails atomic.Int32
}

func (s *flakySealer) Open(ctx context.Context, ks []ledger.SubjectKey, aad, sealed []byte) ([]byte, error) {
	if s.fails.Add(-1) >= 0 {
		return nil, fmt.Errorf("keys: read data keys: %w: connection refused", ledger.ErrUnavailable)
	}
	return s.Sealer.Open(ctx, ks, aad, sealed)
}

// TestKeysUnavailableAtDispatch: a webhook record whose keys cannot be
// read for a moment is dispatched once they can, never skipped.
func TestKeysUnavailableAtDispatch(t *testing.T) {
	f := newFixture(t)
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	fs := &flakySealer{Sealer: keys.NewRing(f.store, kek)}
	f.sealer = fs
	ts := f.now.UnixMilli()
	payload, err := record.EncodePayload(&record.Meta{Channel: "c", ReceivedMs: ts}, []byte(body(text("01MFLAKY", "1", "hi", ts))))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ledger.SealRecord(context.Background(), fs.Sealer, ledger.Entry{Kind: ledger.KindWebhook, Time: f.now, Channel: "c",
		Payload: payload, Subjects: []string{"user:U1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Append(context.Background(), []ledger.Record{rec}); err != nil {
		t.Fatal(err)
	}
	fs.fails.Store(3)
	f.run()
	if n := f.action.count("id:01MFLAKY"); n != 1 {
		t.Errorf("the event was handled %d times, want once", n)
	}
}

// TestCompletedIndices: Completed gets each completed event with the
// index of its outcome record (first+i), once, in the order of the
// commits: what the fan-out reads its queue from.
func TestCompletedIndices(t *testing.T) {
	f := newFixture(t)
	ts := f.now.UnixMilli()
	for i := range 20 {
		f.webhook(body(text(fmt.Sprintf("01C%03da", i), fmt.Sprint(2*i), "hi", ts), text(fmt.Sprintf("01C%03db", i), fmt.Sprint(2*i+1), "hi", ts)), 0)
	}
	f.webhook(`not json`, 0)
	got := map[uint64]string{}
	var last uint64
	var calls int
	f.completed = func(items []*pipeline.Item, first uint64) {
		calls++
		if first < last {
			t.Errorf("Completed at %d after %d: out of commit order", first, last)
		}
		for i, it := range items {
			if _, dup := got[first+uint64(i)]; dup {
				t.Errorf("index %d completed twice", first+uint64(i))
			}
			got[first+uint64(i)] = it.Key
		}
		last = first + uint64(len(items))
	}
	f.run()
	ctx := context.Background()
	n, err := f.store.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := 0
	for r, err := range f.store.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		if err := leaf.UnmarshalBinary(r.Leaf); err != nil || leaf.Kind != ledger.KindEvent {
			continue
		}
		_, b, err := record.Decode(record.KindEvent, r.Payload)
		if err != nil {
			t.Fatal(err)
		}
		outcomes++
		if key := b.(*record.Outcome).Key; got[r.Index] != key {
			t.Errorf("outcome record %d is event %q; Completed named %q", r.Index, key, got[r.Index])
		}
	}
	if outcomes != 41 || len(got) != 41 || calls == 0 {
		t.Errorf("%d outcome records, %d completed in %d calls; want 41 (40 events and a body that is not JSON)", outcomes, len(got), calls)
	}
}
