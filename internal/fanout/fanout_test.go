package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
)

func TestCheckAll(t *testing.T) {
	ok := func() *Destination {
		return &Destination{Name: "crm", Channel: "c", URL: "https://crm.example/hook", Secret: []byte("s")}
	}
	tests := []struct {
		name string
		ds   func() []*Destination
		want string // "" ok, else a part of the error
	}{
		{"ok", func() []*Destination { return []*Destination{ok()} }, ""},
		{"http to a host", func() []*Destination {
			d := ok()
			d.URL, d.AllowHTTP = "http://crm.example/hook", true
			return []*Destination{d}
		}, "loopback"},
		{"http to loopback without allow_http", func() []*Destination {
			d := ok()
			d.URL = "http://127.0.0.1:9/hook"
			return []*Destination{d}
		}, "allow_http"},
		{"http to loopback", func() []*Destination {
			d := ok()
			d.URL, d.AllowHTTP = "http://127.0.0.1:9/hook", true
			return []*Destination{d}
		}, ""},
		{"user in URL", func() []*Destination {
			d := ok()
			d.URL = "https://u:p@crm.example/"
			return []*Destination{d}
		}, "no user"},
		{"bad name", func() []*Destination {
			d := ok()
			d.Name = "a b"
			return []*Destination{d}
		}, "name"},
		{"same name twice", func() []*Destination {
			d := ok()
			d.Channel = "other"
			return []*Destination{ok(), d}
		}, "twice"},
		{"two reply token owners", func() []*Destination {
			a, b := ok(), ok()
			b.Name = "bot"
			a.OwnsReplyToken, b.OwnsReplyToken = true, true
			return []*Destination{a, b}
		}, "at most one"},
		{"owners of two channels", func() []*Destination {
			a, b := ok(), ok()
			b.Name, b.Channel = "bot", "other"
			a.OwnsReplyToken, b.OwnsReplyToken = true, true
			return []*Destination{a, b}
		}, ""},
		{"bad source type", func() []*Destination {
			d := ok()
			d.SourceTypes = []string{"channel"}
			return []*Destination{d}
		}, "source_types"},
		{"bad outcome", func() []*Destination {
			d := ok()
			d.Outcomes = []string{"done"}
			return []*Destination{d}
		}, "outcomes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAll(tt.ds())
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("CheckAll = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := New(Options{Destinations: []*Destination{{Name: "x", Channel: "c", URL: "https://x.example/"}}}); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Errorf("New without a secret = %v", err)
	}
}

func TestBuildBody(t *testing.T) {
	ev := json.RawMessage(`{"type":"message","replyToken":"rt","webhookEventId":"01X","deliveryContext":{"isRedelivery":false},"message":{"type":"text","text":"\uD83D\uDE00 hi"}}`)
	for _, tt := range []struct {
		keep, redelivery bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		b, err := BuildBody("U0123456789abcdef0123456789abcdef", []json.RawMessage{ev, ev}, tt.keep, tt.redelivery)
		if err != nil {
			t.Fatal(err)
		}
		var cb line.Callback
		parsed, err := line.ParseCallback(b)
		if err != nil {
			t.Fatal(err)
		}
		cb = *parsed
		if cb.Destination != "U0123456789abcdef0123456789abcdef" || len(cb.Events) != 2 {
			t.Fatalf("body %s", b)
		}
		e := line.DecodeEvent(cb.Events[0])
		if (e.ReplyToken != "") != tt.keep {
			t.Errorf("keep=%v: replyToken %q", tt.keep, e.ReplyToken)
		}
		if e.Redelivery() != tt.redelivery {
			t.Errorf("redelivery=%v: body %s", tt.redelivery, b)
		}
		if e.WebhookEventID != "01X" || e.Message == nil || e.Message.Text != "😀 hi" {
			t.Errorf("the event changed beyond its reply token and delivery context: %s", b)
		}
	}
	// An event without a delivery context gets one on redelivery.
	b, err := BuildBody("U", []json.RawMessage{json.RawMessage(`{"type":"follow"}`)}, false, true)
	if err != nil || !strings.Contains(string(b), `"deliveryContext":{"isRedelivery":true}`) {
		t.Errorf("redelivery of an event without deliveryContext: %s, %v", b, err)
	}
	if _, err := BuildBody("U", []json.RawMessage{json.RawMessage(`{}`), json.RawMessage(`[1]`)}, false, false); err == nil {
		t.Error("an event that is not an object was accepted")
	}
	// What has nothing to change goes byte for byte as recorded: to the
	// owner, and to the others when it has no reply token.
	follow := json.RawMessage(`{"type":"follow",  "webhookEventId":"01Y"}`)
	for _, tt := range []struct {
		ev   json.RawMessage
		keep bool
	}{{ev, true}, {follow, false}, {follow, true}} {
		b, err := BuildBody("U1", []json.RawMessage{tt.ev}, tt.keep, false)
		if want := `{"destination":"U1","events":[` + string(tt.ev) + `]}`; err != nil || string(b) != want {
			t.Errorf("keep=%v: body %s, %v; want %s", tt.keep, b, err, want)
		}
	}
	// Events that are not objects are refused, redelivered or not (null
	// once made a nil map that a redelivery wrote into).
	for _, bad := range []string{`null`, ` null `, `1`, `"s"`, `[]`, `true`} {
		for _, redelivery := range []bool{false, true} {
			for _, keep := range []bool{false, true} {
				if b, err := BuildBody("U", []json.RawMessage{json.RawMessage(bad)}, keep, redelivery); err == nil {
					t.Errorf("event %s (keep=%v redelivery=%v) accepted: %s", bad, keep, redelivery, b)
				}
			}
		}
	}
	// Keys Go's encoding/json (LINE's Go SDK) reads as replyToken, in any
	// case or with a Kelvin sign for the k, go too; the owner keeps them.
	for _, key := range []string{"REPLYTOKEN", "replytoken", "ReplyToken", "replyTo\u212Aen", "reply\u0054oken", "replyToKen"} {
		ev := json.RawMessage(`{"type":"message","` + key + `":"rt","message":{"type":"text","text":"x","replyToken":"nested"}}`)
		for _, redelivery := range []bool{false, true} {
			b, err := BuildBody("U1", []json.RawMessage{ev}, false, redelivery)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Events []struct {
					ReplyToken string `json:"replyToken"`
					Message    struct {
						ReplyToken string `json:"replyToken"`
					} `json:"message"`
				} `json:"events"`
			}
			if err := json.Unmarshal(b, &got); err != nil || len(got.Events) != 1 {
				t.Fatalf("key %q: body %s: %v", key, b, err)
			}
			if got.Events[0].ReplyToken != "" {
				t.Errorf("key %q (redelivery=%v): a destination that does not own the reply token reads one: %s", key, redelivery, b)
			}
			if got.Events[0].Message.ReplyToken != "nested" {
				t.Errorf("key %q: a nested field of the same name was taken out: %s", key, b)
			}
		}
		if b, _ := BuildBody("U1", []json.RawMessage{ev}, true, false); !strings.Contains(string(b), `"rt"`) {
			t.Errorf("key %q: the owner lost its reply token: %s", key, b)
		}
	}
	// A reply token under an escaped key is a reply token: every JSON
	// parser reads "reply\u0054oken" as replyToken.
	escaped := json.RawMessage(`{"type":"message","reply\u0054oken":"rt","message":{"type":"text","text":"x"}}`)
	b, err = BuildBody("U1", []json.RawMessage{escaped}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := line.ParseCallback(b)
	if err != nil || len(parsed.Events) != 1 || line.DecodeEvent(parsed.Events[0]).ReplyToken != "" {
		t.Errorf("an escaped replyToken reached a destination that does not own it: %s", b)
	}
	if !json.Valid(b) {
		t.Errorf("body not JSON: %s", b)
	}
}

// held returns the number of events h holds.
func (h *handover) held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

func TestHandover(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHandover(func() time.Time { return now })
	ev := json.RawMessage(`{"type":"follow"}`)
	h.put(7, 0, "Ubot", ev, 2, now)
	for i := range 2 {
		dest, got, ok := h.take(7, 0)
		if !ok || dest != "Ubot" || string(got) != string(ev) {
			t.Fatalf("take %d: %q %s %v", i, dest, got, ok)
		}
	}
	if _, _, ok := h.take(7, 0); ok || h.held() != 0 {
		t.Fatalf("an event taken by each destination that queued it is still held (%d)", h.held())
	}
	// Older than handoverAge: read from the ledger instead.
	h.put(8, 1, "Ubot", ev, 1, now)
	now = now.Add(handoverAge + time.Millisecond)
	if _, _, ok := h.take(8, 1); ok {
		t.Fatal("an event older than handoverAge was handed over")
	}
	// The bounds: the oldest go first.
	for i := range handoverEvents + 10 {
		h.put(uint64(100+i), 0, "", ev, 1, now)
	}
	if n := h.held(); n != handoverEvents {
		t.Fatalf("held %d events, bound %d", n, handoverEvents)
	}
	if _, _, ok := h.take(100, 0); ok {
		t.Fatal("the oldest event was kept beyond the bound")
	}
	if _, _, ok := h.take(uint64(100+handoverEvents+9), 0); !ok {
		t.Fatal("the newest event was not kept")
	}
	big := json.RawMessage(`{"t":"` + strings.Repeat("x", handoverBytes/64) + `"}`)
	h.put(1, 0, "", big, 1, now)
	if _, _, ok := h.take(1, 0); ok {
		t.Fatal("an event over the size bound was held")
	}
	// Events expire by age as new ones come, whatever their count.
	now = now.Add(handoverAge + time.Millisecond)
	h.put(2, 0, "", ev, 1, now)
	if n := h.held(); n != 1 {
		t.Fatalf("held %d events after they aged out, want 1", n)
	}
	// The age runs from the webhook's receipt, not from the hand-over: an
	// event whose rules took longer than handoverAge is read from the
	// ledger (where a deletion meanwhile shows).
	h.put(3, 0, "", ev, 1, now.Add(-handoverAge-time.Millisecond))
	if _, _, ok := h.take(3, 0); ok {
		t.Fatal("an event received longer than handoverAge ago was handed over")
	}
	h.put(4, 0, "", ev, 1, now.Add(-handoverAge+time.Second))
	now = now.Add(time.Second + time.Millisecond)
	if _, _, ok := h.take(4, 0); ok {
		t.Fatal("an event was handed over past handoverAge after its receipt")
	}
	var nilH *handover
	nilH.put(1, 0, "", ev, 1, now)
	if _, _, ok := nilH.take(1, 0); ok {
		t.Fatal("a nil hand-over handed over")
	}
}

// TestHandoverSkipsIdle: an event is handed over for the destinations that
// take events as they come; one paused, or whose breaker is open, reads
// it from the ledger when it goes on, and keeps it in memory for nobody
// meanwhile: once the live one has taken it, it is held no more.
func TestHandoverSkipsIdle(t *testing.T) {
	now := time.Unix(1000, 0)
	f, err := New(Options{Now: func() time.Time { return now }, Destinations: []*Destination{
		{Name: "live", Channel: "c", URL: "https://a.example/", Secret: []byte("s")},
		{Name: "dead", Channel: "c", URL: "https://b.example/", Secret: []byte("s")},
		{Name: "paused", Channel: "c", URL: "https://c.example/", Secret: []byte("s")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dead := f.byName["dead"]
	dead.mu.Lock()
	dead.state, dead.openUntil = breakerOpen, now.Add(time.Minute)
	dead.mu.Unlock()
	f.byName["paused"].paused.Store(true)
	item := func(rec uint64) *pipeline.Item {
		return &pipeline.Item{Record: rec, Channel: "c", Index: 0, Key: fmt.Sprint(rec), Type: "follow", Conversation: "user:U1",
			Outcome: pipeline.OutcomeProcessed, Event: json.RawMessage(`{"type":"follow"}`), ReceivedMs: now.UnixMilli()}
	}
	f.Follow([]*pipeline.Item{item(1)})
	if _, _, ok := f.hand.take(1, 0); !ok {
		t.Fatal("the live destination's event was not handed over")
	}
	if n := f.hand.held(); n != 0 {
		t.Fatalf("%d events held after the one live destination took its own", n)
	}
	// Once the breaker's cooldown is over, the destination takes them
	// again as they come.
	now = now.Add(2 * time.Minute)
	f.Follow([]*pipeline.Item{item(2)})
	f.hand.take(2, 0)
	if n := f.hand.held(); n != 1 {
		t.Fatalf("%d events held for the destination whose cooldown is over, want 1", n)
	}
}

// TestFollowFilters: the destinations' filters choose the events queued
// for them, in both ways of queueing: rows in the outcome's commit
// (Table), and entries held after it (Completed), each with its outcome
// record's index.
func TestFollowFilters(t *testing.T) {
	for _, table := range []bool{true, false} {
		f, err := New(Options{Table: table, Destinations: []*Destination{
			{Name: "all", Channel: "c", URL: "https://a.example/", Secret: []byte("s")},
			{Name: "groups", Channel: "c", URL: "https://b.example/", Secret: []byte("s"), SourceTypes: []string{"group"}, EventTypes: []string{"message"}},
			{Name: "dups", Channel: "c", URL: "https://c.example/", Secret: []byte("s"), Outcomes: []string{"duplicate"}},
			{Name: "other", Channel: "d", URL: "https://d.example/", Secret: []byte("s")},
		}})
		if err != nil {
			t.Fatal(err)
		}
		items := []*pipeline.Item{
			{Channel: "c", Index: 0, Key: "k1", Type: "message", Conversation: "user:U1", Outcome: pipeline.OutcomeProcessed},
			{Channel: "c", Index: 1, Key: "k2", Type: "message", Conversation: "group:C1", Outcome: pipeline.OutcomeProcessed},
			{Channel: "c", Index: 2, Key: "k3", Type: "follow", Conversation: "group:C1", Outcome: pipeline.OutcomeFailed},
			{Channel: "c", Index: 3, Key: "k4", Type: "message", Conversation: "user:U1", Outcome: pipeline.OutcomeDuplicate},
			{Channel: "c", Index: 4, Key: "k5", Type: "botSuspended", Outcome: pipeline.OutcomeProcessed},
			{Channel: "c", Index: -1, Key: "record:1", Type: "(body)", Outcome: pipeline.OutcomeQuarantined},
		}
		got := map[string][]string{}
		effects := f.Follow(items)
		if table {
			if len(effects) != 1 {
				t.Fatalf("effects %v", effects)
			}
			for _, e := range effects[0].(Enqueue).Entries {
				got[e.Destination] = append(got[e.Destination], e.Key+"@"+e.Conversation)
			}
		} else {
			if len(effects) != 0 {
				t.Fatalf("effects %v without Table: the outcome records are the queue", effects)
			}
			for _, w := range f.order {
				w.s.ready, w.s.queued = true, map[string]uint64{}
			}
			f.Completed(items, 100)
			for _, w := range f.order {
				for _, e := range w.s.mem {
					got[e.Destination] = append(got[e.Destination], fmt.Sprintf("%s@%s@%d", e.Key, e.Conversation, e.At))
				}
				if w.s.next != 106 {
					t.Errorf("%s: next %d after the outcome records [100, 106), want 106", w.d.Name, w.s.next)
				}
			}
		}
		want := map[string]string{
			"all":    "k1@user:U1 k2@group:C1 k3@group:C1 k5@event:k5",
			"groups": "k2@group:C1",
			"dups":   "k4@user:U1",
		}
		if !table {
			want = map[string]string{
				"all":    "k1@user:U1@100 k2@group:C1@101 k3@group:C1@102 k5@event:k5@104",
				"groups": "k2@group:C1@101",
				"dups":   "k4@user:U1@103",
			}
		}
		for d, w := range want {
			if g := strings.Join(got[d], " "); g != w {
				t.Errorf("table %v: %s: %s, want %s", table, d, g, w)
			}
		}
		if len(got["other"]) != 0 {
			t.Errorf("another channel's destination got %v", got["other"])
		}
		if f.Follow([]*pipeline.Item{{Channel: "x", Type: "message", Outcome: pipeline.OutcomeProcessed}}) != nil {
			t.Error("effects for events no destination takes")
		}
	}
}

type seen struct {
	token string
	raw   json.RawMessage
}

func (s *seen) Handle(_ context.Context, _ *pipeline.Item, e *line.Event) error {
	s.token, s.raw = e.ReplyToken, e.Raw
	return nil
}

func TestActionReplyOwner(t *testing.T) {
	f, err := New(Options{Destinations: []*Destination{
		{Name: "bot", Channel: "owned", URL: "https://a.example/", Secret: []byte("s"), OwnsReplyToken: true},
		{Name: "crm", Channel: "free", URL: "https://b.example/", Secret: []byte("s")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if f.ReplyOwner("owned") != "bot" || f.ReplyOwner("free") != "" || (*Fanout)(nil).ReplyOwner("owned") != "" {
		t.Errorf("ReplyOwner wrong")
	}
	for _, tt := range []struct {
		channel string
		push    bool
		ran     bool
		token   string
	}{
		{"owned", true, true, ""},
		{"owned", false, false, ""},
		{"free", false, true, "rt"},
	} {
		var s seen
		s.token = "unset"
		raw := json.RawMessage(`{"type":"message","replyToken":"rt","webhookEventId":"01X"}`)
		ev := &line.Event{Type: "message", ReplyToken: "rt", Raw: raw}
		if err := f.Action(&s, tt.push).Handle(context.Background(), &pipeline.Item{Channel: tt.channel}, ev); err != nil {
			t.Fatal(err)
		}
		if ran := s.token != "unset"; ran != tt.ran || ran && s.token != tt.token {
			t.Errorf("%s push=%v: rules ran %v with token %q; want %v, %q", tt.channel, tt.push, ran, s.token, tt.ran, tt.token)
		}
		// The raw event (what a rule's forward sends) loses its token
		// with the field.
		if ran := s.token != "unset"; ran && bytes.Contains(s.raw, []byte(`"replyToken"`)) != (tt.token != "") {
			t.Errorf("%s push=%v: the rules' raw event %s, want a replyToken only with the field's", tt.channel, tt.push, s.raw)
		}
		if ev.ReplyToken != "rt" || string(ev.Raw) != string(raw) {
			t.Error("the pipeline's event was changed")
		}
	}
}

func TestBreakerAndBackoff(t *testing.T) {
	f, err := New(Options{Destinations: []*Destination{{Name: "x", Channel: "c", URL: "https://x.example/", Secret: []byte("s")}},
		BreakerFailures: 3, BreakerCooldown: time.Minute, BaseDelay: time.Second, MaxDelay: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w := f.byName["x"]
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !w.allow(now) {
			t.Fatalf("closed breaker refused attempt %d", i)
		}
		w.result(false, true, "down", now)
	}
	if w.state != breakerOpen || w.allow(now.Add(59*time.Second)) {
		t.Fatal("the breaker did not open after 3 failures")
	}
	if !w.allow(now.Add(61*time.Second)) || w.state != breakerHalfOpen {
		t.Fatal("no half-open probe after the cooldown")
	}
	w.result(false, true, "down", now.Add(61*time.Second))
	if w.state != breakerOpen || w.allow(now.Add(62*time.Second)) {
		t.Fatal("a failed probe did not open the breaker again")
	}
	// What the admin API shows while it is open: the error, when it
	// came, no delivery yet, and when the next probe may go (the
	// cooldown doubled: the second opening).
	var st Status
	w.breakerStatus(&st)
	if st.Breaker != "open" || st.Failures != 4 || st.LastError != "down" || !timeIs(st.LastErrorAt, now.Add(61*time.Second)) ||
		st.LastDeliveredAt != nil || !timeIs(st.NextProbeAt, now.Add(181*time.Second)) {
		t.Fatalf("open breaker's status: %+v", st)
	}
	w.allow(now.Add(4 * time.Minute))
	w.result(true, true, "", now.Add(4*time.Minute))
	if w.state != breakerClosed || w.failures != 0 {
		t.Fatal("a good probe did not close the breaker")
	}
	// Recovered: the old error stays, older than the delivery.
	w.breakerStatus(&st)
	if st.Breaker != "closed" || st.Failures != 0 || st.LastError != "down" || !timeIs(st.LastErrorAt, now.Add(61*time.Second)) ||
		!timeIs(st.LastDeliveredAt, now.Add(4*time.Minute)) || st.NextProbeAt != nil {
		t.Fatalf("recovered destination's status: %+v", st)
	}
	for attempts, max := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		for range 50 {
			if d := w.backoff(attempts); d < max/2 || d > max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempts, d, max/2, max)
			}
		}
	}
}

// timeIs reports whether p is t (in UTC, as the admin API shows it).
func timeIs(p *time.Time, t time.Time) bool {
	return p != nil && p.Equal(t) && p.Location() == time.UTC
}
