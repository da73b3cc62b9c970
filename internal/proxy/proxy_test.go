package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/proxy"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

const (
	userA = "U0123456789abcdef0123456789abcde1" // opted in
	userB = "U0123456789abcdef0123456789abcde2" // not
	group = "C0123456789abcdef0123456789abcde3"
)

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

type memLedger struct {
	mu      sync.Mutex
	entries []ledger.Entry
	state   *memState
}

func (l *memLedger) Commit(_ context.Context, es []ledger.Entry, effects ...ledger.Effect) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range effects {
		s, ok := e.(outbound.SetSetting)
		if !ok {
			return 0, ledger.ErrUnsupportedEffect
		}
		l.state.mu.Lock()
		l.state.settings[s.Key] = s.Value
		l.state.mu.Unlock()
	}
	l.entries = append(l.entries, es...)
	return uint64(len(l.entries) - len(es)), nil
}

func (l *memLedger) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
	return uint64(len(l.entries) - 1), nil
}

// sends returns the proxy's records, in order.
func (l *memLedger) sends(t *testing.T) []*record.Outbound {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*record.Outbound
	for _, e := range l.entries {
		if e.Kind != ledger.KindOutbound {
			continue
		}
		_, b, err := record.Decode(e.Kind, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		o := b.(*record.Outbound)
		o.Subj = e.Subjects
		out = append(out, o)
	}
	return out
}

func (l *memLedger) last(t *testing.T) *record.Outbound {
	t.Helper()
	s := l.sends(t)
	if len(s) == 0 {
		t.Fatal("nothing recorded")
	}
	return s[len(s)-1]
}

type world struct {
	api     *sim.API
	sender  *outbound.Sender
	led     *memLedger
	proxy   *proxy.Proxy
	url     string
	clients map[string]*outbound.Client
	rebuild func(rate float64)
	logs    *lockedBuffer // the proxy's log, JSON lines
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proxyClient returns the demo channel's client.
func (w *world) proxyClient() *outbound.Client { return w.clients["demo"] }

// limitTo gives the demo channel a rate limit of r calls a second.
func (w *world) limitTo(r float64) { w.rebuild(r) }

func newWorld(t testing.TB, tools ...proxy.Tool) *world {
	t.Helper()
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "line-token"}, {ID: "other", AccessToken: "other-token"}}})
	lineSrv := httptest.NewServer(api)
	t.Cleanup(lineSrv.Close)
	st := &memState{settings: map[string]string{}, consent: map[string]bool{"demo/" + userA: true}}
	led := &memLedger{state: st}
	clients := map[string]*outbound.Client{
		"demo":  {Base: lineSrv.URL, Token: []byte("line-token"), Policy: outbound.RetryPolicy{MaxAttempts: 2}},
		"other": {Base: lineSrv.URL, Token: []byte("other-token")},
	}
	sender := outbound.NewSender(outbound.SenderOptions{Clients: clients, Ledger: led, State: st, QuotaBudgets: map[string]float64{"demo": 0.5}})
	w := &world{api: api, sender: sender, led: led, clients: clients, logs: &lockedBuffer{}}
	if len(tools) == 0 {
		tools = []proxy.Tool{
			{Name: "crm", Token: []byte("crm-proxy-token"), Channels: []string{"demo"}, Destination: "crm"},
			{Name: "helpdesk", Token: []byte("helpdesk-proxy-token"), Channels: []string{"demo", "other"}, Destination: "helpdesk",
				Endpoints: []string{"POST /v2/bot/message/push", "POST /v2/bot/message/reply", "GET /v2/bot/profile/*", "GET /v2/bot/message/*/content", "GET /v2/bot/info"}},
		}
	}
	build := func(gate proxy.Gate) *proxy.Proxy {
		p, err := proxy.New(proxy.Options{
			Tools: tools,
			Channels: map[string]proxy.Channel{
				"demo":  {Client: clients["demo"], DataBase: lineSrv.URL, Retention: "th-pdpa"},
				"other": {Client: clients["other"], DataBase: lineSrv.URL},
			},
			Gate: gate, Consent: st, Ledger: led,
			ReplyOwners: proxy.StaticReplyOwners{"demo": "crm"},
			Replies:     sender.ReplyTokens(),
			MaxBody:     64 << 10,
			Logger:      slog.New(slog.NewJSONHandler(w.logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var cur atomic.Pointer[proxy.Proxy]
	cur.Store(build(sender))
	w.rebuild = func(r float64) {
		limited := outbound.NewSender(outbound.SenderOptions{Clients: clients, Ledger: led, State: st, RateLimits: map[string]float64{"demo": r}})
		cur.Store(build(limited))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(rw, r) }))
	t.Cleanup(srv.Close)
	w.proxy, w.url = cur.Load(), srv.URL
	return w
}

func (w *world) sdk(t *testing.T, token, base string) *messaging_api.MessagingApiAPI {
	t.Helper()
	bot, err := messaging_api.NewMessagingApiAPI(token, messaging_api.WithEndpoint(base))
	if err != nil {
		t.Fatal(err)
	}
	return bot
}

// simCalls returns the simulator's calls of a path.
func (w *world) simCalls(path string) []sim.Call {
	var out []sim.Call
	for _, c := range w.api.Calls() {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func text(s string) []messaging_api.MessageInterface {
	return []messaging_api.MessageInterface{messaging_api.TextMessage{Text: s}}
}

// TestSDKThroughProxy: LINE's Go SDK, unchanged, pushes, replies and
// multicasts through the proxy to the simulator; each request is recorded
// with the simulator's x-line-request-id, the exact body, the tool and the
// subjects.
func TestSDKThroughProxy(t *testing.T) {
	w := newWorld(t)
	bot := w.sdk(t, "crm-proxy-token", w.url)

	// A push without a retry key (the SDK sends the header empty): the
	// proxy adds one.
	resp, pr, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("your order shipped")}, "")
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	rid := resp.Header.Get("X-Line-Request-Id")
	if rid == "" || len(pr.SentMessages) != 1 {
		t.Fatalf("push answer: request id %q, %+v", rid, pr)
	}
	rec := w.led.last(t)
	pushes := w.simCalls("/v2/bot/message/push")
	if len(pushes) != 1 {
		t.Fatalf("simulator pushes: %d", len(pushes))
	}
	if rec.Tool != "crm" || rec.Endpoint != "/v2/bot/message/push" || rec.Outcome != "sent" || rec.Class != "transactional" ||
		!slices.Equal(rec.RequestIDs(), []string{rid}) || !slices.Equal(rec.Subj, []string{"user:" + userA}) {
		t.Errorf("push record: %+v", rec)
	}
	if k := pushes[0].Headers["X-Line-Retry-Key"]; len(k) != 1 || k[0] != rec.RetryKey || uuid.Validate(rec.RetryKey) != nil || rec.Extra["retry_key_by"] != "linegate" {
		t.Errorf("retry key: sent %v, recorded %q (%v)", k, rec.RetryKey, rec.Extra)
	}
	if !sameJSON(rec.Request, pushes[0].Body) || rec.Extra["request_sha256"] != sha256Hex(pushes[0].Body) {
		t.Errorf("recorded body %s (%s), sent %s", rec.Request, rec.Extra["request_sha256"], pushes[0].Body)
	}

	// The tool's own retry key passes through; twice is LINE's 409.
	key := uuid.NewString()
	push := &messaging_api.PushMessageRequest{To: group, Messages: text("group notice")}
	if _, _, err := bot.PushMessageWithHttpInfo(push, key); err != nil {
		t.Fatal(err)
	}
	if rec := w.led.last(t); rec.RetryKey != key || rec.Extra["retry_key_by"] != "tool" || !slices.Equal(rec.Subj, []string{"group:" + group}) {
		t.Errorf("tool's retry key: %+v", rec)
	}
	resp, _, err = bot.PushMessageWithHttpInfo(push, key)
	if err == nil || resp.StatusCode != http.StatusConflict || resp.Header.Get("X-Line-Accepted-Request-Id") == "" {
		t.Errorf("repeated key: %v, %d", err, resp.StatusCode)
	}
	if rec := w.led.last(t); rec.Outcome != "sent" || len(rec.Attempts) != 1 || rec.Attempts[0].AcceptedRequest == "" {
		t.Errorf("repeated key record: %+v", rec) // a 409 with an accepted id is LINE's "already sent"
	}

	// A reply by the tool that owns the channel's reply tokens, linked to
	// its event through the reply index.
	token := w.api.IssueReplyToken("demo")
	resp, rr, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: token, Messages: text("hello")})
	if err != nil || len(rr.SentMessages) != 1 {
		t.Fatalf("reply: %v %+v", err, rr)
	}
	if rec := w.led.last(t); rec.Endpoint != "/v2/bot/message/reply" || rec.Outcome != "sent" || rec.RetryKey != "" ||
		!slices.Equal(rec.RequestIDs(), []string{resp.Header.Get("X-Line-Request-Id")}) {
		t.Errorf("reply record: %+v", rec)
	}

	// A multicast: promotional, the user without an opt-in is removed,
	// and named in the record with the other.
	resp, _, err = bot.MulticastWithHttpInfo(&messaging_api.MulticastRequest{To: []string{userA, userB}, Messages: text("sale")}, "")
	if err != nil {
		t.Fatalf("multicast: %v", err)
	}
	if resp.Header.Get(proxy.HeaderRemoved) != "1" {
		t.Errorf("%s: %q, want 1", proxy.HeaderRemoved, resp.Header.Get(proxy.HeaderRemoved))
	}
	mc := w.simCalls("/v2/bot/message/multicast")
	if len(mc) != 1 || !strings.Contains(string(mc[0].Body), userA) || strings.Contains(string(mc[0].Body), userB) {
		t.Fatalf("multicast sent: %+v", mc)
	}
	rec = w.led.last(t)
	if rec.Class != "promotional" || rec.Outcome != "sent" || rec.Extra["removed_without_consent"] != userB ||
		!slices.Equal(rec.Subj, []string{"user:" + userA, "user:" + userB}) || !sameJSON(rec.Request, mc[0].Body) ||
		!slices.Equal(rec.RequestIDs(), []string{resp.Header.Get("X-Line-Request-Id")}) {
		t.Errorf("multicast record: %+v", rec)
	}
	// Nobody opted in: refused, nothing sent.
	_, _, err = bot.MulticastWithHttpInfo(&messaging_api.MulticastRequest{To: []string{userB}, Messages: text("sale")}, "")
	if err == nil || len(w.simCalls("/v2/bot/message/multicast")) != 1 {
		t.Errorf("multicast to no opted-in user: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "blocked" || len(rec.Attempts) != 0 {
		t.Errorf("blocked multicast record: %+v", rec)
	}
	// A broadcast without allow_broadcast: refused.
	if _, _, err := bot.BroadcastWithHttpInfo(&messaging_api.BroadcastRequest{Messages: text("all")}, ""); err == nil {
		t.Error("broadcast went through")
	}
	if rec := w.led.last(t); rec.Outcome != "blocked" || len(w.simCalls("/v2/bot/message/broadcast")) != 0 {
		t.Errorf("broadcast record: %+v", rec)
	}
}

// TestReplyOwnership: a reply by a tool that does not own the channel's
// reply tokens is refused, recorded, and never reaches LINE.
func TestReplyOwnership(t *testing.T) {
	w := newWorld(t)
	bot := w.sdk(t, "helpdesk-proxy-token", w.url+"/channels/demo")
	resp, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: w.api.IssueReplyToken("demo"), Messages: text("hi")})
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reply by a tool that does not own the tokens: %v", err)
	}
	if rec := w.led.last(t); rec.Tool != "helpdesk" || rec.Outcome != "refused" || len(w.simCalls("/v2/bot/message/reply")) != 0 {
		t.Errorf("record: %+v", rec)
	}
}

