package sim

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The channel access token endpoints of channel-access-token.yml that the
// simulator serves: stateless tokens (POST /oauth2/v3/token, with the
// channel secret or a JWT assertion) and channel access tokens v2.1 (POST
// /oauth2/v2.1/token with a JWT assertion; GET /oauth2/v2.1/tokens/kid;
// GET /oauth2/v2.1/verify; POST /oauth2/v2.1/revoke). A token they issue
// authenticates the Messaging API endpoints until it expires or is
// revoked. Bodies are form-encoded; errors are the spec's ErrorResponse,
// {"error", "error_description"}, as OAuth 2.0 (RFC 6749 section 5.2)
// names them.

const (
	// assertionType is the client_assertion_type of a JWT assertion.
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// assertionAudience is the aud claim LINE requires.
	assertionAudience = "https://api.line.me/"
	// maxAssertionLife is the longest a JWT assertion may live (exp).
	maxAssertionLife = 30 * time.Minute
	// maxTokenExp is the longest token_exp of a v2.1 token: 30 days.
	maxTokenExp = 30 * 24 * 60 * 60
	// maxV21Tokens is how many v2.1 tokens a channel may hold at once.
	maxV21Tokens = 30
	// defaultStatelessTTL is a stateless token's lifetime: 15 minutes.
	defaultStatelessTTL = 15 * time.Minute
)

// Token types, as /_sim/tokens reports them.
const (
	TokenStateless = "stateless"
	TokenV21       = "v2.1"
)

