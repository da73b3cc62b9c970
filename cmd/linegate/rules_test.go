package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	lsdk "github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

// replyWorld is a fake LINE platform, a lookup service and an upstream bot
// for the gateway under test.
type replyWorld struct {
	api       *sim.API
	apiURL    string
	lookupURL string
	slow      atomic.Bool // the lookup service stalls
	botGot    atomic.Int32
	botForged atomic.Int32 // events that verified with the channel secret
	botURL    string
}

// botSecret is the upstream bot's own signing secret: forwards are signed
// with it, never with the channel's.
const botSecret = "upstream-bot-secret-4f1c2a9e7d"

func newReplyWorld(t *testing.T) *replyWorld {
	w := &replyWorld{api: sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "test-access-token", Secret: testSecret}}})}
	srv := httptest.NewServer(w.api)
	t.Cleanup(srv.Close)
	w.apiURL = srv.URL
	lookup := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.slow.Load() {
			time.Sleep(1500 * time.Millisecond)
		}
		if err := json.NewEncoder(rw).Encode(map[string]string{"order": "A1042", "status": "Shipped", "image": "https://shop.example/parcel.png"}); err != nil {
			t.Errorf("lookup answer: %v", err)
		}
	}))
	t.Cleanup(lookup.Close)
	w.lookupURL = lookup.URL
	bot := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		// A bot built on LINE's official SDK: it verifies the signature,
		// with its own secret.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		if lsdk.ValidateSignature(testSecret, r.Header.Get("X-Line-Signature"), body) {
			w.botForged.Add(1)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if _, err := lsdk.ParseRequest(botSecret, r); err != nil {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		w.botGot.Add(1)
	}))
	t.Cleanup(bot.Close)
	w.botURL = bot.URL
	return w
}

