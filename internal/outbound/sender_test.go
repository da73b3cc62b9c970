package outbound_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
	"github.com/prometheus/client_golang/prometheus"
)

// memState is an in-memory outbound.State for the Sender's own tests (the
// SQLite one is exercised end to end in cmd/linegate).
type memState struct {
	mu       sync.Mutex
	settings map[string]string
	consent  map[string]bool
}

func (m *memState) Setting(_ context.Context, k string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settings[k], nil
}
func (m *memState) OptedIn(_ context.Context, ch, u string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.consent[ch+"/"+u], nil
}

// memLedger records entries, and applies the effects of Commit to its
// memState, as a store does in the transaction of the records.
type memLedger struct {
	mu      sync.Mutex
	entries []ledger.Entry
	state   *memState
}

func (l *memLedger) Commit(_ context.Context, es []ledger.Entry, effects ...ledger.Effect) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	for _, e := range effects {
		switch e := e.(type) {
		case outbound.SetSetting:
			l.state.settings[e.Key] = e.Value
		case outbound.SetConsent:
			l.state.consent[e.Channel+"/"+e.User] = e.OptIn
		default:
			return 0, ledger.ErrUnsupportedEffect
		}
	}
	first := uint64(len(l.entries))
	l.entries = append(l.entries, es...)
	return first, nil
}

func (l *memLedger) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
	return uint64(len(l.entries) - 1), nil
}

func (l *memLedger) outcomes(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, e := range l.entries {
		if e.Kind != ledger.KindOutbound {
			continue // admin records of the switches
		}
		_, b, err := record.DecodePayload(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ Outcome, Endpoint string }
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("outbound record: %v: %s", err, b)
		}
		out = append(out, r.Endpoint+":"+r.Outcome)
	}
	return out
}

func newSender(t *testing.T, envKill bool) (*outbound.Sender, *sim.API, *memLedger) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "tok"}}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	l := &memLedger{state: &memState{settings: map[string]string{}, consent: map[string]bool{}}}
	s := outbound.NewSender(outbound.SenderOptions{
		Clients:       map[string]*outbound.Client{"c": {Base: srv.URL, Token: []byte("tok")}},
		Ledger:        l,
		State:         l.state,
		EnvKillSwitch: envKill,
	})
	return s, api, l
}

func req(api *sim.API, ageSeconds int) outbound.Request {
	return outbound.Request{Channel: "c", EventKey: "id:E1", To: "U1", UserID: "U1", ReplyToken: api.IssueReplyToken("c"),
		ReceivedMs: time.Now().Add(-time.Duration(ageSeconds) * time.Second).UnixMilli(),
		Messages:   []json.RawMessage{json.RawMessage(`{"type":"text","text":"hi"}`)}}
}

// TestReplyOrPush: a fresh reply token is used; an old one is not, and
// the message goes by push with a retry key derived from the event.
func TestReplyOrPush(t *testing.T) {
	s, api, l := newSender(t, false)
	ctx := context.Background()
	if o, err := s.Send(ctx, req(api, 1)); o != outbound.Sent || err != nil {
		t.Fatalf("fresh: %s %v", o, err)
	}
	if o, err := s.Send(ctx, req(api, 55)); o != outbound.Sent || err != nil {
		t.Fatalf("old token: %s %v", o, err)
	}
	if got := l.outcomes(t); len(got) != 2 || got[0] != "reply:sent" || got[1] != "push:sent" {
		t.Errorf("outcomes %v", got)
	}
	// Both sends counted from their webhooks' receipt, 1 s and 55 s ago.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "linegate_reply_latency_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() < 56 || h.GetSampleSum() > 58 {
				t.Errorf("reply latency: %d samples, sum %v s; want 2, about 56 s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	calls := api.Calls()
	if len(calls) != 2 || calls[1].Headers["X-Line-Retry-Key"][0] != outbound.RetryKeyFor("c/id:E1//0") {
		t.Errorf("calls %+v", calls)
	}
}

func TestKillSwitchAndDryRun(t *testing.T) {
	ctx := context.Background()
	s, api, l := newSender(t, true) // REPLY_ENABLE=false
	if o, err := s.Send(ctx, req(api, 1)); err != nil || o != outbound.Suppressed {
		t.Errorf("send with the kill switch on: %s, %v", o, err)
	}
	s2, api2, l2 := newSender(t, false)
	if err := s2.SetDryRun(ctx, l2, "c", true, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if o, err := s2.Send(ctx, req(api2, 1)); err != nil || o != outbound.DryRun {
		t.Errorf("send in dry-run: %s, %v", o, err)
	}
	if err := s2.SetDryRun(ctx, l2, "c", false, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetKillSwitch(ctx, l2, true, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if o, err := s2.Send(ctx, req(api2, 1)); err != nil || o != outbound.Suppressed {
		t.Errorf("send with the kill switch set: %s, %v", o, err)
	}
	if len(api.Calls())+len(api2.Calls()) != 0 {
		t.Error("a call went out")
	}
	if got := append(l.outcomes(t), l2.outcomes(t)...); len(got) != 3 || got[0] != "reply:suppressed" || got[1] != "reply:dry_run" || got[2] != "reply:suppressed" {
		t.Errorf("outcomes %v", got)
	}
}

// TestRateLimit: a channel's rate limit spaces its sends.
func TestRateLimit(t *testing.T) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "tok"}}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	s := outbound.NewSender(outbound.SenderOptions{
		Clients:    map[string]*outbound.Client{"c": {Base: srv.URL, Token: []byte("tok")}},
		Ledger:     &memLedger{},
		State:      &memState{settings: map[string]string{}, consent: map[string]bool{}},
		RateLimits: map[string]float64{"c": 10},
	})
	start := time.Now()
	for range 6 {
		r := req(api, 1)
		r.ForcePush = true
		if o, err := s.Send(context.Background(), r); o != outbound.Sent || err != nil {
			t.Fatal(o, err)
		}
	}
	// A burst of 1, then 5 more at 10/s: at least 0.5 s.
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Errorf("6 sends at 10/s took %v", d)
	}
}