// TestReplyTokenShared: the proxy and the Sender claim reply tokens from
// one registry. A tool's reply with a token a person's reply (through the
// Sender) used is answered as LINE answers a spent token, 400 "Invalid
// reply token", without calling LINE, and recorded as refused naming the
// holder; a person's reply with a token the tool used pushes instead of
// failing at LINE; a tool's reply held back by the kill switch leaves the
// token to the next reply.
func TestReplyTokenShared(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	bot := w.sdk(t, "crm-proxy-token", w.url)
	agentReply := func(token string) (outbound.Outcome, *outbound.Recorded) {
		o, rec, err := w.sender.SendRecorded(ctx, outbound.Request{Channel: "demo", EventKey: "agent-reply:" + token, To: userA,
			ReplyToken: token, ReceivedMs: time.Now().UnixMilli(), Agent: "alice",
			Messages: []json.RawMessage{json.RawMessage(`{"type":"text","text":"from a person"}`)}})
		if err != nil {
			t.Fatalf("agent's reply: %v", err)
		}
		return o, rec
	}

	// The person first.
	tok := w.api.IssueReplyToken("demo")
	if o, rec := agentReply(tok); o != outbound.Sent || rec.Endpoint != "reply" {
		t.Fatalf("agent's reply: %s by %s", o, rec.Endpoint)
	}
	replies := len(w.simCalls("/v2/bot/message/reply"))
	resp, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: tok, Messages: text("from the tool")})
	if err == nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get(proxy.HeaderHeld) != "reply_token" {
		t.Fatalf("the tool's reply with a spent token: %v", err)
	}
	// LINE's words and shape (ErrorResponse), linegate's in details.
	var answer struct {
		Message string
		Details []struct{ Message, Property string }
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(err.Error(), "unexpected status code: 400, ")), &answer); err != nil ||
		answer.Message != "Invalid reply token" || len(answer.Details) != 1 || answer.Details[0].Property != "replyToken" ||
		answer.Details[0].Message != "linegate: already used by a person's reply: push instead" {
		t.Errorf("the answer: %v (%v)", answer, err)
	}
	if n := len(w.simCalls("/v2/bot/message/reply")); n != replies {
		t.Errorf("the tool's reply reached LINE")
	}
	if rec := w.led.last(t); rec.Tool != "crm" || rec.Outcome != "refused" || rec.Reason != "reply token already used by agent alice" {
		t.Errorf("record: %+v", rec)
	}

	// The tool first.
	tok = w.api.IssueReplyToken("demo")
	if _, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: tok, Messages: text("from the tool")}); err != nil {
		t.Fatalf("the tool's reply: %v", err)
	}
	o, rec := agentReply(tok)
	if o != outbound.Sent || rec.Endpoint != "push" || rec.Extra["reply_token"] != "used by tool crm: pushed" {
		t.Errorf("agent's reply after the tool's: %s by %s, extra %v", o, rec.Endpoint, rec.Extra)
	}
	for _, c := range w.simCalls("/v2/bot/message/reply") {
		if c.Status != http.StatusOK {
			t.Errorf("LINE refused a reply: %d %s", c.Status, c.Body)
		}
	}

	// Held back: the token stays good.
	tok = w.api.IssueReplyToken("demo")
	if err := w.sender.SetKillSwitch(ctx, w.led, true, map[string]any{"by": "test"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: tok, Messages: text("held")}); err == nil {
		t.Fatal("a reply under the kill switch went through")
	}
	if err := w.sender.SetKillSwitch(ctx, w.led, false, map[string]any{"by": "test"}); err != nil {
		t.Fatal(err)
	}
	if o, rec := agentReply(tok); o != outbound.Sent || rec.Endpoint != "reply" {
		t.Errorf("agent's reply after the tool's was held back: %s by %s", o, rec.Endpoint)
	}

	// LINE could not be reached: the token stays good.
	tok = w.api.IssueReplyToken("demo")
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	base := w.proxyClient().Base
	w.proxyClient().Base = down.URL
	if _, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: tok, Messages: text("lost")}); err == nil {
		t.Fatal("a reply went through with LINE down")
	}
	w.proxyClient().Base = base
	if o, rec := agentReply(tok); o != outbound.Sent || rec.Endpoint != "reply" {
		t.Errorf("agent's reply after the tool's never reached LINE: %s by %s", o, rec.Endpoint)
	}
}

