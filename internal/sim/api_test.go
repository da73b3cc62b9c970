package sim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

type simClient struct {
	t   *testing.T
	url string
}

func (c simClient) do(method, path, token string, body string, hdr ...string) (int, http.Header, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header[http.CanonicalHeaderKey(hdr[i])] = append(req.Header[http.CanonicalHeaderKey(hdr[i])], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	var v any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &v); err != nil {
			c.t.Fatalf("%s %s: %d, body not JSON: %v: %q", method, path, resp.StatusCode, err, b)
		}
	}
	m, _ := v.(map[string]any) // nil for an array
	return resp.StatusCode, resp.Header, m
}

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func text(s string) string           { return `[{"type":"text","text":"` + s + `"}]` }
func replyBody(tok, msgs string) string {
	return `{"replyToken":"` + tok + `","messages":` + msgs + `}`
}

func newSim(t *testing.T, opts sim.Options) (*sim.API, simClient) {
	a := sim.NewAPI(opts)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, simClient{t, srv.URL}
}

func TestReplyToken(t *testing.T) {
	clk := newClock()
	a, c := newSim(t, sim.Options{
		Channels:      []sim.Channel{{ID: "a", AccessToken: "tok-a"}, {ID: "b", AccessToken: "tok-b"}},
		ReplyTokenTTL: time.Minute, Now: clk.now,
	})
	tok := a.IssueReplyToken("a")
	status, hdr, body := c.do("POST", "/v2/bot/message/reply", "tok-a", replyBody(tok, text("hi")))
	if status != 200 || hdr.Get("X-Line-Request-Id") == "" {
		t.Fatalf("reply = %d %v, request id %q", status, body, hdr.Get("X-Line-Request-Id"))
	}
	if sm, _ := body["sentMessages"].([]any); len(sm) != 1 {
		t.Errorf("sentMessages = %v", body["sentMessages"])
	}
	// Single use.
	if status, _, body := c.do("POST", "/v2/bot/message/reply", "tok-a", replyBody(tok, text("again"))); status != 400 || body["message"] != "Invalid reply token" {
		t.Errorf("second use = %d %v, want 400 Invalid reply token", status, body)
	}
	// Expiry.
	tok2 := a.IssueReplyToken("a")
	clk.add(61 * time.Second)
	if status, _, _ := c.do("POST", "/v2/bot/message/reply", "tok-a", replyBody(tok2, text("late"))); status != 400 {
		t.Errorf("expired token = %d, want 400", status)
	}
	// Another channel's token.
	tok3 := a.IssueReplyToken("a")
	if status, _, _ := c.do("POST", "/v2/bot/message/reply", "tok-b", replyBody(tok3, text("x"))); status != 400 {
		t.Errorf("token of another channel = %d, want 400", status)
	}
	// An unknown token.
	if status, _, _ := c.do("POST", "/v2/bot/message/reply", "tok-a", replyBody("nope", text("x"))); status != 400 {
		t.Errorf("unknown token = %d, want 400", status)
	}
	// Reply takes no retry key.
	tok4 := a.IssueReplyToken("a")
	if status, _, _ := c.do("POST", "/v2/bot/message/reply", "tok-a", replyBody(tok4, text("x")), "X-Line-Retry-Key", "123e4567-e89b-12d3-a456-426614174000"); status != 400 {
		t.Errorf("reply with a retry key = %d, want 400", status)
	}
}

func TestAuth(t *testing.T) {
	_, c := newSim(t, sim.Options{Channels: []sim.Channel{{ID: "a", AccessToken: "tok-a"}}})
	for _, tok := range []string{"", "wrong"} {
		status, hdr, body := c.do("GET", "/v2/bot/info", tok, "")
		if status != 401 || hdr.Get("X-Line-Request-Id") == "" || body["message"] == nil {
			t.Errorf("token %q: %d %v", tok, status, body)
		}
	}
	if status, _, body := c.do("GET", "/v2/bot/info", "tok-a", ""); status != 200 || body["chatMode"] != "bot" || !strings.HasPrefix(body["userId"].(string), "U") {
		t.Errorf("bot info = %d %v", status, body)
	}
	// With no channels configured, any token is accepted.
	_, open := newSim(t, sim.Options{})
	if status, _, _ := open.do("GET", "/v2/bot/info", "anything", ""); status != 200 {
		t.Errorf("anonymous bot info = %d", status)
	}
	if status, _, _ := open.do("GET", "/v2/bot/info", "", ""); status != 401 {
		t.Errorf("anonymous without a token = %d", status)
	}
}

