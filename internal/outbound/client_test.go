package outbound_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/sim"
)

// faulty stands before the simulator and spoils the first answers:
// "500" answers 500 without forwarding, "429" answers 429 with
// Retry-After without forwarding, "lost" forwards and then drops the
// answer (LINE took the request; the client never hears).
type faulty struct {
	mu     sync.Mutex
	faults []string
	proxy  *httputil.ReverseProxy
}

func (f *faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fault := ""
	if len(f.faults) > 0 {
		fault, f.faults = f.faults[0], f.faults[1:]
	}
	f.mu.Unlock()
	switch fault {
	case "500":
		w.WriteHeader(500)
		w.Write([]byte(`{"message":"An error occurred in the server."}`))
	case "429":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(429)
		w.Write([]byte(`{"message":"You have reached your rate limit."}`))
	case "lost":
		rec := httptest.NewRecorder()
		f.proxy.ServeHTTP(rec, r)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		conn.Close()
	default:
		f.proxy.ServeHTTP(w, r)
	}
}

func setup(t *testing.T, faults ...string) (*sim.API, *outbound.Client) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "tok"}}})
	simSrv := httptest.NewServer(api)
	t.Cleanup(simSrv.Close)
	u, err := url.Parse(simSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &faulty{faults: faults, proxy: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := &outbound.Client{Base: srv.URL, Token: []byte("tok"), HTTP: &http.Client{Timeout: 5 * time.Second},
		Policy: outbound.RetryPolicy{BaseDelay: 10 * time.Millisecond}}
	return api, c
}

const pushBody = `{"to":"U1","messages":[{"type":"text","text":"your parcel shipped"}]}`

func accepted(api *sim.API, path string) (n int, keys map[string]bool) {
	keys = map[string]bool{}
	for _, c := range api.Calls() {
		if c.Path != path {
			continue
		}
		if c.Status == 200 {
			n++
		}
		for _, k := range c.Headers["X-Line-Retry-Key"] {
			keys[k] = true
		}
	}
	return n, keys
}

// TestPushRetries: 5xx and 429 answers, then success: the push goes through
// once, every try with the same retry key.
func TestPushRetries(t *testing.T) {
	api, c := setup(t, "500", "429", "500")
	key := outbound.RetryKeyFor("event-1")
	start := time.Now()
	call := c.Push(context.Background(), []byte(pushBody), key)
	if !call.OK() || len(call.Attempts) != 4 {
		t.Fatalf("push: ok %v after %d attempts: %s", call.OK(), len(call.Attempts), call)
	}
	if time.Since(start) < time.Second {
		t.Error("Retry-After of 1s was not honoured")
	}
	n, keys := accepted(api, "/v2/bot/message/push")
	if n != 1 || len(keys) != 1 || !keys[key] {
		t.Errorf("simulator accepted %d pushes with keys %v", n, keys)
	}
	if call.Last().RequestID == "" {
		t.Error("no x-line-request-id kept")
	}
}

// TestPushLostAnswer: LINE took the push but the answer was lost; the retry
// with the same key gets 409 with the accepted request id: a success.
func TestPushLostAnswer(t *testing.T) {
	api, c := setup(t, "lost")
	call := c.Push(context.Background(), []byte(pushBody), outbound.RetryKeyFor("event-2"))
	if !call.OK() || call.Last().Status != 409 || call.Last().AcceptedRequest == "" {
		t.Fatalf("push after a lost answer: %s, last %+v", call, call.Last())
	}
	if n, _ := accepted(api, "/v2/bot/message/push"); n != 1 {
		t.Errorf("%d pushes delivered, want 1", n)
	}
}

// TestReplyNeverRetriedBlindly: after a 5xx or a lost answer a reply is not
// sent again; after a 429 (LINE did not take it) it is.
func TestReplyNeverRetriedBlindly(t *testing.T) {
	for _, tt := range []struct {
		fault    string
		attempts int
		ok       bool
	}{
		{"500", 1, false},
		{"lost", 1, false},
		{"429", 2, true},
	} {
		t.Run(tt.fault, func(t *testing.T) {
			api, c := setup(t, tt.fault)
			tok := api.IssueReplyToken("c")
			call := c.Reply(context.Background(), []byte(`{"replyToken":"`+tok+`","messages":[{"type":"text","text":"hi"}]}`))
			if len(call.Attempts) != tt.attempts || call.OK() != tt.ok {
				t.Errorf("reply after %s: %d attempts, ok %v; want %d, %v", tt.fault, len(call.Attempts), call.OK(), tt.attempts, tt.ok)
			}
			if n, keys := accepted(api, "/v2/bot/message/reply"); n > 1 || len(keys) != 0 {
				t.Errorf("%d replies delivered, retry keys %v", n, keys)
			}
		})
	}
}

func TestRetryKeyFor(t *testing.T) {
	a, b := outbound.RetryKeyFor("x"), outbound.RetryKeyFor("x")
	if a != b || a == outbound.RetryKeyFor("y") {
		t.Error("retry keys are not a function of the idempotency key")
	}
	if _, err := uuid.Parse(a); err != nil || len(a) != 36 {
		t.Errorf("%q is not a UUID", a)
	}
}

func TestNoTokenInErrors(t *testing.T) {
	c := &outbound.Client{Base: "http://127.0.0.1:1", Token: []byte("super-secret-token"), Policy: outbound.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond}}
	call := c.Push(context.Background(), []byte(pushBody), outbound.RetryKeyFor("z"))
	if call.OK() || len(call.Attempts) != 2 {
		t.Fatalf("push to a closed port: %s", call)
	}
	for _, a := range call.Attempts {
		if strings.Contains(a.Error, "super-secret-token") {
			t.Fatal("token in an error")
		}
	}
}