// IssuedToken describes a token the simulator issued, without the token:
// /_sim/tokens answers a list of them.
type IssuedToken struct {
	Channel string `json:"channel"`
	Type    string `json:"type"` // TokenStateless or TokenV21
	// KeyID is a v2.1 token's key_id; AssertionKID the kid of the key
	// whose assertion asked for it.
	KeyID        string `json:"key_id,omitempty"`
	AssertionKID string `json:"assertion_kid,omitempty"`
	// SHA256 is the first 16 hex digits of the token's SHA-256.
	SHA256    string     `json:"token_sha256"`
	IssuedAt  time.Time  `json:"issued_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Uses counts the Messaging API calls it authenticated.
	Uses int `json:"uses"`
}

// tokenStore holds the tokens issued; its own lock, taken after API.mu
// never before.
type tokenStore struct {
	mu     sync.Mutex
	tokens map[string]*IssuedToken // by token
	order  []string
}

// TokenHash is what the simulator and linegate show of a token: the first
// 16 hex digits of its SHA-256.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

func (a *API) routeTokens() {
	a.tokenRoute("POST /oauth2/v3/token", a.issueStateless)
	a.tokenRoute("POST /oauth2/v2.1/token", a.issueV21)
	a.tokenRoute("GET /oauth2/v2.1/tokens/kid", a.tokenKIDs)
	a.tokenRoute("GET /oauth2/v2.1/verify", a.verifyV21)
	a.tokenRoute("POST /oauth2/v2.1/revoke", a.revokeV21)
	a.mux.HandleFunc("GET /_sim/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.IssuedTokens())
	})
	// As when a token is revoked in the console or by another holder:
	// every token of the channel stops at once.
	a.mux.HandleFunc("DELETE /_sim/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"revoked": a.RevokeAll(r.URL.Query().Get("channel"))})
	})
}

// RevokeAll revokes every valid token issued for the channel, and returns
// how many.
func (a *API) RevokeAll(channel string) int {
	now := a.opts.Now()
	a.issued.mu.Lock()
	defer a.issued.mu.Unlock()
	n := 0
	for _, it := range a.issued.tokens {
		if it.Channel == channel && it.RevokedAt == nil && now.Before(it.ExpiresAt) {
			it.RevokedAt = &now
			n++
		}
	}
	return n
}

// IssuedTokens lists the tokens issued so far, oldest first.
func (a *API) IssuedTokens() []IssuedToken {
	a.issued.mu.Lock()
	defer a.issued.mu.Unlock()
	out := []IssuedToken{}
	for _, t := range a.issued.order {
		out = append(out, *a.issued.tokens[t])
	}
	return out
}

// tokenCall is one request to a token endpoint.
type tokenCall struct {
	*call
	form url.Values
}

// oauthError is the spec's ErrorResponse of the token endpoints.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (c *tokenCall) oauthFail(code, desc string) {
	c.reply(http.StatusBadRequest, oauthError{code, desc})
}

// tokenRoute wraps a token endpoint: request id, body cap, the form, and
// the record of the call with every credential and token redacted. It
// takes no bearer token and no fault injection.
func (a *API) tokenRoute(pattern string, h func(*tokenCall)) {
	_, endpoint, _ := strings.Cut(pattern, " ")
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &tokenCall{call: &call{a: a, w: w, r: r, requestID: newRequestID(), endpoint: endpoint}}
		w.Header().Set("X-Line-Request-Id", c.requestID)
		defer func() {
			c.body = redactForm(c.form)
			c.response = redactTokens(c.response)
			c.record()
		}()
		if r.Method == http.MethodGet {
			c.form = r.URL.Query()
		} else {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
				c.oauthFail("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				c.oauthFail("invalid_request", "the request body is not a valid form")
				return
			}
			c.form = r.PostForm
		}
		h(c)
	})
}

// redactForm returns the form for the record of the call, as JSON, with
// the secrets and tokens it carries replaced.
func redactForm(f url.Values) []byte {
	if f == nil {
		return nil
	}
	m := map[string]string{}
	for k, v := range f {
		s := strings.Join(v, ",")
		switch k {
		case "client_secret", "client_assertion", "access_token":
			s = "(redacted)"
		}
		m[k] = s
	}
	b, _ := json.Marshal(m)
	return b
}

// redactTokens replaces the access_token of a response.
func redactTokens(b []byte) []byte {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil || m["access_token"] == nil {
		return b
	}
	m["access_token"] = "(redacted)"
	out, _ := json.Marshal(m)
	return out
}

// channelByClientID returns the channel whose LINE channel id is id.
func (a *API) channelByClientID(id string) *channelState {
	if id == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, cs := range a.channels {
		if cs.ClientID == id {
			return cs
		}
	}
	return nil
}

// clientSecret authenticates client_id and client_secret.
func (c *tokenCall) clientSecret() *channelState {
	id, secret := c.form.Get("client_id"), c.form.Get("client_secret")
	if id == "" || secret == "" {
		c.oauthFail("invalid_request", "some parameters missed or invalid")
		return nil
	}
	cs := c.a.channelByClientID(id)
	if cs == nil || cs.Secret == "" || !hmacEqual(cs.Secret, secret) {
		c.oauthFail("invalid_client", "invalid client_id or client_secret")
		return nil
	}
	c.ch = cs // the record of the call names it
	return cs
}

func hmacEqual(a, b string) bool {
	sa, sb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return sa == sb
}

// assertionClaims are a JWT assertion's claims beyond the registered ones.
type assertionClaims struct {
	TokenExp *int64 `json:"token_exp"`
}

// assertion verifies the JWT assertion of the form (RFC 7523, as LINE
// documents it: RS256, a kid of a key registered for the channel, iss and
// sub the channel id, aud https://api.line.me/, exp at most 30 minutes
// ahead) and returns its channel, the kid and token_exp.
func (c *tokenCall) assertion(wantTokenExp bool) (*channelState, string, int64, bool) {
	if c.form.Get("client_assertion_type") != assertionType || c.form.Get("client_assertion") == "" {
		c.oauthFail("invalid_request", "some parameters missed or invalid")
		return nil, "", 0, false
	}
	tok, err := jwt.ParseSigned(c.form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		c.oauthFail("invalid_request", "client_assertion is not a JWT signed with RS256")
		return nil, "", 0, false
	}
	kid := tok.Headers[0].KeyID
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		c.oauthFail("invalid_request", "client_assertion has malformed claims")
		return nil, "", 0, false
	}
	cs := c.a.channelByClientID(unverified.Issuer)
	var key *jose.JSONWebKey
	if cs != nil {
		for i := range cs.AssertionKeys {
			if cs.AssertionKeys[i].KeyID == kid && kid != "" {
				key = &cs.AssertionKeys[i]
			}
		}
	}
	if key == nil {
		c.oauthFail("invalid_client", "no assertion signing key with this kid is registered for the channel")
		return nil, "", 0, false
	}
	var std jwt.Claims
	var extra assertionClaims
	if err := tok.Claims(key.Key, &std, &extra); err != nil {
		c.oauthFail("invalid_client", "client_assertion's signature does not verify")
		return nil, "", 0, false
	}
	now := c.a.opts.Now()
	switch {
	case std.Issuer != cs.ClientID || std.Subject != cs.ClientID:
		c.oauthFail("invalid_request", "iss and sub must both be the channel id")
	case !std.Audience.Contains(assertionAudience):
		c.oauthFail("invalid_request", "aud must be "+assertionAudience)
	case std.Expiry == nil:
		c.oauthFail("invalid_request", "exp is required")
	case !now.Before(std.Expiry.Time()):
		c.oauthFail("invalid_grant", "client_assertion has expired")
	case std.Expiry.Time().Sub(now) > maxAssertionLife+time.Minute:
		c.oauthFail("invalid_request", "exp must be at most 30 minutes from now")
	case wantTokenExp && extra.TokenExp == nil:
		c.oauthFail("invalid_request", "token_exp is required")
	case wantTokenExp && (*extra.TokenExp < 1 || *extra.TokenExp > maxTokenExp):
		c.oauthFail("invalid_request", fmt.Sprintf("token_exp must be between 1 and %d seconds", maxTokenExp))
	default:
		var exp int64
		if extra.TokenExp != nil {
			exp = *extra.TokenExp
		}
		c.ch = cs // the record of the call names it
		return cs, kid, exp, true
	}
	return nil, "", 0, false
}

func (c *tokenCall) clientCredentials() bool {
	if c.form.Get("grant_type") != "client_credentials" {
		if c.form.Get("grant_type") == "" {
			c.oauthFail("invalid_request", "some parameters missed or invalid")
		} else {
			c.oauthFail("unsupported_grant_type", "grant_type must be client_credentials")
		}
		return false
	}
	return true
}

// issueStateless is POST /oauth2/v3/token: a token for 15 minutes (the
// simulator's StatelessTokenTTL), with the channel secret or a JWT
// assertion; it cannot be revoked.
func (a *API) issueStateless(c *tokenCall) {
	if !c.clientCredentials() {
		return
	}
	var cs *channelState
	var kid string
	if c.form.Has("client_assertion") || c.form.Has("client_assertion_type") {
		var ok bool
		if cs, kid, _, ok = c.assertion(false); !ok {
			return
		}
	} else if cs = c.clientSecret(); cs == nil {
		return
	}
	ttl := a.opts.StatelessTokenTTL
	if ttl <= 0 {
		ttl = defaultStatelessTTL
	}
	tok, info := a.issue(cs, TokenStateless, kid, ttl)
	c.reply(http.StatusOK, map[string]any{"token_type": "Bearer", "access_token": tok, "expires_in": int(info.ExpiresAt.Sub(info.IssuedAt).Seconds()) - 1})
}

// issueV21 is POST /oauth2/v2.1/token: a token for token_exp seconds,
// with a JWT assertion.
func (a *API) issueV21(c *tokenCall) {
	if !c.clientCredentials() {
		return
	}
	cs, kid, exp, ok := c.assertion(true)
	if !ok {
		return
	}
	if a.activeV21(cs.ID) >= maxV21Tokens {
		c.oauthFail("invalid_request", fmt.Sprintf("the channel already has %d valid channel access tokens v2.1: revoke one first", maxV21Tokens))
		return
	}
	tok, info := a.issue(cs, TokenV21, kid, time.Duration(exp)*time.Second)
	c.reply(http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": exp, "key_id": info.KeyID})
}

// tokenKIDs is GET /oauth2/v2.1/tokens/kid: the key ids of the channel's
// valid v2.1 tokens.
func (a *API) tokenKIDs(c *tokenCall) {
	cs, _, _, ok := c.assertion(false)
	if !ok {
		return
	}
	now := a.opts.Now()
	kids := []string{}
	a.issued.mu.Lock()
	for _, t := range a.issued.order {
		it := a.issued.tokens[t]
		if it.Channel == cs.ID && it.Type == TokenV21 && it.RevokedAt == nil && now.Before(it.ExpiresAt) {
			kids = append(kids, it.KeyID)
		}
	}
	a.issued.mu.Unlock()
	c.reply(http.StatusOK, map[string]any{"kids": kids})
}

// verifyV21 is GET /oauth2/v2.1/verify.
func (a *API) verifyV21(c *tokenCall) {
	tok := c.form.Get("access_token")
	if tok == "" {
		c.oauthFail("invalid_request", "access_token is required")
		return
	}
	it, cs := a.validIssued(tok, false)
	if it == nil || it.Type != TokenV21 {
		c.oauthFail("invalid_request", "access token expired or invalid")
		return
	}
	c.reply(http.StatusOK, map[string]any{"client_id": cs.ClientID, "expires_in": int64(it.ExpiresAt.Sub(a.opts.Now()).Seconds()),
		"scope": "profile chat_message.write"})
}

// revokeV21 is POST /oauth2/v2.1/revoke: client_id, client_secret and the
// token. A token that is unknown, expired or revoked already is answered
// 200 too (RFC 7009).
func (a *API) revokeV21(c *tokenCall) {
	cs := c.clientSecret()
	if cs == nil {
		return
	}
	tok := c.form.Get("access_token")
	if tok == "" {
		c.oauthFail("invalid_request", "some parameters missed or invalid")
		return
	}
	now := a.opts.Now()
	a.issued.mu.Lock()
	if it := a.issued.tokens[tok]; it != nil && it.Channel == cs.ID && it.Type == TokenV21 && it.RevokedAt == nil {
		it.RevokedAt = &now
	}
	a.issued.mu.Unlock()
	c.status = http.StatusOK
	c.w.WriteHeader(http.StatusOK)
}

// issue makes a new token for the channel.
func (a *API) issue(cs *channelState, typ, kid string, ttl time.Duration) (string, IssuedToken) {
	b := make([]byte, 48)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := a.opts.Now()
	it := &IssuedToken{Channel: cs.ID, Type: typ, AssertionKID: kid, SHA256: TokenHash(tok), IssuedAt: now, ExpiresAt: now.Add(ttl)}
	if typ == TokenV21 {
		k := make([]byte, 16)
		rand.Read(k)
		it.KeyID = base64.RawURLEncoding.EncodeToString(k)
	}
	a.issued.mu.Lock()
	defer a.issued.mu.Unlock()
	if a.issued.tokens == nil {
		a.issued.tokens = map[string]*IssuedToken{}
	}
	a.issued.tokens[tok] = it
	a.issued.order = append(a.issued.order, tok)
	return tok, *it
}

func (a *API) activeV21(channel string) int {
	now := a.opts.Now()
	a.issued.mu.Lock()
	defer a.issued.mu.Unlock()
	n := 0
	for _, it := range a.issued.tokens {
		if it.Channel == channel && it.Type == TokenV21 && it.RevokedAt == nil && now.Before(it.ExpiresAt) {
			n++
		}
	}
	return n
}

// validIssued returns an issued token that is neither expired nor
// revoked, and its channel; use counts it as a Messaging API call's.
func (a *API) validIssued(tok string, use bool) (*IssuedToken, *channelState) {
	now := a.opts.Now()
	a.issued.mu.Lock()
	it := a.issued.tokens[tok]
	if it == nil || it.RevokedAt != nil || !now.Before(it.ExpiresAt) {
		a.issued.mu.Unlock()
		return nil, nil
	}
	if use {
		it.Uses++
	}
	copied := *it
	a.issued.mu.Unlock()
	a.mu.Lock()
	cs := a.channels[copied.Channel]
	a.mu.Unlock()
	return &copied, cs
}

// issuedChannel authenticates a Messaging API call made with an issued
// token.
func (a *API) issuedChannel(tok string) *channelState {
	_, cs := a.validIssued(tok, true)
	return cs
}
