package rules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/rules"
)

// internalService is a host outside every allow-list: it counts the
// requests that reach it and answers what an attacker would want.
func internalService(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"status":"internal secret"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

// runText runs one text event through an engine and returns the text of
// the first message sent.
func runText(t *testing.T, eng *rules.Engine, fs *fakeSender, text string) string {
	t.Helper()
	it, e := event(t, text)
	it.Key = fmt.Sprintf("id:%s:%d", t.Name(), len(fs.reqs))
	if err := eng.Handle(context.Background(), it, e); err != nil {
		t.Fatal(err)
	}
	if len(fs.reqs) == 0 {
		t.Fatal("nothing sent")
	}
	var m struct{ Text string }
	if err := json.Unmarshal(fs.reqs[len(fs.reqs)-1].Messages[0], &m); err != nil {
		t.Fatal(err)
	}
	return m.Text
}

// TestLookupRefusesRedirects: an allowed lookup service that redirects to
// a host outside lookup_hosts gets the fallback sent, and the other host
// is never called.
func TestLookupRefusesRedirects(t *testing.T) {
	internal, hits := internalService(t)
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, internal.URL+"/latest/meta-data", code)
			}))
			defer allowed.Close()
			s := load(t, `
rules:
  - name: track
    when: {text: {exact: track}}
    lookup: {url: "`+allowed.URL+`/orders/{{.UserID}}", fallback: [{type: text, text: "fallback"}]}
    reply: [{type: text, text: "{{.Lookup.status}}"}]
`)
			fs := &fakeSender{}
			eng := rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}, LookupHosts: []string{hostOf(allowed.URL)}})
			if got := runText(t, eng, fs, "track"); got != "fallback" {
				t.Errorf("sent %q, want the fallback", got)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the host outside lookup_hosts was called %d times", n)
			}
		})
	}
}

// TestLookupHostsComparePorts: an allow-list entry allows its host on its
// port alone; an entry without a port allows the scheme's default port
// only.
func TestLookupHostsComparePorts(t *testing.T) {
	svc, hits := internalService(t)
	other, otherHits := internalService(t)
	_, port, _ := strings.Cut(hostOf(svc.URL), ":")
	for _, tt := range []struct {
		name  string
		hosts []string
		url   string
		ok    bool
	}{
		{"exact", []string{"127.0.0.1:" + port}, svc.URL, true},
		{"another port of an allowed host", []string{hostOf(svc.URL)}, other.URL, false},
		{"an entry without a port is port 80", []string{"127.0.0.1"}, svc.URL, false},
		{"localhost is not 127.0.0.1", []string{"localhost:" + port}, svc.URL, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			otherHits.Store(0)
			s := load(t, `
rules:
  - name: track
    when: {text: {exact: track}}
    lookup: {url: "`+tt.url+`/orders", fallback: [{type: text, text: "fallback"}]}
    reply: [{type: text, text: "{{.Lookup.status}}"}]
`)
			fs := &fakeSender{}
			eng := rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}, LookupHosts: tt.hosts})
			got := runText(t, eng, fs, "track")
			if called := hits.Load()+otherHits.Load() > 0; called != tt.ok || (got == "fallback") == tt.ok {
				t.Errorf("lookup_hosts %v, url %s: called %v, sent %q; want called %v", tt.hosts, tt.url, called, got, tt.ok)
			}
		})
	}
}

