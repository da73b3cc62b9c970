package sim_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/linegate/linegate/internal/sim"
)

const (
	testClientID     = "1234567890"
	testClientSecret = "the-channel-secret"
)

// form posts a form to the simulator and returns the status and the
// decoded JSON body.
func (c simClient) form(method, path string, v url.Values) (int, map[string]any) {
	c.t.Helper()
	var req *http.Request
	var err error
	if method == "GET" {
		req, err = http.NewRequest(method, c.url+path+"?"+v.Encode(), nil)
	} else {
		req, err = http.NewRequest(method, c.url+path, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("%s %s: %d, body not JSON: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

type assertionKey struct {
	jwk jose.JSONWebKey
}

func newAssertionKey(t *testing.T, kid string) assertionKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return assertionKey{jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "RS256", Use: "sig"}}
}

// sign makes a JWT assertion with the claims, changed by edit.
func (k assertionKey) sign(t *testing.T, now time.Time, edit func(c *jwt.Claims, extra map[string]any)) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: &k.jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.Claims{Issuer: testClientID, Subject: testClientID, Audience: jwt.Audience{"https://api.line.me/"},
		Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	extra := map[string]any{"token_exp": 3600}
	if edit != nil {
		edit(&c, extra)
	}
	s, err := jwt.Signed(signer).Claims(c).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionForm(a string) url.Values {
	return url.Values{"grant_type": {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}
}

func tokenSim(t *testing.T, clk *clock, keys ...assertionKey) (*sim.API, simClient) {
	ch := sim.Channel{ID: "shop", Secret: testClientSecret, ClientID: testClientID}
	for _, k := range keys {
		ch.AssertionKeys = append(ch.AssertionKeys, k.jwk.Public())
	}
	return newSim(t, sim.Options{Channels: []sim.Channel{ch, {ID: "other", AccessToken: "tok-other"}}, Now: clk.now})
}

// TestStatelessToken: POST /oauth2/v3/token with client credentials
// answers the spec's response; the token authenticates the Messaging API
// for 15 minutes; mistakes get the spec's ErrorResponse.
func TestStatelessToken(t *testing.T) {
	clk := newClock()
	key := newAssertionKey(t, "kid-1")
	a, c := tokenSim(t, clk, key)
	status, body := c.form("POST", "/oauth2/v3/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {testClientID}, "client_secret": {testClientSecret}})
	tok, _ := body["access_token"].(string)
	if status != 200 || tok == "" || body["token_type"] != "Bearer" || body["expires_in"] != 899.0 {
		t.Fatalf("issue = %d %v", status, body)
	}
	if status, _, body := c.do("GET", "/v2/bot/info", tok, ""); status != 200 || body["userId"] != sim.BotUserID("shop") {
		t.Errorf("bot info with the token = %d %v", status, body)
	}
	// With a JWT assertion too (no token_exp needed).
	status, body = c.form("POST", "/oauth2/v3/token", assertionForm(key.sign(t, clk.now(), func(_ *jwt.Claims, e map[string]any) { delete(e, "token_exp") })))
	if status != 200 || body["access_token"] == nil {
		t.Errorf("issue with an assertion = %d %v", status, body)
	}
	// Expiry: 401 with LINE's body.
	clk.add(15*time.Minute + time.Second)
	if status, _, body := c.do("GET", "/v2/bot/info", tok, ""); status != 401 || !strings.HasPrefix(body["message"].(string), "Authentication failed") {
		t.Errorf("bot info with an expired token = %d %v", status, body)
	}
	// A stateless token cannot be revoked: it lives until it expires.
	_, body = c.form("POST", "/oauth2/v3/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {testClientID}, "client_secret": {testClientSecret}})
	tok2, _ := body["access_token"].(string)
	c.form("POST", "/oauth2/v2.1/revoke", url.Values{"client_id": {testClientID}, "client_secret": {testClientSecret}, "access_token": {tok2}})
	if status, _, _ := c.do("GET", "/v2/bot/info", tok2, ""); status != 200 {
		t.Errorf("a stateless token after a v2.1 revoke = %d, want 200", status)
	}
	if n := len(a.IssuedTokens()); n != 3 {
		t.Errorf("%d tokens issued, want 3", n)
	}

	for _, tc := range []struct {
		name string
		form url.Values
		code string
	}{
		{"no grant type", url.Values{"client_id": {testClientID}, "client_secret": {testClientSecret}}, "invalid_request"},
		{"other grant type", url.Values{"grant_type": {"password"}, "client_id": {testClientID}, "client_secret": {testClientSecret}}, "unsupported_grant_type"},
		{"no secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}}, "invalid_request"},
		{"wrong secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}, "client_secret": {"wrong"}}, "invalid_client"},
		{"unknown channel", url.Values{"grant_type": {"client_credentials"}, "client_id": {"999"}, "client_secret": {testClientSecret}}, "invalid_client"},
	} {
		status, body := c.form("POST", "/oauth2/v3/token", tc.form)
		if status != 400 || body["error"] != tc.code || body["error_description"] == nil {
			t.Errorf("%s: %d %v, want 400 %s", tc.name, status, body, tc.code)
		}
	}
	// A JSON body is not the form the spec takes.
	if status, _, body := c.do("POST", "/oauth2/v3/token", "", `{"grant_type":"client_credentials"}`); status != 400 || body["error"] != "invalid_request" {
		t.Errorf("JSON body = %d %v", status, body)
	}
}

// TestV21Token: POST /oauth2/v2.1/token with a JWT assertion signed by a
// registered key issues a token of token_exp seconds with a key_id; it is
// listed by GET /oauth2/v2.1/tokens/kid, verified by /oauth2/v2.1/verify,
// and stops at once when revoked; assertions LINE would refuse are
// refused.
func TestV21Token(t *testing.T) {
	clk := newClock()
	key := newAssertionKey(t, "kid-1")
	a, c := tokenSim(t, clk, key)
	status, body := c.form("POST", "/oauth2/v2.1/token", assertionForm(key.sign(t, clk.now(), nil)))
	tok, _ := body["access_token"].(string)
	keyID, _ := body["key_id"].(string)
	if status != 200 || tok == "" || keyID == "" || body["expires_in"] != 3600.0 || body["token_type"] != "Bearer" {
		t.Fatalf("issue = %d %v", status, body)
	}
	if status, _, _ := c.do("GET", "/v2/bot/info", tok, ""); status != 200 {
		t.Errorf("bot info with the token = %d", status)
	}
	status, body = c.form("GET", "/oauth2/v2.1/tokens/kid", assertionForm(key.sign(t, clk.now(), nil)))
	if kids, _ := body["kids"].([]any); status != 200 || len(kids) != 1 || kids[0] != keyID {
		t.Errorf("kids = %d %v, want [%s]", status, body, keyID)
	}
	status, body = c.form("GET", "/oauth2/v2.1/verify", url.Values{"access_token": {tok}})
	if status != 200 || body["client_id"] != testClientID || body["expires_in"].(float64) > 3600 {
		t.Errorf("verify = %d %v", status, body)
	}
	// Revoke: the secret is required; then the token is refused.
	if status, body := c.form("POST", "/oauth2/v2.1/revoke", url.Values{"client_id": {testClientID}, "client_secret": {"wrong"}, "access_token": {tok}}); status != 400 || body["error"] != "invalid_client" {
		t.Errorf("revoke with a wrong secret = %d %v", status, body)
	}
	if status, body := c.form("POST", "/oauth2/v2.1/revoke", url.Values{"client_id": {testClientID}, "client_secret": {testClientSecret}, "access_token": {tok}}); status != 200 || body != nil {
		t.Errorf("revoke = %d %v, want 200 and no body", status, body)
	}
	if status, _, _ := c.do("GET", "/v2/bot/info", tok, ""); status != 401 {
		t.Errorf("bot info with a revoked token = %d", status)
	}
	if status, body := c.form("GET", "/oauth2/v2.1/verify", url.Values{"access_token": {tok}}); status != 400 || body["error"] != "invalid_request" {
		t.Errorf("verify of a revoked token = %d %v", status, body)
	}
	if it := a.IssuedTokens(); len(it) != 1 || it[0].RevokedAt == nil || it[0].KeyID != keyID || it[0].AssertionKID != "kid-1" || it[0].Uses != 1 {
		t.Errorf("issued tokens: %+v", it)
	}

	other := newAssertionKey(t, "kid-1") // same kid, another key
	for _, tc := range []struct {
		name      string
		assertion string
		code      string
	}{
		{"unknown kid", newAssertionKey(t, "kid-9").sign(t, clk.now(), nil), "invalid_client"},
		{"another key", other.sign(t, clk.now(), nil), "invalid_client"},
		{"no token_exp", key.sign(t, clk.now(), func(_ *jwt.Claims, e map[string]any) { delete(e, "token_exp") }), "invalid_request"},
		{"token_exp over 30 days", key.sign(t, clk.now(), func(_ *jwt.Claims, e map[string]any) { e["token_exp"] = 2592001 }), "invalid_request"},
		{"wrong aud", key.sign(t, clk.now(), func(c *jwt.Claims, _ map[string]any) { c.Audience = jwt.Audience{"https://example.com/"} }), "invalid_request"},
		{"sub not iss", key.sign(t, clk.now(), func(c *jwt.Claims, _ map[string]any) { c.Subject = "1" }), "invalid_request"},
		{"expired", key.sign(t, clk.now(), func(c *jwt.Claims, _ map[string]any) { c.Expiry = jwt.NewNumericDate(clk.now().Add(-time.Second)) }), "invalid_grant"},
		{"exp over 30 minutes", key.sign(t, clk.now(), func(c *jwt.Claims, _ map[string]any) { c.Expiry = jwt.NewNumericDate(clk.now().Add(time.Hour)) }), "invalid_request"},
		{"not a JWT", "abc.def.ghi", "invalid_request"},
	} {
		status, body := c.form("POST", "/oauth2/v2.1/token", assertionForm(tc.assertion))
		if status != 400 || body["error"] != tc.code {
			t.Errorf("%s: %d %v, want 400 %s", tc.name, status, body, tc.code)
		}
	}
	// Expiry.
	_, body = c.form("POST", "/oauth2/v2.1/token", assertionForm(key.sign(t, clk.now(), nil)))
	tok2, _ := body["access_token"].(string)
	clk.add(time.Hour)
	if status, _, _ := c.do("GET", "/v2/bot/info", tok2, ""); status != 401 {
		t.Errorf("bot info with an expired token = %d", status)
	}
}

// TestV21TokenLimit: a channel holds at most 30 valid v2.1 tokens; a
// revoked one frees its place.
func TestV21TokenLimit(t *testing.T) {
	clk := newClock()
	key := newAssertionKey(t, "kid-1")
	_, c := tokenSim(t, clk, key)
	var last string
	for i := range 30 {
		status, body := c.form("POST", "/oauth2/v2.1/token", assertionForm(key.sign(t, clk.now(), nil)))
		if status != 200 {
			t.Fatalf("token %d: %d %v", i+1, status, body)
		}
		last = body["access_token"].(string)
	}
	if status, body := c.form("POST", "/oauth2/v2.1/token", assertionForm(key.sign(t, clk.now(), nil))); status != 400 || body["error"] != "invalid_request" {
		t.Errorf("token 31: %d %v", status, body)
	}
	c.form("POST", "/oauth2/v2.1/revoke", url.Values{"client_id": {testClientID}, "client_secret": {testClientSecret}, "access_token": {last}})
	if status, body := c.form("POST", "/oauth2/v2.1/token", assertionForm(key.sign(t, clk.now(), nil))); status != 200 {
		t.Errorf("token after a revocation: %d %v", status, body)
	}
}

// TestTokenCallsRedacted: /_sim/calls shows the token endpoints' calls
// without the secret, the assertion or the token.
func TestTokenCallsRedacted(t *testing.T) {
	clk := newClock()
	key := newAssertionKey(t, "kid-1")
	a, c := tokenSim(t, clk, key)
	assertion := key.sign(t, clk.now(), nil)
	_, b1 := c.form("POST", "/oauth2/v3/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}, "client_secret": {testClientSecret}})
	_, b2 := c.form("POST", "/oauth2/v2.1/token", assertionForm(assertion))
	c.form("POST", "/oauth2/v2.1/revoke", url.Values{"client_id": {testClientID}, "client_secret": {testClientSecret}, "access_token": {b2["access_token"].(string)}})
	calls, err := json.Marshal(a.Calls())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.Calls()); n != 3 {
		t.Errorf("%d calls recorded, want 3", n)
	}
	for _, call := range a.Calls() {
		if call.Channel != "shop" || call.Status != 200 || call.RequestID == "" {
			t.Errorf("call %s: channel %q, status %d, request id %q", call.Path, call.Channel, call.Status, call.RequestID)
		}
	}
	for _, secret := range []string{testClientSecret, assertion, b1["access_token"].(string), b2["access_token"].(string)} {
		if strings.Contains(string(calls), secret) {
			t.Errorf("/_sim/calls holds a secret or token: %s", calls)
		}
	}
	if !strings.Contains(string(calls), `(redacted)`) || !strings.Contains(string(calls), testClientID) {
		t.Errorf("calls: %s", calls)
	}
}
