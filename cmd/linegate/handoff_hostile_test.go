package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/proxy"
	"github.com/linegate/linegate/internal/record"
)

// adminRaw calls the admin API with the admin token and returns the
// status and the body.
func adminRaw(t *testing.T, g *gateway, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, g.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHandoffHostileAdmin: two agents' replies at once on one
// conversation spend its reply token once (the other pushes) and both
// succeed; a send LINE refuses answers 502 naming LINE's answer, and is
// recorded; the admin API refuses ids that are not LINE's, a takeover of a
// conversation the channel never saw (unless allow_unseen), names with
// control or bidi characters or too long, and reasons too long, recording
// nothing.
func TestHandoffHostileAdmin(t *testing.T) {
	dir := t.TempDir()
	w := newHandoffWorld(t)
	g := startGateway(t, dir, w.config("1h"))
	const user = "U3333333333333333333333333333cccc"
	conv := "user:" + user
	base := "/admin/conversations/demo/" + conv

	tok, _ := w.say(t, g, user, "agent")
	w.waitCall(t, "/v2/bot/message/reply", tok)
	tok, _ = w.say(t, g, user, "anyone?")
	waitIdle(t, g)
	if code, b := adminRaw(t, g, "POST", base+"/takeover", `{"agent":"alice"}`); code != 200 {
		t.Fatalf("takeover = %d %s", code, b)
	}

	// Two replies at once: one uses the token, the other pushes.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	bodies := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], bodies[i] = adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"at once"}]}`)
		}()
	}
	wg.Wait()
	for i := range 2 {
		if codes[i] != 200 {
			t.Errorf("reply %d at once = %d %s", i, codes[i], bodies[i])
		}
	}
	var replies, refused int
	for _, c := range w.api.Calls() {
		if c.Path == "/v2/bot/message/reply" && strings.Contains(string(c.Body), tok) {
			if c.Status == 200 {
				replies++
			} else {
				refused++
			}
		}
	}
	if replies != 1 || refused != 0 || len(w.calls("/v2/bot/message/push")) != 1 {
		t.Errorf("the token %s: %d replies, %d refused, %d pushes; want 1, 0, 1", tok, replies, refused, len(w.calls("/v2/bot/message/push")))
	}

	// A message LINE refuses: 502 naming LINE's answer, recorded.
	code, b := adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"no-such-type"}]}`)
	if code != http.StatusBadGateway || !strings.Contains(b, "LINE answered 400") || !strings.Contains(b, "record ") {
		t.Errorf("a send LINE refuses = %d %s, want 502 naming LINE's 400", code, b)
	}

	// Odd input: refused, nothing recorded.
	n := len(readLedger(t, dir))
	for _, c := range []struct {
		path, body string
		status     int
	}{
		{"/admin/conversations/demo/user:hello/takeover", `{"agent":"alice"}`, 400},
		{"/admin/conversations/demo/user:U3333333333333333333333333333CCCC/takeover", `{"agent":"alice"}`, 400},
		{"/admin/conversations/demo/group:C123/takeover", `{"agent":"alice"}`, 400},
		{"/admin/conversations/demo/user:U4444444444444444444444444444dddd/takeover", `{"agent":"alice"}`, 404},
		{base + "/takeover", `{"agent":"a\nb\u0000c\u202eevil"}`, 400},
		{base + "/takeover", `{"agent":"a\u202eb"}`, 400},
		{base + "/takeover", `{"agent":"` + strings.Repeat("a", 65) + `"}`, 400},
		{base + "/takeover", `{"agent":"bob","reason":"` + strings.Repeat("r", 501) + `"}`, 400},
		{base + "/takeover", `{"agent":"bob","reason":"` + strings.Repeat("r", 60000) + `"}`, 400},
		{base + "/reply", `{"agent":"bob\u0007","messages":[{"type":"text","text":"x"}]}`, 400},
		{base + "/reply", `{"agent":"alice","messages":[{"type":"text","text":"x","x":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}]}`, 400},
	} {
		if code, b := adminRaw(t, g, "POST", c.path, c.body); code != c.status {
			t.Errorf("%s %.60s = %d %.200s, want %d", c.path, c.body, code, b, c.status)
		}
	}
	if code, _ := adminRaw(t, g, "GET", "/admin/conversations/demo/user:hello", ""); code != 404 {
		t.Errorf("GET of a conversation that is not LINE's = %d, want 404", code)
	}
	// Names and reasons within the bounds pass; an unseen conversation
	// with allow_unseen.
	if code, b := adminRaw(t, g, "POST", base+"/takeover", `{"agent":"Somchai ใจดี","reason":"`+strings.Repeat("r", 500)+`"}`); code != 200 {
		t.Errorf("takeover by a Thai name = %d %s", code, b)
	}
	if code, b := adminRaw(t, g, "POST", "/admin/conversations/demo/user:U4444444444444444444444444444dddd/takeover", `{"agent":"alice","allow_unseen":true}`); code != 200 {
		t.Errorf("takeover with allow_unseen = %d %s", code, b)
	}
	waitIdle(t, g)
	g.stop()
	recs := readLedger(t, dir)
	if got := len(recs) - n; got != 2 {
		t.Errorf("%d records after the refusals and two takeovers, want 2", got)
	}
	var failed int
	for _, r := range recs {
		if r.meta == nil {
			continue
		}
		if _, body, err := record.Decode(r.leaf.Kind, storedPayload(t, r)); err == nil {
			if o, ok := body.(*record.Outbound); ok && o.Agent == "alice" && o.Outcome == "failed" {
				failed++
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed sends of alice recorded, want 1", failed)
	}
}

// TestReplyTokenPersonAndTool: a person's replies (the admin API) and a
// tool's (LINE's Go SDK through the proxy, the tool owning the channel's
// reply tokens) claim tokens from one registry in the real gateway. After
// the person replied, the tool's reply with the same token is answered as
// LINE answers a spent token without reaching LINE, and recorded as
// refused; after the tool replied, the person's reply pushes; after a
// tool's reply LINE refused for itself (429), the person's reply uses the
// token. After a restart the person's reply still knows, from the ledger,
// which token a tool spent, and the history shows the tool's sends.
func TestReplyTokenPersonAndTool(t *testing.T) {
	dir := t.TempDir()
	w := newHandoffWorld(t)
	// LINE, or LINE at its rate limit while limited is set.
	var limited atomic.Bool
	line := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if limited.Load() {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusTooManyRequests)
			rw.Write([]byte(`{"message":"You have reached your rate limit."}`))
			return
		}
		w.api.ServeHTTP(rw, r)
	}))
	t.Cleanup(line.Close)
	w.apiURL = line.URL
	cfg := w.config("1h")
	cfg.extra += `proxy:
  listen: 127.0.0.1:0
  reply_owners: {demo: bot}
  tools:
    - {name: gobot, token: go-proxy-token, channels: [demo], destination: bot}