// TestLookupEscapesValues: values put into a lookup URL are escaped for
// the part of the URL they are in: a user's text cannot add path
// segments, a query or a fragment. raw says otherwise, explicitly.
func TestLookupEscapesValues(t *testing.T) {
	var mu sync.Mutex
	var got *url.URL
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL
		mu.Unlock()
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer svc.Close()
	for _, tt := range []struct {
		tmpl, text string
		path, q    string // the escaped path and the raw query the service sees
	}{
		{"/orders/{{.Text}}", "../../admin?x=1#frag", "/orders/..%2F..%2Fadmin%3Fx=1%23frag", ""},
		{"/orders/{{.Text}}", "..", "/orders/%2E%2E", ""},
		{"/orders/{{.Text}}/{{.Text}}", ".", "/orders/%2E/%2E", ""},
		{"/orders/{{.Text}}?user={{.UserID}}", "a b", "/orders/a%20b", "user=U9"},
		{"/search?q={{.Text}}&user={{.UserID}}", "x&user=admin#f", "/search", "q=x%26user%3Dadmin%23f&user=U9"},
		{"/search?q={{upper .Text}}", "a+b=c", "/search", "q=A%2BB%3DC"},
		{"/search?{{if .Text}}q={{.Text}}{{end}}&n=1", "a/b?", "/search", "q=a%2Fb%3F&n=1"},
		{"/raw/{{raw .Text}}", "a/b", "/raw/a/b", ""},
		{"/raw?{{.Text | raw}}", "a=1&b=2", "/raw", "a=1&b=2"},
	} {
		t.Run(tt.tmpl, func(t *testing.T) {
			s := load(t, `
rules:
  - name: look
    when: {event: [message]}
    lookup: {url: "`+svc.URL+tt.tmpl+`", fallback: [{type: text, text: "fallback"}]}
    reply: [{type: text, text: "{{.Lookup.status}}"}]
`)
			fs := &fakeSender{}
			eng := rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}, LookupHosts: []string{hostOf(svc.URL)}})
			if sent := runText(t, eng, fs, tt.text); sent != "ok" {
				t.Fatalf("sent %q", sent)
			}
			mu.Lock()
			defer mu.Unlock()
			if got.EscapedPath() != tt.path || got.RawQuery != tt.q || got.Fragment != "" {
				t.Errorf("text %q: the service got path %s query %q fragment %q; want %s %q", tt.text, got.EscapedPath(), got.RawQuery, got.Fragment, tt.path, tt.q)
			}
		})
	}
}

func TestLookupURLTemplateErrors(t *testing.T) {
	for name, u := range map[string]string{
		"a value in the host":   "https://{{.Text}}.example/x",
		"a value in the scheme": "{{.Text}}://orders.example/x",
		"branches that differ":  "https://orders.example/x{{if .Text}}?q={{end}}{{.Text}}",
		"a template call":       `https://orders.example/{{template "x"}}`,
		"raw not last":          "https://orders.example/{{raw .Text | upper}}",
	} {
		p := filepath.Join(t.TempDir(), "r.yaml")
		y := `rules: [{name: a, lookup: {url: '` + u + `'}, reply: [{type: text, text: a}]}]`
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := rules.Load([]string{p}, nil, nil); err == nil {
			t.Errorf("%s: %s loaded", name, u)
		}
	}
}

// capLedger keeps what is appended.
type capLedger struct {
	mu      sync.Mutex
	entries []ledger.Entry
}

func (c *capLedger) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
	return uint64(len(c.entries)), nil
}

func loadWith(t *testing.T, y string, env map[string]string) (*rules.Set, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return rules.Load([]string{p}, nil, &rules.Sources{Getenv: func(k string) string { return env[k] }})
}