// TestFailuresLogBounded: a tool whose calls keep failing writes a line
// or two to the log, with the count of the others, not a line a call.
func TestFailuresLogBounded(t *testing.T) {
	w := newWorld(t)
	for i := range 50 {
		body := fmt.Sprintf(`{"replyToken":"not-a-token-%d","messages":[{"type":"text","text":"x"}]}`, i)
		if code, _ := w.do(t, "POST", "/v2/bot/message/reply", "crm-proxy-token", body); code != http.StatusBadRequest {
			t.Fatalf("a reply with a bogus token = %d, want LINE's 400", code)
		}
	}
	var failed int
	for _, r := range w.led.sends(t) {
		if r.Outcome == "failed" {
			failed++
		}
	}
	if failed != 50 {
		t.Errorf("%d failed calls recorded, want 50", failed)
	}
	logs := w.logs.String()
	if n := strings.Count(logs, `"msg":"proxy: a tool's call failed"`); n < 1 || n > 2 {
		t.Errorf("%d log lines for 50 failed calls, want 1 or 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, `"class":"tool_call_failed"`) {
		t.Errorf("the line has no class: %s", logs)
	}
}

// TestSwitches: the kill switch holds sends back (503, recorded); dry-run
// answers LINE's shape with the marker header (recorded); neither reaches
// LINE; reads pass the kill switch.
func TestSwitches(t *testing.T) {
	w := newWorld(t)
	bot := w.sdk(t, "crm-proxy-token", w.url)
	if err := w.sender.SetKillSwitch(context.Background(), w.led, true, map[string]any{"by": "test"}); err != nil {
		t.Fatal(err)
	}
	resp, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("x")}, "")
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(proxy.HeaderHeld) != "kill_switch" {
		t.Fatalf("push under the kill switch: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "suppressed" || rec.Tool != "crm" || !slices.Equal(rec.Subj, []string{"user:" + userA}) {
		t.Errorf("record: %+v", rec)
	}
	hd := w.sdk(t, "helpdesk-proxy-token", w.url+"/channels/demo")
	if info, err := hd.GetBotInfo(); err != nil || info.UserId == "" {
		t.Errorf("a read under the kill switch: %v", err)
	}
	if err := w.sender.SetKillSwitch(context.Background(), w.led, false, map[string]any{"by": "test"}); err != nil {
		t.Fatal(err)
	}
	if err := w.sender.SetDryRun(context.Background(), w.led, "demo", true, map[string]any{"by": "test"}); err != nil {
		t.Fatal(err)
	}
	resp, pr, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("x")}, "")
	if err != nil || resp.Header.Get(proxy.HeaderDryRun) != "true" || pr == nil {
		t.Fatalf("push in dry-run: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "dry_run" {
		t.Errorf("record: %+v", rec)
	}
	if n := len(w.simCalls("/v2/bot/message/push")); n != 0 {
		t.Errorf("%d pushes reached LINE", n)
	}
}

