// Package handofftest is the conformance suite of handoff.Store: every
// store runs it, through the handoff service, against its own database.
package handofftest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// Store is what the suite needs of a store.
type Store interface {
	ledger.Store
	handoff.Store
	keys.Store
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sender records what it is asked to send, as outbound records.
type sender struct {
	mu    sync.Mutex
	w     *ledger.Writer
	sends []outbound.Request
	chats []outbound.ChatRequest
}

func (s *sender) SendRecorded(ctx context.Context, r outbound.Request) (outbound.Outcome, *outbound.Recorded, error) {
	s.mu.Lock()
	s.sends = append(s.sends, r)
	s.mu.Unlock()
	rec := &record.Outbound{EventKey: r.EventKey, Endpoint: "push", Outcome: "sent", Agent: r.Agent, Extra: r.Extra, Subj: r.Subjects}
	rec.Request, _ = json.Marshal(map[string]any{"to": r.To, "messages": r.Messages})
	i, err := s.record(ctx, r.Channel, rec)
	return outbound.Sent, &outbound.Recorded{Outbound: rec, Index: i}, err
}

func (s *sender) Chat(ctx context.Context, r outbound.ChatRequest) (outbound.Outcome, *outbound.Recorded, error) {
	s.mu.Lock()
	s.chats = append(s.chats, r)
	s.mu.Unlock()
	rec := &record.Outbound{EventKey: r.EventKey, Endpoint: r.Endpoint, Outcome: "sent", Agent: r.Agent, Extra: r.Extra, Subj: r.Subjects}
	i, err := s.record(ctx, r.Channel, rec)
	return outbound.Sent, &outbound.Recorded{Outbound: rec, Index: i}, err
}

func (s *sender) record(ctx context.Context, channel string, rec *record.Outbound) (uint64, error) {
	p, err := record.Encode(&record.Meta{Channel: channel}, rec)
	if err != nil {
		return 0, err
	}
	return s.w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindOutbound, Time: time.Now(), Channel: channel, Payload: p, Subjects: rec.Subjects()}})
}

func (s *sender) ReplyWindow() time.Duration { return 50 * time.Second }

// Run runs the suite; newStore returns a new, empty store.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("States", func(t *testing.T) { testStates(t, newStore(t)) })
	t.Run("Idle", func(t *testing.T) { testIdle(t, newStore(t)) })
	t.Run("Notifications", func(t *testing.T) { testNotifications(t, newStore(t)) })
	t.Run("Holder", func(t *testing.T) { testHolder(t, newStore(t)) })
}

type fixture struct {
	st    Store
	w     *ledger.Writer
	svc   *handoff.Service
	clock *clock
	snd   *sender
	ring  *keys.Ring
}

func newFixture(t *testing.T, st Store, url string) *fixture {
	t.Cleanup(func() { st.Close() })
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	ring := keys.NewRing(st, kek)
	w := ledger.NewWriter(st, ring, nil)
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	snd := &sender{w: w}
	ch := handoff.ChannelOptions{Idle: 30 * time.Minute, ConsoleURL: "https://ops.example/console"}
	if url != "" {
		ch.Notify = []handoff.Target{{Name: "ops", Kind: "json", URL: url}, {Name: "slack", Kind: "slack", URL: url}}
	}
	svc := handoff.New(handoff.Options{Store: st, Ledger: w, Sealer: ring, Sender: snd,
		Channels: map[string]handoff.ChannelOptions{"c1": ch}, Now: c.now})
	return &fixture{st: st, w: w, svc: svc, clock: c, snd: snd, ring: ring}
}

// admins returns the handoff admin records of the ledger, decoded.
func (f *fixture) admins(t *testing.T) []*record.Admin {
	t.Helper()
	ctx := context.Background()
	n, err := f.st.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*record.Admin
	for rec, err := range f.st.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		if err := leaf.UnmarshalBinary(rec.Leaf); err != nil {
			t.Fatal(err)
		}
		if leaf.Kind != ledger.KindAdmin {
			continue
		}
		p, err := ledger.OpenPayload(ctx, f.ring, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, b, err := record.Decode(leaf.Kind, p)
		if err != nil {
			t.Fatal(err)
		}
		if a := b.(*record.Admin); a.Action == "handoff" {
			out = append(out, a)
		}
	}
	return out
}

