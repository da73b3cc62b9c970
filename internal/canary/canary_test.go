package canary

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
)

func TestMarkers(t *testing.T) {
	m1, m2 := NewMarker(), NewMarker()
	if m1 == m2 || !strings.HasPrefix(m1, MarkerPrefix) || len(m1) != markerLen {
		t.Fatalf("markers %q, %q", m1, m2)
	}
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"none", "hello", nil},
		{"prefix alone", "lgcanary- is our prefix", nil},
		{"not a uuid", MarkerPrefix + strings.Repeat("z", 36), nil},
		{"cut short", m1[:markerLen-1], nil},
		{"one", "linegate canary " + m1, []string{m1}},
		{"in JSON", `{"text":"x` + m1 + `y"}`, []string{m1}},
		{"twice, and another", m1 + " " + m2 + " " + m1, []string{m1, m2}},
		{"prefix then one", MarkerPrefix + m2, []string{m2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Markers([]byte(tc.in)); !slices.Equal(got, tc.want) {
				t.Errorf("Markers(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// sharedLedger is what replicas share: the records committed and the
// settings their effects set.
type sharedLedger struct {
	mu       sync.Mutex
	records  []record.Admin
	settings map[string]string
}

func (l *sharedLedger) Commit(_ context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range entries {
		_, b, err := record.Decode(e.Kind, e.Payload)
		if err != nil {
			return 0, err
		}
		l.records = append(l.records, *b.(*record.Admin))
	}
	for _, e := range effects {
		if s, ok := e.(outbound.SetSetting); ok {
			l.settings[s.Key] = s.Value
		}
	}
	return uint64(len(l.records) - 1), nil
}

func (l *sharedLedger) Setting(_ context.Context, key string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.settings[key], nil
}

func (l *sharedLedger) actions() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		out = append(out, r.Action)
	}
	return out
}

// groupSender pushes as LINE would, and has the canary group's echo come
// back through another replica's pipeline.
type groupSender struct {
	t     *testing.T
	other pipeline.Action
	sent  []outbound.Request
}

func (s *groupSender) Send(ctx context.Context, r outbound.Request) (outbound.Outcome, error) {
	s.sent = append(s.sent, r)
	var msg struct{ Text string }
	json.Unmarshal(r.Messages[0], &msg)
	raw, _ := json.Marshal(map[string]any{"type": "message", "source": map[string]any{"type": "group", "groupId": r.To, "userId": "U1"},
		"message": map[string]any{"id": "1", "type": "text", "text": msg.Text}})
	e, err := line.Decode(raw)
	if err != nil {
		s.t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		if err := s.other.Handle(context.Background(), &pipeline.Item{Channel: r.Channel}, e); err != nil {
			s.t.Error(err)
		}
	}()
	return outbound.Sent, nil
}

const group = "C0123456789abcdef0123456789abcdef"

// TestRunAcrossReplicas: the echo of a canary comes back through another
// replica's pipeline; that replica records the sighting, and the run that
// waits in the first one completes from it. The echo is not handed to the
// rules there.
func TestRunAcrossReplicas(t *testing.T) {
	l := &sharedLedger{settings: map[string]string{}}
	rulesSaw := 0
	rules := pipeline.ActionFunc(func(context.Context, *pipeline.Item, *line.Event) error { rulesSaw++; return nil })
	opts := Options{Groups: map[string]string{"demo": group}, Ledger: l, State: l, Poll: 10 * time.Millisecond}
	second := New(opts)
	sender := &groupSender{t: t, other: second.Action(rules)}
	opts.Sender = sender
	first := New(opts)
	res, err := first.Run(context.Background(), "demo", 5*time.Second, map[string]any{"remote": "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OK || res.RoundTripMs <= 0 || res.Send != "sent" {
		t.Errorf("run: %+v", res)
	}
	if len(sender.sent) != 1 || sender.sent[0].To != group || !sender.sent[0].Canary || !sender.sent[0].ForcePush {
		t.Errorf("sends: %+v", sender.sent)
	}
	if got := l.actions(); !slices.Equal(got, []string{"canary_start", "canary_echo", "canary_run"}) {
		t.Errorf("records %v, want canary_start, canary_echo, canary_run", got)
	}
	if rulesSaw != 0 {
		t.Errorf("the rules saw the echo %d times", rulesSaw)
	}
	// Without the shared state, the other replica's sighting is not seen.
	opts.State = nil
	second = New(opts)
	sender.other = second.Action(rules)
	lone := New(opts)
	if res, err := lone.Run(context.Background(), "demo", 300*time.Millisecond, nil); err != nil || res.Outcome != Timeout {
		t.Errorf("run without the shared state: %+v, %v", res, err)
	}
}

// TestCheckSend: a marker in a send to anyone but the canary group is a
// leak, recorded under the recipient's key; the canary itself and sends
// to the group are not; a channel without a group has leaks too.
func TestCheckSend(t *testing.T) {
	l := &sharedLedger{settings: map[string]string{}}
	w := New(Options{Groups: map[string]string{"demo": group, "plain": ""}, Ledger: l, State: l})
	// Text shaped like a marker that no run sent is no leak: anyone can
	// type one.
	forged := []byte(`{"to":"x","messages":[{"type":"text","text":"` + NewMarker() + `"}]}`)
	w.CheckSend(outbound.Request{Channel: "demo", To: "U0123456789abcdef0123456789abcdef"}, forged)
	if n := len(l.actions()); n != 0 {
		t.Fatalf("%d records for a marker no run sent, want none", n)
	}
	// A marker that a run (of another replica: only the setting) sent.
	m := NewMarker()
	l.settings[settingIssued+m] = "2026-12-02T00:00:00Z"
	body := []byte(`{"to":"x","messages":[{"type":"text","text":"` + m + `"}]}`)
	w.CheckSend(outbound.Request{Channel: "demo", To: group, Canary: true}, body)
	w.CheckSend(outbound.Request{Channel: "demo", To: group}, body)
	w.CheckSend(outbound.Request{Channel: "demo", To: "U0123456789abcdef0123456789abcdef"}, []byte(`{"text":"lgcanary- but no marker"}`))
	if n := len(l.actions()); n != 0 {
		t.Fatalf("%d records, want none", n)
	}
	w.CheckSend(outbound.Request{Channel: "demo", To: "U0123456789abcdef0123456789abcdef", Rule: "echo", EventKey: "k1"}, body)
	w.CheckSend(outbound.Request{Channel: "plain", To: "C1123456789abcdef0123456789abcdef"}, body)
	if got := l.actions(); !slices.Equal(got, []string{"canary_leak", "canary_leak"}) {
		t.Fatalf("records %v", got)
	}
	r := l.records[0]
	if r.Subject != "user:U0123456789abcdef0123456789abcdef" || r.Detail["direction"] != "outbound" || r.Detail["rule"] != "echo" {
		t.Errorf("leak record: %+v", r)
	}
	if l.records[1].Subject != "group:C1123456789abcdef0123456789abcdef" {
		t.Errorf("leak record on a channel without a group: %+v", l.records[1])
	}
}