// TestReads: allowed reads pass and are recorded with their answer and
// the subject the path names; content comes from the data host whole.
func TestReads(t *testing.T) {
	w := newWorld(t)
	hd := w.sdk(t, "helpdesk-proxy-token", w.url+"/channels/demo")
	prof, err := hd.GetProfile(userB)
	if err != nil || prof.UserId != userB {
		t.Fatalf("profile: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "forwarded" || !slices.Equal(rec.Subj, []string{"user:" + userB}) || !strings.Contains(string(rec.Attempts[0].Response), userB) {
		t.Errorf("profile record: %+v", rec)
	}
	w.api.AddContent("4711", sim.Content{Type: "image", Size: 65536})
	req, _ := http.NewRequest("GET", w.url+"/channels/demo/v2/bot/message/4711/content", nil)
	req.Header.Set("Authorization", "Bearer helpdesk-proxy-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(b, sim.ContentBytes("4711", "image", 65536)) || resp.Header.Get("X-Line-Request-Id") == "" {
		t.Errorf("content: %d, %d bytes", resp.StatusCode, len(b))
	}
	// The download is recorded when it ends, after the last byte.
	for i := 0; i < 100 && len(w.led.sends(t)) < 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if rec := w.led.last(t); rec.Outcome != "forwarded" || rec.Extra["content_bytes"] != "65536" || rec.Attempts[0].Response != nil ||
		rec.Extra["content_sha256"] != sha256Hex(b) || rec.Endpoint != "/v2/bot/message/4711/content" {
		t.Errorf("content record: %+v", rec)
	}
}

// TestRefusals: odd and unauthorised requests get LINE's error shape.
func TestRefusals(t *testing.T) {
	w := newWorld(t)
	before := len(w.led.sends(t))
	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
		recorded                        bool
	}{
		{"no token", "POST", "/v2/bot/message/push", "", `{}`, 401, false},
		{"unknown token", "POST", "/v2/bot/message/push", "line-token", `{}`, 401, false},
		{"not LINE's path", "GET", "/admin/x", "crm-proxy-token", ``, 404, false},
		{"endpoint not allowed", "GET", "/v2/bot/profile/" + userA, "crm-proxy-token", ``, 403, true},
		{"channel not allowed", "POST", "/channels/other/v2/bot/message/push", "crm-proxy-token", `{}`, 403, false},
		{"several channels, none named", "POST", "/v2/bot/message/push", "helpdesk-proxy-token", `{}`, 400, false},
		{"bad JSON", "POST", "/v2/bot/message/push", "crm-proxy-token", `{"to":`, 400, false},
		{"empty send", "POST", "/v2/bot/message/push", "crm-proxy-token", ``, 400, false},
		{"too large", "POST", "/v2/bot/message/push", "crm-proxy-token", `{"to":"` + strings.Repeat("x", 70<<10) + `"}`, 413, false},
		{"dot segment for a *", "GET", "/channels/demo/v2/bot/message/../content", "helpdesk-proxy-token", ``, 404, false},
		{"escaped dots for a *", "GET", "/channels/demo/v2/bot/message/%2e%2e/content", "helpdesk-proxy-token", ``, 404, false},
		{"escaped slash", "GET", "/channels/demo/v2/bot/profile/U1%2F..%2Finfo", "helpdesk-proxy-token", ``, 404, false},
		{"empty segment", "GET", "/channels/demo/v2/bot/profile//", "helpdesk-proxy-token", ``, 404, false},
		{"LINE refuses", "POST", "/v2/bot/message/push", "crm-proxy-token", `{"to":"","messages":[]}`, 400, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(w.led.sends(t))
			req, _ := http.NewRequest(c.method, w.url+c.path, strings.NewReader(c.body))
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Message string `json:"message"`
			}
			if resp.StatusCode != c.status || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Message == "" {
				t.Errorf("%d %q, want %d with LINE's error shape", resp.StatusCode, e.Message, c.status)
			}
			if got := len(w.led.sends(t)) > n; got != c.recorded {
				t.Errorf("recorded: %v, want %v", got, c.recorded)
			}
		})
	}
	for _, rec := range w.led.sends(t)[before:] {
		for _, b := range [][]byte{rec.Request, []byte(rec.Reason)} {
			if bytes.Contains(b, []byte("proxy-token")) || bytes.Contains(b, []byte("line-token")) {
				t.Errorf("a token in a record: %+v", rec)
			}
		}
	}
}