func (w *replyWorld) config(t *testing.T, dir string) gwConfig {
	rulesFile := filepath.Join(dir, "rules.yaml")
	lookupHost := strings.TrimPrefix(w.lookupURL, "http://")
	if err := os.WriteFile(filepath.Join(dir, "bot.secret"), []byte(botSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(`consent:
  opt_out_keywords: [STOP]
rules:
  - name: greeting
    priority: 100
    when: {event: [follow]}
    reply: [{type: text, text: "Welcome!"}]
  - name: track
    priority: 90
    when: {event: [message], text: {exact: track}}
    lookup:
      url: "%s/orders/{{.UserID}}"
      timeout: 500ms
      fallback: [{type: text, text: "Order system unavailable"}]
    reply:
      - type: flex
        altText: "Order {{.Lookup.order}}"
        contents:
          type: bubble
          hero: {type: image, url: "{{.Lookup.image}}"}
          body: {type: box, layout: vertical, contents: [{type: text, text: "{{.Lookup.status}}"}]}
          footer: {type: box, layout: vertical, contents: [{type: button, action: {type: postback, label: Receive, data: "order={{.Lookup.order}}"}}]}
  - name: bot
    priority: 80
    when: {event: [message], text: {prefix: "bot "}}
    forward: {url: "%s/callback", secret_file: bot.secret, allow_http: true}
  - name: deals
    priority: 70
    class: promotional
    when: {event: [message], text: {exact: deals}}
    reply: [{type: text, text: "20%% off"}]
  - name: default
    priority: 0
    when: {event: [message]}
    reply: [{type: text, text: "Sorry?"}]
`, w.lookupURL, w.botURL)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	return gwConfig{extra: fmt.Sprintf("line_api_base: %s\nrules_files: [%s]\nlookup_hosts: [%s]\n", w.apiURL, rulesFile, lookupHost)}
}

var eventSeq atomic.Int64

// send posts one event to the gateway, with a reply token the fake API
// honours, and returns the token.
func (w *replyWorld) send(t *testing.T, g *gateway, user, kind, text string) string {
	t.Helper()
	tok := w.api.IssueReplyToken("")
	n := eventSeq.Add(1)
	var e string
	now := time.Now().UnixMilli()
	common := fmt.Sprintf(`"mode":"active","timestamp":%d,"webhookEventId":"01TEST%020d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"%s"},"replyToken":"%s"`, now, n, user, tok)
	switch kind {
	case "follow":
		e = `{"type":"follow",` + common + `,"follow":{"isUnblocked":false}}`
	default:
		e = fmt.Sprintf(`{"type":"message",%s,"message":{"id":"%d","type":"text","text":%q,"quoteToken":"q"}}`, common, n, text)
	}
	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[` + e + `]}`)
	if code := g.post(t, testSecret, body); code != 200 {
		t.Fatalf("status %d", code)
	}
	return tok
}

// replyTo waits for the reply the fake API accepted for a reply token and
// returns its messages.
func (w *replyWorld) replyTo(t *testing.T, tok string) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range w.api.Calls() {
			var req struct {
				ReplyToken string
				Messages   []map[string]any
			}
			if c.Path == "/v2/bot/message/reply" && c.Status == 200 && json.Unmarshal(c.Body, &req) == nil && req.ReplyToken == tok {
				return req.Messages
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no reply for token %s", tok)
	return nil
}

func (w *replyWorld) apiCalls(path string) int {
	n := 0
	for _, c := range w.api.Calls() {
		if c.Path == path {
			n++
		}
	}
	return n
}

// outboundRecords reads the outbound records of a data directory.
func outboundRecords(t *testing.T, dir string) []map[string]any {
	var out []map[string]any
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindOutbound {
			var m map[string]any
			if err := json.Unmarshal(r.body, &m); err != nil {
				t.Fatalf("outbound record: %v: %s", err, r.body)
			}
			out = append(out, m)
		}
	}
	return out
}

func admin(t *testing.T, g *gateway, path, body string) {
	t.Helper()
	req, err := http.NewRequest("POST", g.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s = %d", path, resp.StatusCode)
	}
}

func TestAutoReplies(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))

	if m := w.replyTo(t, w.send(t, g, "U1", "follow", "")); m[0]["text"] != "Welcome!" {
		t.Errorf("follow: %v", m)
	}
	m := w.replyTo(t, w.send(t, g, "U1", "message", "ＴＲＡＣＫ")) // full-width: NFKC
	if m[0]["type"] != "flex" || m[0]["altText"] != "Order A1042" || !strings.Contains(fmt.Sprint(m[0]["contents"]), "Receive") {
		t.Errorf("track: %v", m)
	}
	if m := w.replyTo(t, w.send(t, g, "U1", "message", "what?")); m[0]["text"] != "Sorry?" {
		t.Errorf("unmatched: %v", m)
	}
	w.slow.Store(true)
	if m := w.replyTo(t, w.send(t, g, "U1", "message", "track")); m[0]["text"] != "Order system unavailable" {
		t.Errorf("lookup timeout: %v", m)
	}
	w.slow.Store(false)
	w.send(t, g, "U1", "message", "bot hello")
	deadline := time.Now().Add(10 * time.Second)
	for w.botGot.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if w.botGot.Load() != 1 || w.botForged.Load() != 0 {
		t.Errorf("the SDK bot verified %d forwarded events with its own secret and %d with the channel's, want 1 and 0", w.botGot.Load(), w.botForged.Load())
	}
	waitIdle(t, g)
	g.stop()
	sent, forwards := 0, 0
	for _, r := range outboundRecords(t, dir) {
		if r["endpoint"] == "forward" {
			forwards++
			if r["secret_id"] != "secret_file:bot.secret" || r["status"] != float64(200) {
				t.Errorf("forward record %v: want secret_id secret_file:bot.secret, status 200", r)
			}
			if strings.Contains(fmt.Sprint(r), botSecret) || strings.Contains(fmt.Sprint(r), testSecret) {
				t.Error("a secret in the forward record")
			}
		}
		if r["outcome"] == "sent" {
			sent++
			atts, _ := r["attempts"].([]any)
			if len(atts) == 0 || atts[len(atts)-1].(map[string]any)["x_line_request_id"] == "" {
				t.Errorf("outbound record without x-line-request-id: %v", r)
			}
			if strings.Contains(fmt.Sprint(r), "test-access-token") {
				t.Error("access token in the ledger")
			}
		}
	}
	if sent != 4 || forwards != 1 {
		t.Errorf("%d sent records, %d forward records; want 4, 1", sent, forwards)
	}
}

// TestKillSwitch: with the kill switch on, 100 matching events make no API
// call and 100 suppressed records; off again, new events are answered.
func TestKillSwitch(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))
	admin(t, g, "/admin/kill-switch", `{"on": true, "reason": "incident 42"}`)
	for i := range 100 {
		w.send(t, g, fmt.Sprintf("U%d", i), "message", "hello")
	}
	waitIdle(t, g)
	if n := w.apiCalls("/v2/bot/message/reply") + w.apiCalls("/v2/bot/message/push"); n != 0 {
		t.Errorf("%d API calls with the kill switch on", n)
	}
	admin(t, g, "/admin/kill-switch", `{"on": false}`)
	if m := w.replyTo(t, w.send(t, g, "U1", "message", "hello")); m[0]["text"] != "Sorry?" {
		t.Errorf("after the kill switch: %v", m)
	}
	waitIdle(t, g)
	g.stop()
	suppressed := 0
	for _, r := range outboundRecords(t, dir) {
		if r["outcome"] == "suppressed" {
			suppressed++
		}
	}
	if suppressed != 100 {
		t.Errorf("%d suppressed records, want 100", suppressed)
	}
	admins := 0
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindAdmin && bytes.Contains(r.body, []byte(`"kill_switch"`)) {
			admins++
		}
	}
	if admins != 2 {
		t.Errorf("%d kill switch records, want 2", admins)
	}

	// REPLY_ENABLE=false holds everything back too.
	cfg := w.config(t, dir)
	cfg.env = []string{"REPLY_ENABLE=false"}
	g = startGateway(t, dir, cfg)
	before := w.apiCalls("/v2/bot/message/reply")
	w.send(t, g, "U1", "message", "hello")
	waitIdle(t, g)
	if w.apiCalls("/v2/bot/message/reply") != before {
		t.Error("a reply went out with REPLY_ENABLE=false")
	}
	g.stop()
}

// TestDryRunRecordsWhatLiveSends: the same events through a dry-run gateway
// and a live one: the dry run records exactly the bodies the live run sends.
func TestDryRunRecordsWhatLiveSends(t *testing.T) {
	w := newReplyWorld(t)
	type ev struct{ user, kind, text string }
	events := []ev{{"U1", "follow", ""}, {"U1", "message", "track"}, {"U2", "message", "nope"}}
	tokens := make([]string, len(events))
	for i := range tokens {
		tokens[i] = w.api.IssueReplyToken("")
	}
	run := func(dry bool) []string {
		dir := t.TempDir()
		cfg := w.config(t, dir)
		if dry {
			cfg.extra += "dry_run: true\n"
		}
		g := startGateway(t, dir, cfg)
		for i, e := range events {
			// The same bodies in both runs, with the same reply tokens.
			common := fmt.Sprintf(`"mode":"active","timestamp":%d,"webhookEventId":"01DRY%021d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"%s"},"replyToken":"%s"`, time.Now().UnixMilli(), i, e.user, tokens[i])
			body := `{"type":"follow",` + common + `,"follow":{"isUnblocked":false}}`
			if e.kind == "message" {
				body = fmt.Sprintf(`{"type":"message",%s,"message":{"id":"%d","type":"text","text":%q,"quoteToken":"q"}}`, common, i, e.text)
			}
			if code := g.post(t, testSecret, []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[`+body+`]}`)); code != 200 {
				t.Fatal(code)
			}
			waitIdle(t, g) // one at a time: the same order in both runs
		}
		g.stop()
		var bodies []string
		for _, r := range outboundRecords(t, dir) {
			want := "sent"
			if dry {
				want = "dry_run"
			}
			if r["outcome"] != want {
				t.Errorf("dry=%v: outcome %v", dry, r["outcome"])
			}
			b, err := json.Marshal(r["request"])
			if err != nil {
				t.Fatal(err)
			}
			bodies = append(bodies, string(b))
		}
		return bodies
	}
	dry := run(true)
	if n := w.apiCalls("/v2/bot/message/reply"); n != 0 {
		t.Fatalf("the dry run made %d API calls", n)
	}
	live := run(false)
	var sent []string
	for _, c := range w.api.Calls() {
		if c.Path == "/v2/bot/message/reply" && c.Status == 200 {
			var v any
			if err := json.Unmarshal(c.Body, &v); err != nil {
				t.Fatalf("reply sent: %v: %s", err, c.Body)
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, string(b))
		}
	}
	if len(dry) != 3 || strings.Join(dry, "\n") != strings.Join(live, "\n") || strings.Join(sent, "\n") != strings.Join(live, "\n") {
		t.Errorf("dry run recorded:\n%s\nlive run recorded:\n%s\nLINE received:\n%s", strings.Join(dry, "\n"), strings.Join(live, "\n"), strings.Join(sent, "\n"))
	}
}

// TestConsent: a promotional rule sends nothing to a user without an
// opt-in, and sends after one; an opt-out keyword withdraws it.
func TestConsent(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))
	w.send(t, g, "U7", "message", "deals")
	waitIdle(t, g)
	if n := w.apiCalls("/v2/bot/message/reply"); n != 0 {
		t.Fatalf("promotional reply without opt-in: %d calls", n)
	}
	admin(t, g, "/admin/consent", `{"channel":"demo","user":"U7","opt_in":true,"source":"web form"}`)
	if m := w.replyTo(t, w.send(t, g, "U7", "message", "deals")); m[0]["text"] != "20% off" {
		t.Errorf("after opt-in: %v", m)
	}
	w.send(t, g, "U7", "message", "STOP")
	waitIdle(t, g)
	before := w.apiCalls("/v2/bot/message/reply")
	w.send(t, g, "U7", "message", "deals")
	waitIdle(t, g)
	if w.apiCalls("/v2/bot/message/reply") != before {
		t.Error("promotional reply after STOP")
	}
	g.stop()
	blocked := 0
	for _, r := range outboundRecords(t, dir) {
		if r["outcome"] == "blocked" && strings.Contains(fmt.Sprint(r["reason"]), "opt-in") {
			blocked++
		}
	}
	if blocked != 2 {
		t.Errorf("%d blocked records, want 2", blocked)
	}
}

// TestRulesReload: SIGHUP and the admin call reload the rules; each change
// of the active set is recorded with its hash.
func TestRulesReload(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))
	rulesFile := filepath.Join(dir, "rules.yaml")
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rulesFile, bytes.Replace(b, []byte("Sorry?"), []byte("Pardon?"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := w.replyTo(t, w.send(t, g, "U1", "message", "x")); m[0]["text"] == "Pardon?" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the rules")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(rulesFile, bytes.Replace(b, []byte("Sorry?"), []byte("Eh?"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	admin(t, g, "/admin/rules/reload", "")
	if m := w.replyTo(t, w.send(t, g, "U1", "message", "x")); m[0]["text"] != "Eh?" {
		t.Errorf("after the admin reload: %v", m)
	}
	waitIdle(t, g)
	g.stop()
	var hashes []string
	for _, r := range readLedger(t, dir) {
		var a record.Admin
		if r.leaf.Kind == ledger.KindAdmin && json.Unmarshal(r.body, &a) == nil && a.Action == "rules_changed" {
			hashes = append(hashes, fmt.Sprint(a.Detail["sha256"]))
		}
	}
	if len(hashes) != 3 || hashes[0] == hashes[1] || hashes[1] == hashes[2] {
		t.Errorf("rule set changes recorded: %v", hashes)
	}
}

// TestDryRunHeader: a channel that allows it makes a webhook carrying
// X-Line-Dry-Run: true dry-run; the same request without it is sent.
func TestDryRunHeader(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	cfg := w.config(t, dir)
	cfg.chanExtra = "    allow_dry_run_header: true\n"
	g := startGateway(t, dir, cfg)
	tok := w.api.IssueReplyToken("")
	now := time.Now().UnixMilli()
	body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01HDRYRUN0000000000000000A","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"%s","message":{"id":"1","type":"text","text":"hi","quoteToken":"q"}}]}`, now, tok)
	req, err := http.NewRequest("POST", g.webhook+"/webhook/demo", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Line-Signature", line.Sign([]byte(testSecret), body))
	req.Header.Set("X-Line-Dry-Run", "true")
	resp, err := httpClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post: %v %v", resp, err)
	}
	resp.Body.Close()
	waitIdle(t, g)
	if n := w.apiCalls("/v2/bot/message/reply"); n != 0 {
		t.Errorf("%d replies sent for a dry-run request", n)
	}
	w.replyTo(t, w.send(t, g, "U1", "message", "hi")) // without the header: sent
	waitIdle(t, g)
	g.stop()
	var outcomes []string
	for _, r := range outboundRecords(t, dir) {
		outcomes = append(outcomes, fmt.Sprint(r["outcome"]))
	}
	if strings.Join(outcomes, ",") != "dry_run,sent" {
		t.Errorf("outcomes %v", outcomes)
	}
}

// TestCooldownSurvivesRestart: a rule's cooldown is kept in the database,
// so a restarted gateway (or, on PostgreSQL, another replica) still holds
// it.
func TestCooldownSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(`rules:
  - name: welcome-once
    cooldown: 1h
    when: {event: [message]}
    reply: [{type: text, text: "Welcome back"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gwConfig{extra: fmt.Sprintf("line_api_base: %s\nrules_files: [%s]\n", w.apiURL, rulesFile)}
	g := startGateway(t, dir, cfg)
	w.replyTo(t, w.send(t, g, "U7", "message", "hi"))
	w.send(t, g, "U7", "message", "hi again") // within the cooldown
	waitIdle(t, g)
	g.stop()
	g = startGateway(t, dir, cfg)
	w.send(t, g, "U7", "message", "after a restart")  // still within it
	w.replyTo(t, w.send(t, g, "U8", "message", "hi")) // another user is not held
	waitIdle(t, g)
	g.stop()
	if n := w.apiCalls("/v2/bot/message/reply"); n != 2 {
		t.Errorf("%d replies, want 2: the first to U7, and U8's", n)
	}
}
