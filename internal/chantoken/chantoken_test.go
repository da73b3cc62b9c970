package chantoken_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/linegate/linegate/internal/chantoken"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const secret = "channel-secret-value"

// world is the simulator behind a recorder that learns the tokens it
// issues, so that tests can look for them where they must not be.
type world struct {
	api *sim.API
	url string

	mu     sync.Mutex
	tokens []string
	fail   bool // answer the token endpoints 400
}

func newWorld(t *testing.T, key *jose.JSONWebKey) *world {
	ch := sim.Channel{ID: "shop", Secret: secret, ClientID: "1234567890"}
	if key != nil {
		ch.AssertionKeys = []jose.JSONWebKey{key.Public()}
	}
	w := &world{api: sim.NewAPI(sim.Options{Channels: []sim.Channel{ch}})}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/oauth2/") {
			w.mu.Lock()
			fail := w.fail
			w.mu.Unlock()
			if fail {
				rw.Header().Set("Content-Type", "application/json")
				rw.WriteHeader(400)
				rw.Write([]byte(`{"error":"invalid_client","error_description":"invalid client_secret"}`))
				return
			}
		}
		rec := httptest.NewRecorder()
		w.api.ServeHTTP(rec, r)
		var v struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &v) == nil && v.AccessToken != "" {
			w.mu.Lock()
			w.tokens = append(w.tokens, v.AccessToken)
			w.mu.Unlock()
		}
		for k, vs := range rec.Header() {
			rw.Header()[k] = vs
		}
		rw.WriteHeader(rec.Code)
		rw.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	w.url = srv.URL
	return w
}

func (w *world) setFail(f bool) {
	w.mu.Lock()
	w.fail = f
	w.mu.Unlock()
}

func (w *world) issued() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.tokens...)
}

// memLedger keeps the records appended.
type memLedger struct {
	mu   sync.Mutex
	recs []ledger.Entry
}

func (m *memLedger) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, e)
	return uint64(len(m.recs) - 1), nil
}

func (m *memLedger) actions(t *testing.T) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.recs {
		_, body, err := record.DecodePayload(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var a record.Admin
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Action+":"+a.Detail["reason"].(string))
	}
	return out
}

func newKey(t *testing.T) *jose.JSONWebKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &jose.JSONWebKey{Key: k, KeyID: "kid-1", Algorithm: "RS256"}
}

// TestSourceV21: a v2.1 token is issued at start, replaced after a 401
// (the replaced one revoked), and revoked on Close; each is a record;
// the client's calls go through with it; neither the log, the records nor
// the errors hold a token or the secret.
func TestSourceV21(t *testing.T) {
	key := newKey(t)
	w := newWorld(t, key)
	var logs bytes.Buffer
	led := &memLedger{}
	set := chantoken.New(chantoken.Options{
		Channels: []chantoken.Credentials{{Channel: "shop", ClientID: "1234567890", Secret: []byte(secret), Key: key,
			Lifetime: time.Hour, Base: w.url}},
		Ledger: led, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ctx := context.Background()
	set.Start(ctx)
	src := set.Source("shop")
	if set.Source("other") != nil {
		t.Error("a source for a channel that gives its token")
	}
	client := &outbound.Client{Base: w.url, Tokens: src}
	if call := client.Push(ctx, []byte(`{"to":"U1","messages":[{"type":"text","text":"hi"}]}`), outbound.RetryKeyFor("a")); !call.OK() {
		t.Fatalf("push: %s", call)
	}
	// Revoked behind its back: the client's next call gets a 401, and
	// goes through with a new token.
	w.api.RevokeAll("shop")
	call := client.Push(ctx, []byte(`{"to":"U1","messages":[{"type":"text","text":"hi"}]}`), outbound.RetryKeyFor("b"))
	if !call.OK() || len(call.Attempts) != 2 || call.Attempts[0].Status != 401 {
		t.Fatalf("push after a revocation: %s", call)
	}
	if err := set.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := led.actions(t); strings.Join(got, " ") != "token_issued:start token_issued:rejected token_revoked:replaced token_revoked:shutdown" {
		t.Errorf("records: %v", got)
	}
	for _, it := range w.api.IssuedTokens() {
		if it.RevokedAt == nil {
			t.Errorf("token %s not revoked", it.SHA256)
		}
	}
	if ok, exp := renewals(set, "ok"), expiry(set); ok != 2 || exp < float64(time.Now().Add(50*time.Minute).Unix()) {
		t.Errorf("metrics: %v tokens issued, expiry %v", ok, exp)
	}
	checkClean(t, logs.String(), w.issued(), led)
}

// checkClean fails if the log or the records hold a token or the secret.
func checkClean(t *testing.T, logs string, tokens []string, led *memLedger) {
	t.Helper()
	if len(tokens) == 0 {
		t.Fatal("no token was issued")
	}
	var recs strings.Builder
	for _, e := range led.recs {
		recs.Write(e.Payload)
	}
	for _, s := range append(tokens, secret) {
		if strings.Contains(logs, s) || strings.Contains(recs.String(), s) {
			t.Errorf("a token or the secret reached the log or the ledger")
		}
	}
}

// TestSourceStatelessFailure: a stateless token that LINE refuses to
// issue leaves the source without a token (its error names LINE's error,
// not the secret), counted as failed; once LINE issues again, sends go
// through.
func TestSourceStatelessFailure(t *testing.T) {
	w := newWorld(t, nil)
	w.setFail(true)
	var logs bytes.Buffer
	led := &memLedger{}
	set := chantoken.New(chantoken.Options{
		Channels: []chantoken.Credentials{{Channel: "shop", ClientID: "1234567890", Secret: []byte(secret), Base: w.url}},
		Ledger:   led, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ctx := context.Background()
	set.Start(ctx)
	_, err := set.Source("shop").Token(ctx)
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || strings.Contains(err.Error(), secret) {
		t.Fatalf("Token with LINE refusing = %v", err)
	}
	w.setFail(false)
	// The next try comes from the renewals' backoff (1s), or from a send
	// a second after the failure.
	time.Sleep(1100 * time.Millisecond)
	tok, err := set.Source("shop").Token(ctx)
	if err != nil || len(tok) == 0 {
		t.Fatalf("Token once LINE issues again = %v", err)
	}
	client := &outbound.Client{Base: w.url, Tokens: set.Source("shop")}
	if call := client.Reply(ctx, []byte(`{"replyToken":"`+w.api.IssueReplyToken("")+`","messages":[{"type":"text","text":"hi"}]}`)); !call.OK() {
		t.Fatalf("reply: %s", call)
	}
	if failed, ok := renewals(set, "failed"), renewals(set, "ok"); failed < 1 || ok != 1 {
		t.Errorf("metrics: %v failed, %v ok", failed, ok)
	}
	if err := set.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Issued by a send ("expired": none in hand) or by the renewals.
	if got := led.actions(t); len(got) != 1 || (got[0] != "token_issued:expired" && got[0] != "token_issued:renew") {
		t.Errorf("records: %v", got)
	}
	if !strings.Contains(logs.String(), "issuing a channel access token failed") {
		t.Error("the failure is not logged")
	}
	checkClean(t, logs.String(), w.issued(), led)
}

func renewals(set *chantoken.Set, outcome string) float64 {
	return testutil.ToFloat64(set.Collectors()[1].(*prometheus.CounterVec).WithLabelValues("shop", outcome))
}

func expiry(set *chantoken.Set) float64 {
	return testutil.ToFloat64(set.Collectors()[0].(*prometheus.GaugeVec).WithLabelValues("shop"))
}