// TestPromotional: a promotional push needs the user's opt-in; a
// broadcast passes with allow_broadcast; past the quota budget,
// promotional sends are held back (429) and recorded, transactional ones
// go on.
func TestPromotional(t *testing.T) {
	w := newWorld(t,
		proxy.Tool{Name: "ads", Token: []byte("ads-token"), Channels: []string{"demo"}, PromotionalPush: true, AllowBroadcast: true})
	bot := w.sdk(t, "ads-token", w.url)
	if _, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userB, Messages: text("sale")}, ""); err == nil {
		t.Error("promotional push to a user without an opt-in went through")
	}
	if rec := w.led.last(t); rec.Outcome != "blocked" || rec.Class != "promotional" {
		t.Errorf("record: %+v", rec)
	}
	if _, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: group, Messages: text("sale")}, ""); err == nil {
		t.Error("promotional push to a group went through")
	}
	if _, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("sale")}, ""); err != nil {
		t.Errorf("promotional push to a user who opted in: %v", err)
	}
	if _, _, err := bot.BroadcastWithHttpInfo(&messaging_api.BroadcastRequest{Messages: text("all")}, ""); err != nil {
		t.Errorf("broadcast with allow_broadcast: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "sent" || rec.Extra["consent"] == "" || len(rec.Subj) != 0 {
		t.Errorf("broadcast record: %+v", rec)
	}
	// 5 of 10 consumed: the budget (0.5) is reached.
	if err := w.sender.UpdateQuota(context.Background(), w.led, "demo", 10, 5); err != nil {
		t.Fatal(err)
	}
	resp, _, err := bot.MulticastWithHttpInfo(&messaging_api.MulticastRequest{To: []string{userA}, Messages: text("sale")}, "")
	if err == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(proxy.HeaderHeld) != "quota" {
		t.Errorf("multicast past the budget: %v", err)
	}
	if rec := w.led.last(t); rec.Outcome != "held" {
		t.Errorf("record: %+v", rec)
	}
	if n := len(w.simCalls("/v2/bot/message/multicast")); n != 0 {
		t.Errorf("%d multicasts reached LINE", n)
	}
}

