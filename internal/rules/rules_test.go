package rules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/rules"
)

func load(t *testing.T, y string) *rules.Set {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := rules.Load([]string{p}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func names(rs []*rules.Rule) string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name)
	}
	return strings.Join(n, ",")
}

func TestMatching(t *testing.T) {
	s := load(t, `
rules:
  - {name: exact, priority: 50, when: {text: {exact: track}}, reply: [{type: text, text: a}]}
  - {name: prefix, priority: 40, when: {text: {prefix: "order "}}, continue: true, reply: [{type: text, text: a}]}
  - {name: contains, priority: 30, when: {text: {contains: parcel}}, reply: [{type: text, text: a}]}
  - {name: regex, priority: 20, when: {text: {regex: "^#[0-9]+$"}}, reply: [{type: text, text: a}]}
  - {name: group-only, priority: 15, when: {event: [join], source: [group]}, reply: [{type: text, text: a}]}
  - {name: postback, priority: 12, when: {postback: {prefix: "action=receive"}}, reply: [{type: text, text: a}]}
  - {name: other-channel, priority: 11, when: {channel: [shop2]}, reply: [{type: text, text: a}]}
  - {name: fallback, priority: 0, when: {event: [message]}, reply: [{type: text, text: a}]}
`)
	msg := func(text string) rules.Input {
		return rules.Input{Channel: "shop", Type: "message", SourceType: "user", Text: text, HasText: true, Time: time.Now()}
	}
	for _, tt := range []struct {
		in   rules.Input
		want string
	}{
		{msg("track"), "exact"},
		{msg("ＴＲＡＣＫ"), "exact"}, // full width, NFKC
		{msg("  Track "), "exact"},
		{msg("tracking"), "fallback"},
		{msg("Order 42"), "prefix,fallback"}, // continue
		{msg("where is my PARCEL"), "contains"},
		{msg("#１２３"), "regex"}, // full-width digits
		{msg("#12a"), "fallback"},
		{rules.Input{Channel: "shop", Type: "join", SourceType: "group"}, "group-only"},
		{rules.Input{Channel: "shop", Type: "join", SourceType: "room"}, ""},
		{rules.Input{Channel: "shop", Type: "postback", Postback: "action=receive&order=1", HasPost: true}, "postback"},
		{rules.Input{Channel: "shop2", Type: "follow"}, "other-channel"},
	} {
		if got := names(s.Match(tt.in)); got != tt.want {
			t.Errorf("%+v: matched %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHours(t *testing.T) {
	s := load(t, `
rules:
  - name: open
    priority: 2
    when: {hours: {tz: Asia/Bangkok, days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}}
    reply: [{type: text, text: open}]
  - name: night
    priority: 1
    when: {hours: {tz: Asia/Tokyo, from: "22:00", to: "06:00"}}
    reply: [{type: text, text: night}]
`)
	bkk, err := time.LoadLocation("Asia/Bangkok")
	if err != nil {
		t.Fatal(err)
	}
	tyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 26, 10, 0, 0, 0, bkk), "open"},   // Thursday 10:00
		{time.Date(2026, 11, 26, 18, 0, 0, 0, bkk), ""},       // closing time
		{time.Date(2026, 11, 28, 10, 0, 0, 0, bkk), ""},       // Saturday
		{time.Date(2026, 11, 26, 23, 30, 0, 0, tyo), "night"}, // wraps midnight
		{time.Date(2026, 11, 27, 5, 59, 0, 0, tyo), "night"},
	} {
		if got := names(s.Match(rules.Input{Type: "follow", Time: tt.t})); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	for name, y := range map[string]string{
		"two matchers":   `rules: [{name: a, when: {text: {exact: x, prefix: y}}, reply: [{type: text, text: a}]}]`,
		"bad regex":      `rules: [{name: a, when: {text: {regex: "("}}, reply: [{type: text, text: a}]}]`,
		"no action":      `rules: [{name: a, when: {event: [follow]}}]`,
		"six messages":   `rules: [{name: a, reply: [{type: text, text: a},{type: text, text: a},{type: text, text: a},{type: text, text: a},{type: text, text: a},{type: text, text: a}]}]`,
		"bad zone":       `rules: [{name: a, when: {hours: {tz: Mars/Olympus, from: "09:00", to: "10:00"}}, reply: [{type: text, text: a}]}]`,
		"bad template":   `rules: [{name: a, reply: [{type: text, text: "{{.Nope"}]}]`,
		"unknown key":    `rules: [{name: a, whne: {}, reply: [{type: text, text: a}]}]`,
		"duplicate name": `rules: [{name: a, reply: [{type: text, text: a}]}, {name: a, reply: [{type: text, text: b}]}]`,
		"bad class":      `rules: [{name: a, class: spam, reply: [{type: text, text: a}]}]`,
		"Kelvin sign":    "rules: [{name: a, when: {hours: {tz: Asia/Tokyo, days: [\u212Aon], from: \"09:00\", to: \"10:00\"}}, reply: [{type: text, text: a}]}]",
		"not a day":      `rules: [{name: a, when: {hours: {tz: Asia/Tokyo, days: [monkey], from: "09:00", to: "10:00"}}, reply: [{type: text, text: a}]}]`,
		"empty day":      `rules: [{name: a, when: {hours: {tz: Asia/Tokyo, days: [""], from: "09:00", to: "10:00"}}, reply: [{type: text, text: a}]}]`,
	} {
		p := filepath.Join(t.TempDir(), "r.yaml")
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := rules.Load([]string{p}, nil, nil); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// TestLoadErrorsNameTheLine: a rule that does not compile is named with
// its file and line, and a day name that is not ASCII is an error, not a
// panic.
func TestLoadErrorsNameTheLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shop.yaml")
	y := "rules:\n  - name: fine\n    reply: [{type: text, text: a}]\n  - name: late\n    when:\n      hours: {tz: Asia/Tokyo, days: [\"\u212Aon\", Monday], from: \"09:00\", to: \"10:00\"}\n    reply: [{type: text, text: b}]\n"
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := rules.Load([]string{p}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), p+": line 4: rule \"late\"") || !strings.Contains(err.Error(), "is not a day") {
		t.Errorf("error %v, want it to name %s, line 4, and the day", err, p)
	}
	ok := strings.Replace(y, "\u212Aon", "mon", 1)
	if err := os.WriteFile(p, []byte(ok), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load([]string{p}, nil, nil); err != nil {
		t.Errorf("mon and Monday: %v", err)
	}
}

func TestHashChangesWithRules(t *testing.T) {
	a := load(t, `rules: [{name: a, reply: [{type: text, text: one}]}]`)
	b := load(t, `rules: [{name: a, reply: [{type: text, text: two}]}]`)
	c := load(t, `rules: [{name: a, reply: [{type: text, text: one}]}]`)
	if a.Hash == b.Hash || a.Hash != c.Hash {
		t.Errorf("hashes %s %s %s", a.Hash, b.Hash, c.Hash)
	}
}

// fakeSender records requests: the engine's contract with the Sender.
type fakeSender struct {
	mu   sync.Mutex
	reqs []outbound.Request
}

func (f *fakeSender) Send(_ context.Context, r outbound.Request) (outbound.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return outbound.Sent, nil
}

type nopLedger struct{}

func (nopLedger) Append(context.Context, ledger.Entry) (uint64, error) { return 0, nil }

func event(t *testing.T, text string) (rules.Delivery, *line.Event) {
	raw := `{"type":"message","mode":"active","timestamp":1,"webhookEventId":"01E","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U9"},"replyToken":"rt","message":{"id":"1","type":"text","text":"` + text + `","quoteToken":"q"}}`
	e := line.DecodeEvent([]byte(raw))
	if len(e.Problems) > 0 {
		t.Fatal(e.Problems)
	}
	return rules.Delivery{Key: "id:01E", Channel: "c", ReceivedMs: time.Now().UnixMilli(), Header: map[string]string{"X-Line-Dry-Run": "true"}}, e
}

func TestEngine(t *testing.T) {
	var gotBody map[string]any
	var calls int
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("lookup request: %v", err)
		}
		if err := json.Unmarshal(b, &gotBody); err != nil {
			t.Errorf("lookup request: %v: %s", err, b)
		}
		w.Write([]byte(`{"status":"ok","n":3}`))
	}))
	defer svc.Close()
	host := strings.TrimPrefix(svc.URL, "http://")
	s := load(t, `
rules:
  - name: post-lookup
    when: {text: {exact: post}}
    lookup: {url: "`+svc.URL+`/q", method: POST, body: {user: "{{.UserID}}", said: "{{.Text}}"}}
    reply: [{type: text, text: "{{.Lookup.status}} {{.Lookup.n}}"}]
  - name: forbidden
    when: {text: {exact: evil}}
    lookup: {url: "http://169.254.169.254/latest", fallback: [{type: text, text: "no"}]}
    reply: [{type: text, text: "yes"}]
  - name: pushy
    push: true
    cooldown: 1h
    when: {text: {exact: push}}
    reply: [{type: text, text: "pushed"}]
`)
	fs := &fakeSender{}
	eng := rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}, LookupHosts: []string{host},
		Channels: map[string]rules.ChannelInfo{"c": {AllowDryRunHeader: true}}})
	for i, text := range []string{"post", "evil", "push", "push"} {
		it, e := event(t, text)
		it.Key = fmt.Sprintf("id:01E%d", i)
		if err := eng.Handle(context.Background(), it, e); err != nil {
			t.Fatal(err)
		}
	}
	if len(fs.reqs) != 3 {
		t.Fatalf("%d sends, want 3 (cooldown holds the second push)", len(fs.reqs))
	}
	// A retry of the event that fired is not held by its own cooldown.
	it, e := event(t, "push")
	it.Key = "id:01E2"
	if err := eng.Handle(context.Background(), it, e); err != nil || len(fs.reqs) != 4 {
		t.Fatalf("retry of the pushing event: %d sends, %v", len(fs.reqs), err)
	}
	fs.reqs = fs.reqs[:3]
	if string(fs.reqs[0].Messages[0]) != `{"text":"ok 3","type":"text"}` || gotBody["user"] != "U9" || gotBody["said"] != "post" {
		t.Errorf("POST lookup: sent %s, service got %v", fs.reqs[0].Messages[0], gotBody)
	}
	if calls != 1 || string(fs.reqs[1].Messages[0]) != `{"text":"no","type":"text"}` {
		t.Errorf("a lookup outside the allow-list was made, or no fallback: %s", fs.reqs[1].Messages[0])
	}
	if !fs.reqs[2].ForcePush || fs.reqs[2].To != "U9" {
		t.Errorf("push rule: %+v", fs.reqs[2])
	}
	for _, r := range fs.reqs {
		if !r.DryRun || !strings.HasPrefix(r.EventKey, "id:01E") || r.ReplyToken != "rt" {
			t.Errorf("request %+v: want dry-run (header allowed), linked to the event", r)
		}
	}
}