// TestReplyTokenClaimed: two sends of one reply token, as two rules of one
// event (continue: true) or a rule and a person would make: the first
// replies, the second pushes without calling LINE with the spent token,
// and its record says who used it; a send held back by the kill switch
// leaves the token to the next one; a retry of the same send may reply
// again, as it would have without the claims.
func TestReplyTokenClaimed(t *testing.T) {
	ctx := context.Background()
	s, api, l := newSender(t, false)
	r := req(api, 1)
	if err := s.SetKillSwitch(ctx, l, true, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	held := r
	held.Agent, held.EventKey = "alice", "agent-reply:1"
	if o, err := s.Send(ctx, held); o != outbound.Suppressed || err != nil {
		t.Fatalf("held back: %s %v", o, err)
	}
	if err := s.SetKillSwitch(ctx, l, false, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	first := r
	first.Rule = "hello"
	if o, err := s.Send(ctx, first); o != outbound.Sent || err != nil {
		t.Fatalf("first: %s %v", o, err)
	}
	second := r
	second.Rule, second.Seq = "also", 1
	if o, err := s.Send(ctx, second); o != outbound.Sent || err != nil {
		t.Fatalf("second: %s %v", o, err)
	}
	if got := l.outcomes(t); len(got) != 3 || got[1] != "reply:sent" || got[2] != "push:sent" {
		t.Errorf("outcomes %v, want a held reply, a reply, a push", got)
	}
	_, b, err := record.DecodePayload(l.entries[len(l.entries)-1].Payload)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Extra map[string]string }
	json.Unmarshal(b, &rec)
	if rec.Extra["reply_token"] != "used by rule hello: pushed" {
		t.Errorf("the push's record: extra %v", rec.Extra)
	}
	for _, c := range api.Calls() {
		if c.Status != 200 {
			t.Errorf("LINE refused a call: %s %d %s", c.Path, c.Status, c.Body)
		}
	}
	// The first send again (a retry after a failure): it may reply; LINE
	// judges the token.
	if o, _ := s.Send(ctx, first); o == outbound.Sent {
		t.Error("a spent token was accepted by LINE")
	}
	if calls := api.Calls(); calls[len(calls)-1].Path != "/v2/bot/message/reply" {
		t.Errorf("the retry of the holder went to %s, want a reply", calls[len(calls)-1].Path)
	}
	// The registry is the Sender's, for the proxy to share.
	if ok, by := s.ReplyTokens().Claim("c", r.ReplyToken, "tool crm", "tool:x"); ok || by != "rule hello" {
		t.Errorf("the Sender's registry: %v %q", ok, by)
	}
}

// TestReplyTokenReleased: a reply LINE cannot have taken leaves its token
// to the next send: when LINE could not be reached, or refused the request
// itself (429); a reply LINE answered "Invalid reply token" keeps it, and
// the next send pushes.
func TestReplyTokenReleased(t *testing.T) {
	ctx := context.Background()
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "tok"}}})
	var mode atomic.Value
	mode.Store("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "429":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"message":"You have reached your rate limit."}`))
		default:
			api.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there
	l := &memLedger{state: &memState{settings: map[string]string{}, consent: map[string]bool{}}}
	c := &outbound.Client{Base: down.URL, Token: []byte("tok"), Policy: outbound.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond}}
	s := outbound.NewSender(outbound.SenderOptions{Clients: map[string]*outbound.Client{"c": c}, Ledger: l, State: l.state})
	send := func(r outbound.Request, agent string) outbound.Outcome {
		r.Agent, r.EventKey = agent, "agent-reply:"+agent
		o, _ := s.Send(ctx, r)
		return o
	}
	r := req(api, 1)
	if o := send(r, "alice"); o != outbound.Failed {
		t.Fatalf("LINE down: %s", o)
	}
	c.Base = srv.URL
	mode.Store("429")
	if o := send(r, "bob"); o != outbound.Failed {
		t.Fatalf("LINE at its rate limit: %s", o)
	}
	mode.Store("")
	if o := send(r, "carol"); o != outbound.Sent {
		t.Fatalf("after: %s", o)
	}
	// LINE says the token is spent (here: by carol's reply, which this
	// send does not know of, as after a restart): the next send pushes.
	s.ReplyTokens().Release("c", r.ReplyToken, "send:agent-reply:carol//0")
	if o := send(r, "dave"); o != outbound.Failed {
		t.Fatalf("a spent token: %s", o)
	}
	if o := send(r, "erin"); o != outbound.Sent {
		t.Fatalf("after LINE's Invalid reply token: %s", o)
	}
	if got := l.outcomes(t); !slices.Equal(got, []string{"reply:failed", "reply:failed", "reply:sent", "reply:failed", "push:sent"}) {
		t.Errorf("outcomes %v", got)
	}
	// The records say the same, read back (a person's reply reads them).
	var taken []bool
	for _, e := range l.entries {
		_, b, err := record.DecodePayload(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var rec record.Outbound
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		taken = append(taken, outbound.MayHaveTaken(rec.Attempts))
	}
	if !slices.Equal(taken, []bool{false, false, true, true, true}) {
		t.Errorf("the records, read back: may have taken %v, want false, false, true, true, true", taken)
	}
	if !outbound.MayHaveTaken([]outbound.Attempt{{Error: "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"}}) {
		t.Error("a connection lost after sending: LINE may have taken it")
	}
}