// tokens is a TokenSource that gives its tokens in turn, or err.
type tokens struct {
	mu       sync.Mutex
	list     []string
	err      error
	rejected []string
}

func (s *tokens) Token(context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return []byte(s.list[0]), nil
}

func (s *tokens) Rejected(tok []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected = append(s.rejected, string(tok))
	if len(s.list) > 1 && s.list[0] == string(tok) {
		s.list = s.list[1:]
	}
}

// TestClientTokenSource: with a token source, a 401 makes the client tell
// it and try once more, at once, with the next token, a reply included (a
// 401 means LINE took nothing); a second 401 is the answer. A source that
// has no token fails the call before anything is sent, without the error
// holding more than the source's.
func TestClientTokenSource(t *testing.T) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "good"}}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	reply := func() []byte {
		return []byte(`{"replyToken":"` + api.IssueReplyToken("c") + `","messages":[{"type":"text","text":"hi"}]}`)
	}

	src := &tokens{list: []string{"stale", "good"}}
	c := &outbound.Client{Base: srv.URL, Tokens: src}
	call := c.Reply(ctx, reply())
	if !call.OK() || len(call.Attempts) != 2 || call.Attempts[0].Status != 401 || strings.Join(src.rejected, ",") != "stale" {
		t.Errorf("reply with a stale token: %s, rejected %v", call, src.rejected)
	}

	src = &tokens{list: []string{"bad1", "bad2", "bad3"}}
	c = &outbound.Client{Base: srv.URL, Tokens: src, Policy: outbound.RetryPolicy{BaseDelay: time.Millisecond}}
	call = c.Push(ctx, []byte(`{"to":"U1","messages":[{"type":"text","text":"hi"}]}`), outbound.RetryKeyFor("k"))
	if call.OK() || len(call.Attempts) != 2 || call.Last().Status != 401 || len(src.rejected) != 1 {
		t.Errorf("push with refused tokens: %s, rejected %v", call, src.rejected)
	}

	before := len(api.Calls())
	c = &outbound.Client{Base: srv.URL, Tokens: &tokens{err: errTokenUnavailable}, Policy: outbound.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond}}
	call = c.Reply(ctx, reply())
	if call.OK() || call.Last().Status != 0 || !strings.HasPrefix(call.Last().Error, "no channel access token: ") || len(api.Calls()) != before {
		t.Errorf("reply without a token: %s %+v; %d calls reached the API", call, call.Last(), len(api.Calls())-before)
	}
}

var errTokenUnavailable = errors.New("issue: POST /oauth2/v3/token: 400 invalid_client")