// TestNewRejects: configuration mistakes are errors.
func TestNewRejects(t *testing.T) {
	ch := map[string]proxy.Channel{"demo": {}}
	st := &memState{}
	sender := outbound.NewSender(outbound.SenderOptions{State: st})
	for name, tools := range map[string][]proxy.Tool{
		"no name":         {{Token: []byte("t"), Channels: []string{"demo"}}},
		"no token":        {{Name: "a", Channels: []string{"demo"}}},
		"same token":      {{Name: "a", Token: []byte("t"), Channels: []string{"demo"}}, {Name: "b", Token: []byte("t"), Channels: []string{"demo"}}},
		"unknown channel": {{Name: "a", Token: []byte("t"), Channels: []string{"nope"}}},
		"bad endpoint":    {{Name: "a", Token: []byte("t"), Channels: []string{"demo"}, Endpoints: []string{"PATCH /v2/bot/x"}}},
		"not LINE's path": {{Name: "a", Token: []byte("t"), Channels: []string{"demo"}, Endpoints: []string{"GET /oauth2/v3/token"}}},
	} {
		if _, err := proxy.New(proxy.Options{Tools: tools, Channels: ch, Gate: sender, Consent: st, Ledger: &memLedger{state: st}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzProxy: whatever the path, headers and body, the proxy answers in
// LINE's shape without panicking.
func FuzzProxy(f *testing.F) {
	f.Add("POST", "/v2/bot/message/push", "crm-proxy-token", []byte(`{"to":"U1","messages":[{"type":"text","text":"x"}]}`))
	f.Add("POST", "/v2/bot/message/multicast", "crm-proxy-token", []byte(`{"to":[1,2],"messages":null}`))
	f.Add("POST", "/channels//v2/bot/message/reply", "crm-proxy-token", []byte(`{"replyToken":{}}`))
	f.Add("GET", "/v2/bot/", "x", []byte{0xff})
	w := newWorld(f)
	f.Fuzz(func(t *testing.T, method, path, token string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t?#%") || strings.ContainsAny(method, " \r\n\t/") || method == "" {
			return
		}
		req := httptest.NewRequest("GET", "/", bytes.NewReader(body))
		req.Method, req.URL.Path = method, path
		req.Header.Set("Authorization", "Bearer "+token)
		rr := httptest.NewRecorder()
		w.proxy.ServeHTTP(rr, req)
		if rr.Code < 200 || rr.Code > 599 {
			t.Errorf("status %d", rr.Code)
		}
	})
}

// renewing is a token source whose first token LINE refuses, as an issued
// token that LINE revoked.
type renewing struct {
	mu       sync.Mutex
	rejected bool
}

func (r *renewing) Token(context.Context) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rejected {
		return []byte("line-token"), nil
	}
	return []byte("revoked-token"), nil
}

func (r *renewing) Rejected([]byte) {
	r.mu.Lock()
	r.rejected = true
	r.mu.Unlock()
}

// TestIssuedTokens: with a token that linegate issues, a 401 from LINE
// renews it and the tool's call goes through; the tool's answer and the
// record show LINE's answers.
func TestIssuedTokens(t *testing.T) {
	w := newWorld(t)
	w.proxyClient().Token, w.proxyClient().Tokens = nil, &renewing{}
	bot := w.sdk(t, "crm-proxy-token", w.url)
	if _, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("x")}, ""); err != nil {
		t.Fatalf("push: %v", err)
	}
	rec := w.led.last(t)
	if rec.Outcome != "sent" || len(rec.Attempts) != 2 || rec.Attempts[0].Status != 401 || rec.Attempts[1].Status != 200 {
		t.Errorf("record: %+v", rec)
	}
}

// TestRateLimit: the tool's calls wait for the channel's rate limit.
func TestRateLimit(t *testing.T) {
	w := newWorld(t)
	bot := w.sdk(t, "crm-proxy-token", w.url)
	w.limitTo(5) // 5 a second, a burst of 1
	start := time.Now()
	for range 4 {
		if _, _, err := bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: userA, Messages: text("x")}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 550*time.Millisecond {
		t.Errorf("4 pushes at 5/s took %v", d)
	}
}