func TestRetryKey(t *testing.T) {
	_, c := newSim(t, sim.Options{})
	key := "123e4567-e89b-12d3-a456-426614174000"
	push := `{"to":"U1","messages":` + text("hi") + `}`
	status, hdr1, _ := c.do("POST", "/v2/bot/message/push", "t", push, "X-Line-Retry-Key", key)
	if status != 200 {
		t.Fatalf("push = %d", status)
	}
	status, hdr2, body := c.do("POST", "/v2/bot/message/push", "t", push, "X-Line-Retry-Key", key)
	if status != 409 || hdr2.Get("X-Line-Accepted-Request-Id") != hdr1.Get("X-Line-Request-Id") {
		t.Errorf("repeated key = %d %v, accepted id %q, want 409 and %q", status, body, hdr2.Get("X-Line-Accepted-Request-Id"), hdr1.Get("X-Line-Request-Id"))
	}
	// Keys are per channel.
	if status, _, _ := c.do("POST", "/v2/bot/message/push", "other-token", push, "X-Line-Retry-Key", key); status != 200 {
		t.Errorf("same key on another channel = %d", status)
	}
	for _, bad := range []string{"", "not-a-uuid"} {
		if status, _, _ := c.do("POST", "/v2/bot/message/push", "t", push, "X-Line-Retry-Key", bad); status != 400 {
			t.Errorf("retry key %q = %d, want 400", bad, status)
		}
	}
	// Without a key, the same push may be sent twice.
	for range 2 {
		if status, _, _ := c.do("POST", "/v2/bot/message/push", "t", push); status != 200 {
			t.Errorf("push without a key = %d", status)
		}
	}
	for i, ep := range []string{"multicast", "broadcast", "narrowcast"} {
		body := `{"to":["U1"],"messages":` + text("x") + `}`
		k := fmt.Sprintf("223e4567-e89b-12d3-a456-42661417400%d", i)
		first, _, _ := c.do("POST", "/v2/bot/message/"+ep, "t", body, "X-Line-Retry-Key", k)
		second, _, _ := c.do("POST", "/v2/bot/message/"+ep, "t", body, "X-Line-Retry-Key", k)
		if first/100 != 2 || second != 409 {
			t.Errorf("%s: %d then %d, want 2xx then 409", ep, first, second)
		}
	}
}

func TestRateLimit(t *testing.T) {
	_, c := newSim(t, sim.Options{RateLimit: 5, Burst: 5})
	got429 := 0
	for range 20 {
		status, hdr, body := c.do("GET", "/v2/bot/info", "t", "")
		if status == 429 {
			got429++
			if body["message"] == nil || hdr.Get("X-Line-Request-Id") == "" {
				t.Errorf("429 without an error body or request id")
			}
		}
	}
	if got429 == 0 {
		t.Error("no 429 above the rate limit")
	}
	// Limits are per channel.
	if status, _, _ := c.do("GET", "/v2/bot/info", "another", ""); status != 200 {
		t.Errorf("another channel = %d", status)
	}
}

func TestMessageValidation(t *testing.T) {
	_, c := newSim(t, sim.Options{})
	for _, tt := range []struct {
		msgs     string
		status   int
		property string
	}{
		{text("ok"), 200, ""},
		{`[]`, 400, "messages"},
		{`[` + strings.Repeat(`{"type":"text","text":"x"},`, 5) + `{"type":"text","text":"x"}]`, 400, "messages"},
		{`[{"type":"text"}]`, 400, "messages[0].text"},
		{`[{"type":"text","text":"` + strings.Repeat("あ", 5001) + `"}]`, 400, "messages[0].text"},
		{`[{"type":"sticker","packageId":"446","stickerId":"1988"}]`, 200, ""},
		{`[{"type":"sticker","packageId":"446"}]`, 400, "messages[0].stickerId"},
		{`[{"type":"image","originalContentUrl":"http://x/a.jpg","previewImageUrl":"https://x/p.jpg"}]`, 400, "messages[0].originalContentUrl"},
		{`[{"type":"flex","altText":"Order","contents":{"type":"bubble"}}]`, 200, ""},
		{`[{"type":"flex","altText":"Order"}]`, 400, "messages[0].contents"},
		{`[{"type":"location","title":"Shop","address":"Bangkok","latitude":13.7,"longitude":100.5}]`, 200, ""},
		{`[{"type":"template","altText":"t","template":{"type":"buttons"}}]`, 200, ""},
		{`[{"type":"hologram"}]`, 400, "messages[0].type"},
		{`[{"type":"text","text":"x","quickReply":{"items":[` + strings.TrimSuffix(strings.Repeat(`{"type":"action"},`, 14), ",") + `]}}]`, 400, "messages[0].quickReply.items"},
	} {
		status, hdr, body := c.do("POST", "/v2/bot/message/validate/push", "t", `{"messages":`+tt.msgs+`}`)
		if status != tt.status {
			t.Errorf("validate %s = %d %v, want %d", tt.msgs[:min(60, len(tt.msgs))], status, body, tt.status)
			continue
		}
		if hdr.Get("X-Line-Request-Id") == "" {
			t.Error("no x-line-request-id")
		}
		if tt.property != "" {
			details, _ := body["details"].([]any)
			if len(details) == 0 || details[0].(map[string]any)["property"] != tt.property {
				t.Errorf("validate %s: details %v, want property %s", tt.msgs[:min(60, len(tt.msgs))], body["details"], tt.property)
			}
		}
	}
}