func testStates(t *testing.T, st Store) {
	ctx := context.Background()
	f := newFixture(t, st, "")
	const id = "user:U1111111111111111111111111111111"
	if _, err := f.svc.Get(ctx, "c1", id); !errors.Is(err, handoff.ErrNotFound) {
		t.Fatalf("Get of a conversation with no records: %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Get(ctx, "nope", id); !errors.Is(err, handoff.ErrNotFound) {
		t.Fatalf("Get on an unknown channel: %v, want ErrNotFound", err)
	}
	if err := f.svc.HandOff(ctx, "c1", id, "agent"); err != nil {
		t.Fatal(err)
	}
	c, err := f.svc.Get(ctx, "c1", id)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != handoff.StateHuman || c.Agent != "" || c.Reason != "rule:agent" || !c.Since.Equal(f.clock.now()) {
		t.Fatalf("after a rule's handoff: %+v", c)
	}
	// A second handoff while a person has it changes nothing, records nothing.
	if err := f.svc.HandOff(ctx, "c1", id, "agent"); err != nil {
		t.Fatal(err)
	}
	if a := f.admins(t); len(a) != 1 || a[0].Detail["by"] != "rule:agent" || a[0].Subject != id {
		t.Fatalf("admin records after two handoffs: %+v", a)
	}
	// Held events count as waiting.
	for range 2 {
		if err := st.NoteEvent(ctx, "c1", id, f.clock.now().Add(time.Second), true); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.Waiting != 2 || !c.LastEvent.Equal(f.clock.now().Add(time.Second)) {
		t.Fatalf("after two held events: %+v", c)
	}
	// An event of a conversation with no state stores none.
	if err := st.NoteEvent(ctx, "c1", "user:Uother", f.clock.now(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Conversation(ctx, "c1", "user:Uother"); !errors.Is(err, handoff.ErrNotFound) {
		t.Fatalf("NoteEvent stored a conversation: %v", err)
	}
	// Reply before anyone took it: it becomes the replier's.
	alice := handoff.Actor{Name: "alice", Role: "agent"}
	before, _ := st.Count(ctx)
	res, err := f.svc.Reply(ctx, alice, "c1", id, []json.RawMessage{json.RawMessage(`{"type":"text","text":"hello"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := st.Count(ctx); res.Outcome != "sent" || res.Record < before || res.Record >= after {
		t.Fatalf("reply result %+v, records %d..%d", res, before, after)
	}
	c, _ = f.svc.Get(ctx, "c1", id)
	if c.Agent != "alice" || c.Waiting != 0 {
		t.Fatalf("after alice's reply: %+v", c)
	}
	if len(f.snd.sends) != 1 || f.snd.sends[0].Agent != "alice" || f.snd.sends[0].To != "U1111111111111111111111111111111" {
		t.Fatalf("sends: %+v", f.snd.sends)
	}
	// Bad messages are refused before anything is sent.
	for _, bad := range [][]json.RawMessage{nil, {json.RawMessage(`{"text":"x"}`)}, {json.RawMessage(`{"type":"text","text":" "}`)}, {json.RawMessage(`[1]`)}} {
		if _, err := f.svc.Reply(ctx, alice, "c1", id, bad); !errors.Is(err, handoff.ErrInvalid) {
			t.Errorf("Reply %s: %v, want ErrInvalid", bad, err)
		}
	}
	// Take over by bob, hand back, then nothing is held.
	bob := handoff.Actor{Name: "bob", Role: "agent"}
	f.clock.add(time.Minute)
	if err := f.svc.TakeOver(ctx, bob, "c1", id, "console"); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.Agent != "bob" || c.Reason != "console" {
		t.Fatalf("after bob's takeover: %+v", c)
	}
	if err := f.svc.HandBack(ctx, bob, "c1", id); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.State != handoff.StateBot || c.Agent != "" || c.Waiting != 0 {
		t.Fatalf("after the handback: %+v", c)
	}
	if err := f.svc.HandBack(ctx, bob, "c1", id); !errors.Is(err, handoff.ErrNotHeld) {
		t.Fatalf("handback of the bot's conversation: %v, want ErrNotHeld", err)
	}
	if _, err := f.svc.Reply(ctx, bob, "c1", id, []json.RawMessage{json.RawMessage(`{"type":"text","text":"x"}`)}); !errors.Is(err, handoff.ErrNotHeld) {
		t.Fatalf("reply to the bot's conversation: %v, want ErrNotHeld", err)
	}
	// Takeover and resolve.
	if err := f.svc.TakeOver(ctx, alice, "c1", id, ""); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Resolve(ctx, alice, "c1", id); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.State != handoff.StateResolved {
		t.Fatalf("after resolve: %+v", c)
	}
	var bys []string
	for _, a := range f.admins(t) {
		bys = append(bys, a.Detail["by"].(string)+">"+a.Detail["state"].(string))
	}
	want := "rule:agent>human agent:alice>human agent:bob>human agent:bob>bot agent:alice>human agent:alice>resolved"
	if got := strings.Join(bys, " "); got != want {
		t.Fatalf("records:\n got %s\nwant %s", got, want)
	}
	// The list, by state.
	if err := f.svc.HandOff(ctx, "c1", "group:C2222", "agent"); err != nil {
		t.Fatal(err)
	}
	hs, err := f.svc.List(ctx, nil, handoff.StateHuman)
	if err != nil || len(hs) != 1 || hs[0].ID != "group:C2222" {
		t.Fatalf("List(human) = %+v, %v", hs, err)
	}
	all, err := f.svc.List(ctx, []string{"c1"})
	if err != nil || len(all) != 2 {
		t.Fatalf("List(all) = %+v, %v", all, err)
	}
	// The history holds the reply with the agent's name, and the changes.
	h, err := f.svc.History(ctx, "c1", id, 50)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, m := range h {
		lines = append(lines, m.From+":"+m.Text)
	}
	if got := strings.Join(lines, "|"); !strings.Contains(got, "agent:alice:hello") || !strings.Contains(got, "tool:handoff:state resolved (agent:alice") {
		t.Fatalf("history: %s", got)
	}
}

func testIdle(t *testing.T, st Store) {
	ctx := context.Background()
	f := newFixture(t, st, "")
	const id = "user:U3333"
	if err := f.svc.HandOff(ctx, "c1", id, "agent"); err != nil {
		t.Fatal(err)
	}
	f.clock.add(20 * time.Minute)
	if err := st.NoteEvent(ctx, "c1", id, f.clock.now(), true); err != nil {
		t.Fatal(err)
	}
	f.clock.add(20 * time.Minute) // 40 minutes since the handoff, 20 since its last event
	if n, err := f.svc.ReturnIdle(ctx); err != nil || n != 0 {
		t.Fatalf("ReturnIdle 20 minutes after an event = %d, %v; want 0", n, err)
	}
	// An idle return that comes after new activity is refused whole.
	before, _ := st.Count(ctx)
	_, err := outbound.RecordAdmin(ctx, f.w, "handoff", map[string]any{}, []string{id}, f.clock.now(),
		handoff.SetState{Channel: "c1", ID: id, State: handoff.StateBot, At: f.clock.now(), From: []handoff.State{handoff.StateHuman},
			IdleSince: f.clock.now().Add(-30 * time.Minute)})
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("a late idle return: %v, want ErrConflict", err)
	}
	if after, _ := st.Count(ctx); after != before {
		t.Fatalf("a refused change appended %d records", after-before)
	}
	f.clock.add(11 * time.Minute)
	if n, err := f.svc.ReturnIdle(ctx); err != nil || n != 1 {
		t.Fatalf("ReturnIdle 31 minutes after the last event = %d, %v; want 1", n, err)
	}
	c, _ := f.svc.Get(ctx, "c1", id)
	if c.State != handoff.StateBot || c.Reason != "idle" {
		t.Fatalf("after the idle return: %+v", c)
	}
	a := f.admins(t)
	if last := a[len(a)-1]; last.Detail["by"] != "idle" || last.Detail["state"] != "bot" {
		t.Fatalf("idle return record: %+v", last)
	}
}

func testNotifications(t *testing.T, st Store) {
	ctx := context.Background()
	var mu sync.Mutex
	var got []string
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		got = append(got, string(b))
	}))
	defer srv.Close()
	f := newFixture(t, st, srv.URL)
	const id = "user:U4444"
	if err := f.svc.HandOff(ctx, "c1", id, "loans"); err != nil {
		t.Fatal(err)
	}
	due, err := st.DueNotifications(ctx, f.clock.now(), 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("queued with the handoff: %+v, %v", due, err)
	}
	// The receiver fails: each attempt is recorded, the next one later.
	if n, err := f.svc.Deliver(ctx, nil); err != nil || n != 2 {
		t.Fatalf("Deliver = %d, %v", n, err)
	}
	if due, _ := st.DueNotifications(ctx, f.clock.now(), 10); len(due) != 0 {
		t.Fatalf("due again at once after a failure: %+v", due)
	}
	f.clock.add(time.Second)
	due, _ = st.DueNotifications(ctx, f.clock.now(), 10)
	if len(due) != 2 || due[0].Attempts != 1 {
		t.Fatalf("due after the backoff: %+v", due)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if n, err := f.svc.Deliver(ctx, nil); err != nil || n != 2 {
		t.Fatalf("Deliver = %d, %v", n, err)
	}
	if due, _ := st.DueNotifications(ctx, f.clock.now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("still queued after delivery: %+v", due)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("received %d notifications, want 2", len(got))
	}
	all := strings.Join(got, "\n")
	if strings.Contains(all, "U4444") || !strings.Contains(all, record.Pseudonym(id)) || !strings.Contains(all, `"text":`) ||
		!strings.Contains(all, `"reason":"rule:loans"`) || !strings.Contains(all, "https://ops.example/console") {
		t.Fatalf("notifications: %s", all)
	}
	// Four attempts, each an outbound record naming its target, never the URL.
	n, _ := st.Count(ctx)
	attempts := 0
	for rec, err := range st.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		leaf.UnmarshalBinary(rec.Leaf)
		if leaf.Kind != ledger.KindOutbound {
			continue
		}
		p, err := ledger.OpenPayload(ctx, f.ring, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, b, _ := record.Decode(leaf.Kind, p)
		o := b.(*record.Outbound)
		if o.Endpoint == "notify" {
			attempts++
			if strings.Contains(string(p), srv.URL) {
				t.Fatalf("a notification record holds the target's URL")
			}
		}
	}
	if attempts != 4 {
		t.Fatalf("%d notification records, want 4", attempts)
	}
}

// testHolder: only the person who holds a conversation replies to it or
// shows typing in it; another agent may not hand it back or resolve it
// (an admin may); a repeated takeover by its holder records nothing; the
// loading animation is started at most once per TypingEvery.
func testHolder(t *testing.T, st Store) {
	ctx := context.Background()
	f := newFixture(t, st, "")
	const id = "user:U3333333333333333333333333333333"
	mei := handoff.Actor{Name: "mei", Role: "admin"}
	amara := handoff.Actor{Name: "amara", Role: "agent"}
	if err := f.svc.HandOff(ctx, "c1", id, "agent"); err != nil {
		t.Fatal(err)
	}
	// Typing in a conversation waiting for a person: take it over first.
	if err := f.svc.Typing(ctx, amara, "c1", id); !errors.Is(err, handoff.ErrNotHeld) {
		t.Fatalf("typing while waiting: %v, want ErrNotHeld", err)
	}
	if err := f.svc.TakeOver(ctx, mei, "c1", id, "console"); err != nil {
		t.Fatal(err)
	}
	recs := len(f.admins(t))
	// Taking it over again changes nothing and records nothing.
	if err := f.svc.TakeOver(ctx, mei, "c1", id, "console"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.admins(t)); n != recs {
		t.Fatalf("a repeated takeover wrote %d handoff records", n-recs)
	}
	before, _ := st.Count(ctx)
	msg := []json.RawMessage{json.RawMessage(`{"type":"text","text":"not mine"}`)}
	if _, err := f.svc.Reply(ctx, amara, "c1", id, msg); !errors.Is(err, handoff.ErrNotYours) {
		t.Errorf("amara's reply to mei's conversation: %v, want ErrNotYours", err)
	}
	if err := f.svc.Typing(ctx, amara, "c1", id); !errors.Is(err, handoff.ErrNotYours) {
		t.Errorf("amara's typing in mei's conversation: %v, want ErrNotYours", err)
	}
	if err := f.svc.HandBack(ctx, amara, "c1", id); !errors.Is(err, handoff.ErrNotYours) {
		t.Errorf("amara hands back mei's conversation: %v, want ErrNotYours", err)
	}
	if err := f.svc.Resolve(ctx, amara, "c1", id); !errors.Is(err, handoff.ErrNotYours) {
		t.Errorf("amara resolves mei's conversation: %v, want ErrNotYours", err)
	}
	if after, _ := st.Count(ctx); after != before || len(f.snd.sends) != 0 || len(f.snd.chats) != 0 {
		t.Fatalf("refused actions left %d records, %d sends, %d chat calls", after-before, len(f.snd.sends), len(f.snd.chats))
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.State != handoff.StateHuman || c.Agent != "mei" {
		t.Fatalf("after the refusals: %+v", c)
	}
	// The holder types: one loading call per TypingEvery, later ones
	// answered ErrTypingTooSoon without a call or a record.
	for i := range 5 {
		err := f.svc.Typing(ctx, mei, "c1", id)
		if i == 0 && err != nil || i > 0 && !errors.Is(err, handoff.ErrTypingTooSoon) {
			t.Fatalf("typing %d: %v", i, err)
		}
	}
	if len(f.snd.chats) != 1 || f.snd.chats[0].Agent != "mei" {
		t.Fatalf("chat calls after 5 typings: %+v", f.snd.chats)
	}
	f.clock.add(handoff.TypingEvery)
	if err := f.svc.Typing(ctx, mei, "c1", id); err != nil || len(f.snd.chats) != 2 {
		t.Fatalf("typing after %s: %v, %d calls", handoff.TypingEvery, err, len(f.snd.chats))
	}
	// An admin may hand back a conversation another person holds.
	bob := handoff.Actor{Name: "bob", Role: "agent"}
	if err := f.svc.TakeOver(ctx, bob, "c1", id, "console"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.HandBack(ctx, mei, "c1", id); err != nil {
		t.Fatalf("an admin hands back bob's conversation: %v", err)
	}
	if c, _ := f.svc.Get(ctx, "c1", id); c.State != handoff.StateBot {
		t.Fatalf("after the admin's handback: %+v", c)
	}
}