`
	g := startGateway(t, dir, cfg)
	bot, err := messaging_api.NewMessagingApiAPI("go-proxy-token", messaging_api.WithEndpoint(g.proxyAddr(t)))
	if err != nil {
		t.Fatal(err)
	}
	const user = "U3333333333333333333333333333eeee"
	base := "/admin/conversations/demo/user:" + user
	tok, _ := w.say(t, g, user, "agent")
	w.waitCall(t, "/v2/bot/message/reply", tok)
	if code, b := adminRaw(t, g, "POST", base+"/takeover", `{"agent":"alice"}`); code != 200 {
		t.Fatalf("takeover = %d %s", code, b)
	}
	reply := func(tok, text string) (*http.Response, error) {
		resp, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: tok,
			Messages: []messaging_api.MessageInterface{messaging_api.TextMessage{Text: text}}})
		return resp, err
	}
	lineReplies := func(tok string) (n int) {
		for _, c := range w.api.Calls() {
			if c.Path == "/v2/bot/message/reply" && strings.Contains(string(c.Body), tok) {
				n++
			}
		}
		return n
	}

	// The person first.
	tok, _ = w.say(t, g, user, "is anyone there?")
	waitIdle(t, g)
	if code, b := adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"yes, alice here"}]}`); code != 200 || !strings.Contains(b, `"via":"reply"`) {
		t.Fatalf("alice's reply = %d %s, want 200 by reply", code, b)
	}
	resp, err := reply(tok, "the bot as well")
	if err == nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get(proxy.HeaderHeld) != "reply_token" {
		t.Errorf("the tool's reply with the token alice used: %v", err)
	}
	if n := lineReplies(tok); n != 1 {
		t.Errorf("LINE got %d replies with the token, want alice's alone", n)
	}

	// The tool first.
	tok, _ = w.say(t, g, user, "hello?")
	waitIdle(t, g)
	if _, err := reply(tok, "the bot answers"); err != nil {
		t.Fatalf("the tool's reply: %v", err)
	}
	if code, b := adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"and alice"}]}`); code != 200 || !strings.Contains(b, `"via":"push"`) {
		t.Errorf("alice's reply after the tool's = %d %s, want 200 by push", code, b)
	}
	for _, c := range w.api.Calls() {
		if strings.HasPrefix(c.Path, "/v2/bot/message/") && c.Status != 200 {
			t.Errorf("LINE refused %s: %d %s", c.Path, c.Status, c.Body)
		}
	}

	// LINE refuses the tool's reply for itself: the token stays good, for
	// the person's reply too, which reads the tool's record.
	tok, _ = w.say(t, g, user, "and now?")
	waitIdle(t, g)
	limited.Store(true)
	if resp, err := reply(tok, "the bot, rate limited"); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the tool's reply at LINE's rate limit: %v", err)
	}
	limited.Store(false)
	if code, b := adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"alice, after the 429"}]}`); code != 200 || !strings.Contains(b, `"via":"reply"`) {
		t.Errorf("alice's reply after the tool's 429 = %d %s, want 200 by reply", code, b)
	}

	// The conversation's history shows the tool's sends, its reply and a
	// push, beside the person's.
	if _, err := bot.PushMessage(&messaging_api.PushMessageRequest{To: user,
		Messages: []messaging_api.MessageInterface{messaging_api.TextMessage{Text: "the bot pushes"}}}, ""); err != nil {
		t.Fatalf("the tool's push: %v", err)
	}
	var got struct {
		History []struct {
			From, Text string
			Held       bool
		}
	}
	if code := adminJSON(t, g, "GET", base, "", &got); code != 200 {
		t.Fatalf("GET %s = %d", base, code)
	}
	var lines []string
	for _, m := range got.History {
		line := m.From + ": " + m.Text
		if m.Held {
			line += " (held)"
		}
		lines = append(lines, line)
	}
	for _, want := range []string{"tool:gobot: the bot answers", "tool:gobot: the bot pushes", "agent:alice: and alice", "agent:alice: yes, alice here"} {
		if !slices.Contains(lines, want) {
			t.Errorf("the history has no %q: %q", want, lines)
		}
	}
	if !slices.Contains(lines, "tool:gobot: the bot as well (held)") {
		t.Errorf("the history does not show the tool's refused reply as held back: %q", lines)
	}

	// A restart forgets the claims; the person's reply still knows, from
	// the ledger, the token the tool spent before it.
	tok, _ = w.say(t, g, user, "still there?")
	waitIdle(t, g)
	if _, err := reply(tok, "the bot, before a restart"); err != nil {
		t.Fatalf("the tool's reply: %v", err)
	}
	g.stop()
	g = startGateway(t, dir, cfg)
	if code, b := adminRaw(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"alice, after a restart"}]}`); code != 200 || !strings.Contains(b, `"via":"push"`) {
		t.Errorf("alice's reply after a restart = %d %s, want 200 by push", code, b)
	}
	g.stop()
	pushed := false
	for _, r := range readLedger(t, dir) {
		var o record.Outbound
		if r.leaf.Kind == ledger.KindOutbound && json.Unmarshal(r.body, &o) == nil && strings.Contains(string(o.Request), "alice, after a restart") {
			pushed = o.Endpoint == "push" && strings.HasPrefix(o.Extra["reply_token"], "used by record ")
		}
	}
	if !pushed {
		t.Error("alice's push after a restart does not say which record spent the token")
	}

	// The ledger: the tool's refused reply names the holder, under the
	// conversation's subject.
	var refused int
	for _, r := range toolRecords(t, dir) {
		if r.Tool == "gobot" && r.Outcome == "refused" {
			refused++
			if r.Reason != "reply token already used by agent alice" || !slices.Contains(r.subjects, "user:"+user) {
				t.Errorf("the refused reply's record: %q, subjects %v", r.Reason, r.subjects)
			}
		}
	}
	if refused != 1 {
		t.Errorf("%d refused replies of the tool recorded, want 1", refused)
	}
}

// TestContinueRulesReplyOnce: two rules that both answer one event
// (continue: true) spend its reply token once: the first replies, the
// second pushes, and LINE refuses neither.
func TestContinueRulesReplyOnce(t *testing.T) {
	dir := t.TempDir()
	w := newHandoffWorld(t)
	g := startGateway(t, dir, gwConfig{extra: "line_api_base: " + w.apiURL + `
rules:
  - name: greet
    priority: 20
    continue: true
    when: {text: {exact: hello}}
    reply: [{type: text, text: "Hello!"}]
  - name: menu
    priority: 10
    when: {text: {exact: hello}}
    reply: [{type: text, text: "Here is our menu."}]
`})
	const user = "U3333333333333333333333333333ffff"
	tok, _ := w.say(t, g, user, "hello")
	w.waitCall(t, "/v2/bot/message/reply", tok)
	w.waitCall(t, "/v2/bot/message/push", "Here is our menu.")
	for _, c := range w.api.Calls() {
		if strings.HasPrefix(c.Path, "/v2/bot/message/") && c.Status != 200 {
			t.Errorf("LINE refused %s: %d %s", c.Path, c.Status, c.Body)
		}
	}
	if r := w.calls("/v2/bot/message/reply"); len(r) != 1 || !strings.Contains(string(r[0].Body), "Hello!") {
		t.Errorf("replies: %v, want greet's alone", r)
	}
}