func TestCallsRecord(t *testing.T) {
	a, c := newSim(t, sim.Options{})
	c.do("POST", "/v2/bot/message/push", "secret-token", `{"to":"U1","messages":`+text("hello")+`}`)
	status, _, _ := c.do("GET", "/_sim/calls?path=/v2/bot/message/push", "", "")
	if status != 200 {
		t.Fatalf("/_sim/calls = %d", status)
	}
	calls := a.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	call := calls[0]
	if call.Method != "POST" || call.Path != "/v2/bot/message/push" || call.Status != 200 || call.RequestID == "" || !bytes.Contains(call.Body, []byte("hello")) {
		t.Errorf("call = %+v", call)
	}
	b, err := json.Marshal(call)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("secret-token")) {
		t.Error("the access token is in the call record")
	}
}

func TestFaults(t *testing.T) {
	a, c := newSim(t, sim.Options{})
	a.SetFaults(sim.Faults{ErrorRate: 1})
	if status, _, body := c.do("GET", "/v2/bot/info", "t", ""); status != 500 || body["message"] == nil {
		t.Errorf("with error rate 1: %d %v", status, body)
	}
	a.SetFaults(sim.Faults{DropRate: 1})
	req, err := http.NewRequest("GET", c.url+"/v2/bot/info", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("with drop rate 1: got an answer %d", resp.StatusCode)
	}
	a.SetFaults(sim.Faults{Latency: 50 * time.Millisecond})
	start := time.Now()
	c.do("GET", "/v2/bot/info", "t", "")
	if time.Since(start) < 50*time.Millisecond {
		t.Error("latency not injected")
	}
	a.SetFaults(sim.Faults{})
	if status, _, _ := c.do("GET", "/v2/bot/info", "t", ""); status != 200 {
		t.Errorf("without faults: %d", status)
	}
}

func TestWebhookEndpoint(t *testing.T) {
	var got []byte
	var sig string
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		if got, err = io.ReadAll(r.Body); err != nil {
			t.Errorf("reading the webhook: %v", err)
		}
		sig = r.Header.Get("X-Line-Signature")
	}))
	defer bot.Close()
	_, c := newSim(t, sim.Options{Channels: []sim.Channel{{ID: "a", AccessToken: "tok", Secret: "sec"}}})
	if status, _, _ := c.do("GET", "/v2/bot/channel/webhook/endpoint", "tok", ""); status != 404 {
		t.Errorf("endpoint before set = %d", status)
	}
	if status, _, _ := c.do("PUT", "/v2/bot/channel/webhook/endpoint", "tok", `{"endpoint":"`+bot.URL+`/webhook/a"}`); status != 200 {
		t.Fatalf("set endpoint = %d", status)
	}
	if status, _, body := c.do("GET", "/v2/bot/channel/webhook/endpoint", "tok", ""); status != 200 || body["active"] != true || body["endpoint"] != bot.URL+"/webhook/a" {
		t.Errorf("get endpoint = %d %v", status, body)
	}
	status, _, body := c.do("POST", "/v2/bot/channel/webhook/test", "tok", "")
	if status != 200 || body["success"] != true || body["statusCode"] != float64(200) {
		t.Fatalf("test endpoint = %d %v", status, body)
	}
	if !bytes.Contains(got, []byte(`"events":[]`)) || sig == "" {
		t.Errorf("the bot got %q with signature %q", got, sig)
	}
}

// TestRetryKeyConcurrent: of concurrent pushes with one retry key, exactly
// one is accepted.
func TestRetryKeyConcurrent(t *testing.T) {
	_, c := newSim(t, sim.Options{})
	push := `{"to":"U1","messages":` + text("hi") + `}`
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			status, _, _ := c.do("POST", "/v2/bot/message/push", "t", push, "X-Line-Retry-Key", "323e4567-e89b-12d3-a456-426614174000")
			mu.Lock()
			codes[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[409] != 19 {
		t.Errorf("statuses %v, want one 200 and 19 409s", codes)
	}
}