// TestForwardSignsWithItsOwnSecret: the upstream bot verifies the
// forwarded event with its own secret, not the channel's; the ledger
// names the secret by its id and never holds it.
func TestForwardSignsWithItsOwnSecret(t *testing.T) {
	const channelSecret, botSecret = "channel-secret-0123456789abcdef", "bot-secret-fedcba9876543210"
	var verified, forged atomic.Int32
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("forwarded request: %v", err)
		}
		sig := r.Header.Get(line.SignatureHeader)
		switch sig {
		case line.Sign([]byte(botSecret), b):
			verified.Add(1)
		case line.Sign([]byte(channelSecret), b):
			forged.Add(1)
		}
	}))
	defer bot.Close()
	s, err := loadWith(t, `
rules:
  - name: bot
    when: {text: {prefix: "bot "}}
    forward: {url: "`+bot.URL+`/callback", secret_env: BOT_SECRET, allow_http: true}
`, map[string]string{"BOT_SECRET": botSecret})
	if err != nil {
		t.Fatal(err)
	}
	led := &capLedger{}
	eng := rules.NewEngine(s, rules.EngineOptions{Sender: &fakeSender{}, Ledger: led,
		Channels: map[string]rules.ChannelInfo{"c": {}}})
	it, e := event(t, "bot hello")
	if err := eng.Handle(context.Background(), it, e); err != nil {
		t.Fatal(err)
	}
	if verified.Load() != 1 || forged.Load() != 0 {
		t.Errorf("the bot verified %d events with its own secret, %d with the channel's; want 1, 0", verified.Load(), forged.Load())
	}
	if len(led.entries) != 1 {
		t.Fatalf("%d records, want the forward's", len(led.entries))
	}
	if strings.Contains(string(led.entries[0].Payload), botSecret) {
		t.Error("the forward record holds the secret")
	}
	_, body, err := record.Decode(record.KindOutbound, led.entries[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if o := body.(*record.Outbound); o.Endpoint != "forward" || o.SecretID != "secret_env:BOT_SECRET" || o.Status != 200 {
		t.Errorf("forward record %+v: want its secret id secret_env:BOT_SECRET and status 200", o)
	}
}

// TestForwardRefusesRedirects: an upstream that redirects does not get
// the event sent on to the other host.
func TestForwardRefusesRedirects(t *testing.T) {
	internal, hits := internalService(t)
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/callback", http.StatusTemporaryRedirect)
	}))
	defer bot.Close()
	s, err := loadWith(t, `
rules:
  - name: bot
    when: {text: {prefix: "bot "}}
    forward: {url: "`+bot.URL+`/callback", secret: bot-secret, secret_id: bot-2026-12, allow_http: true}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	led := &capLedger{}
	eng := rules.NewEngine(s, rules.EngineOptions{Sender: &fakeSender{}, Ledger: led})
	it, e := event(t, "bot hello")
	if err := eng.Handle(context.Background(), it, e); err == nil {
		t.Error("a redirected forward succeeded")
	}
	if hits.Load() != 0 {
		t.Errorf("the redirect was followed %d times", hits.Load())
	}
	_, body, err := record.Decode(record.KindOutbound, led.entries[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if o := body.(*record.Outbound); o.Status != http.StatusTemporaryRedirect || o.SecretID != "bot-2026-12" {
		t.Errorf("forward record %+v: want status 307, secret id bot-2026-12", o)
	}
}

func TestForwardLoadErrors(t *testing.T) {
	env := map[string]string{"BOT_SECRET": "s"}
	for name, f := range map[string]string{
		"no secret":                 `{url: "https://bot.example/callback"}`,
		"two secrets":               `{url: "https://bot.example/callback", secret: a, secret_env: BOT_SECRET}`,
		"unset variable":            `{url: "https://bot.example/callback", secret_env: NOPE}`,
		"missing file":              `{url: "https://bot.example/callback", secret_file: /nonexistent/secret}`,
		"http":                      `{url: "http://bot.example/callback", secret: a}`,
		"http to loopback":          `{url: "http://127.0.0.1:9000/callback", secret: a}`,
		"allow_http off loopback":   `{url: "http://bot.example/callback", secret: a, allow_http: true}`,
		"allow_http to a name":      `{url: "http://localhost:9000/callback", secret: a, allow_http: true}`,
		"not a url":                 `{url: "bot.example/callback", secret: a}`,
		"another scheme":            `{url: "ftp://bot.example/callback", secret: a}`,
		"user info":                 `{url: "https://u:p@bot.example/callback", secret: a}`,
		"allow_http on a private …": `{url: "http://10.0.0.1/callback", secret: a, allow_http: true}`,
	} {
		y := `rules: [{name: a, forward: ` + f + `}]`
		if _, err := loadWith(t, y, env); err == nil {
			t.Errorf("%s: loaded", name)
		} else if strings.Contains(err.Error(), "bot-secret") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	for name, f := range map[string]string{
		"https":              `{url: "https://bot.example/callback", secret_env: BOT_SECRET}`,
		"loopback over http": `{url: "http://127.0.0.1:9000/callback", secret: a, allow_http: true}`,
		"IPv6 loopback":      `{url: "http://[::1]:9000/callback", secret: a, allow_http: true}`,
	} {
		if _, err := loadWith(t, `rules: [{name: a, forward: `+f+`}]`, env); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
