// Package outbound is linegate's only way out to LINE: the Messaging API
// client, and the Sender that stands before it with the kill switch,
// dry-run, consent rules and a per-channel rate limit, and records every
// request and response (or the reason it was held back) in the ledger.
package outbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/record"

	"github.com/google/uuid"
)

// DefaultAPIBase is LINE's Messaging API.
const DefaultAPIBase = "https://api.line.me"

// Call is one request to the Messaging API and what came of it.
type Call struct {
	Endpoint string          `json:"endpoint"` // "reply", "push", ...
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body"`
	RetryKey string          `json:"retry_key,omitempty"`
	// Attempts holds every try, in order.
	Attempts []Attempt `json:"attempts"`
	// Raw is the body of the last answer as it came (at most 1 MiB).
	Raw []byte `json:"-"`
}

// MayHaveTaken reports whether LINE may have acted on the request, or on
// its reply token: an attempt was answered 2xx or 5xx, or failed after it
// was sent, or LINE answered that the reply token is invalid (spent, or
// expired). False when no attempt left (a dial failure) or LINE refused
// each one it got (429, or a 4xx about the request): a reply token is then
// still good. It reads the attempts as their record does
// (MayHaveTaken of the record's attempts), so a call and its record agree.
func (c *Call) MayHaveTaken() bool { return MayHaveTaken(c.Attempts) }

// Attempt is one HTTP exchange.
type Attempt = record.Attempt

// Last returns the last attempt.
func (c *Call) Last() Attempt {
	if len(c.Attempts) == 0 {
		return Attempt{}
	}
	return c.Attempts[len(c.Attempts)-1]
}

// OK reports whether the call succeeded: a 2xx, or a 409 that LINE answers
// to a retry key it has already accepted.
func (c *Call) OK() bool {
	a := c.Last()
	return a.Status/100 == 2 || (a.Status == http.StatusConflict && a.AcceptedRequest != "")
}

// Client is the Messaging API client of one channel. It is safe for
// concurrent use and keeps no per-call state of its own.
//
// Written here rather than taken from LINE's Go SDK, whose client sends an
// empty X-Line-Retry-Key header when none is given and whose errors carry
// response bodies.
type Client struct {
	Base  string // default DefaultAPIBase
	Token []byte // the channel access token; never logged or recorded
	// Tokens, if set, gives the token instead of Token: one that linegate
	// issues and renews itself.
	Tokens TokenSource
	HTTP   *http.Client
	Policy RetryPolicy
	// Observe, if set, sees every attempt (for metrics).
	Observe func(endpoint string, a Attempt)
}

// TokenSource gives a channel access token that can change: issued,
// renewed and revoked by linegate (package chantoken). Its methods are
// safe for concurrent use.
type TokenSource interface {
	// Token returns the token to use now; it may wait for LINE to issue
	// one, until ctx ends. Its error never holds a token or a secret.
	Token(ctx context.Context) ([]byte, error)
	// Rejected tells the source that LINE answered 401 to token, so that
	// the next Token is a new one.
	Rejected(token []byte)
}

// hasToken reports whether the client has a way to authenticate.
func (c *Client) hasToken() bool { return len(c.Token) > 0 || c.Tokens != nil }

// errNoToken begins the error of an attempt that had no token to send.
const errNoToken = "no channel access token: "

// RetryPolicy bounds retries.
type RetryPolicy struct {
	MaxAttempts int           // default 4
	BaseDelay   time.Duration // default 200ms; doubled each time, with jitter
	MaxDelay    time.Duration // default 5s; also caps a Retry-After
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 4
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 200 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 5 * time.Second
	}
	return p
}

// RetryKeyFor derives a stable X-Line-Retry-Key (a UUID) from an idempotency
// key, so that a push redone after a crash carries the key of the first try.
func RetryKeyFor(idempotencyKey string) string {
	sum := sha256.Sum256([]byte("linegate retry key\x00" + idempotencyKey))
	u, _ := uuid.FromBytes(sum[:16])
	u[6] = u[6]&0x0f | 0x40 // version 4 layout
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// Reply sends a reply. A reply takes no retry key and LINE accepts its
// token once, so it is retried only when LINE surely did not take it: a
// 429 or a connection that was never made. After a 5xx or a lost answer
// it is not retried: a second try could fail with "Invalid reply token"
// although the first was delivered.
func (c *Client) Reply(ctx context.Context, body []byte) *Call {
	return c.do(ctx, "reply", "/v2/bot/message/reply", body, "")
}

// Push sends a push message with the retry key, reused on every retry; a
// 409 with x-line-accepted-request-id is a success.
func (c *Client) Push(ctx context.Context, body []byte, retryKey string) *Call {
	return c.do(ctx, "push", "/v2/bot/message/push", body, retryKey)
}

func (c *Client) do(ctx context.Context, endpoint, path string, body []byte, retryKey string) *Call {
	return c.exchange(ctx, exchange{endpoint: endpoint, method: "POST", path: path, body: body, retryKey: retryKey,
		contentType: "application/json"})
}

// exchange is one call to make, with its retries.
type exchange struct {
	endpoint, method string
	base             string // default c.Base
	path             string // with its query, if any
	body             []byte
	contentType      string
	retryKey         string
	// idempotent allows retries without a retry key (reads).
	idempotent bool
}

func (c *Client) exchange(ctx context.Context, x exchange) *Call {
	endpoint, path, body, retryKey := x.endpoint, x.path, x.body, x.retryKey
	pol := c.Policy.withDefaults()
	call := &Call{Endpoint: endpoint, Path: path, Body: body, RetryKey: retryKey}
	base := x.base
	if base == "" {
		base = c.Base
	}
	if base == "" {
		base = DefaultAPIBase
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	renewed := false // a 401 with an issued token has been retried once
	for attempt := 1; ; attempt++ {
		token := c.Token
		var a Attempt
		var retryAfter time.Duration
		var sent bool
		if c.Tokens != nil {
			var err error
			if token, err = c.Tokens.Token(ctx); err != nil {
				a = Attempt{At: time.Now(), Error: errNoToken + err.Error()}
			}
		}
		if a.Error == "" {
			a, retryAfter, sent, call.Raw = c.once(ctx, hc, x, base+path, token)
		}
		call.Attempts = append(call.Attempts, a)
		if c.Observe != nil {
			c.Observe(endpoint, a)
		}
		// LINE refused the token, so it took nothing: with a token that
		// linegate issues, try once more with a new one, at once.
		if a.Status == http.StatusUnauthorized && c.Tokens != nil && !renewed && attempt < pol.MaxAttempts {
			renewed = true
			c.Tokens.Rejected(token)
			continue
		}
		if call.OK() || attempt >= pol.MaxAttempts || !retryable(a, retryKey != "" || x.idempotent, sent) {
			return call
		}
		d := min(pol.BaseDelay<<(attempt-1), pol.MaxDelay)
		d = d/2 + time.Duration(mrand.Int64N(int64(d/2)+1)) // jitter
		if retryAfter > 0 {
			d = min(retryAfter, pol.MaxDelay)
		}
		select {
		case <-ctx.Done():
			call.Attempts = append(call.Attempts, Attempt{Error: "gave up: " + ctx.Err().Error(), At: time.Now()})
			return call
		case <-time.After(d):
		}
	}
}

// mayHaveTaken says whether LINE may have acted on a request it was sent,
// from the attempt's answer.
func mayHaveTaken(a Attempt) bool {
	switch {
	case a.Status == 0 || a.Status >= 500 || a.Status/100 == 2:
		return true
	case a.Status == http.StatusBadRequest:
		var body struct {
			Message string `json:"message"`
		}
		json.Unmarshal(a.Response, &body)
		return body.Message == "Invalid reply token"
	}
	return false
}

// MayHaveTaken says whether LINE may have acted on a request made with
// these attempts (a call's, or read back from its record). Only the
// error's words tell a request that never left (a failure to resolve or
// connect, no token to send it with) from one lost after it was sent.
func MayHaveTaken(attempts []Attempt) bool {
	for _, a := range attempts {
		neverLeft := a.Status == 0 && (strings.HasPrefix(a.Error, "dial ") || strings.HasPrefix(a.Error, "proxyconnect ") ||
			strings.HasPrefix(a.Error, errNoToken) || strings.HasPrefix(a.Error, "gave up: ") || a.Error == "bad request URL")
		if !neverLeft && mayHaveTaken(a) {
			return true
		}
	}
	return false
}

// retryable says whether another try is safe and useful. With a retry key
// LINE deduplicates, so any 429, 5xx or network failure is retried.
// Without one (reply), only failures where the request surely did not take
// effect: a 429, or a request that never left.
func retryable(a Attempt, hasKey, sent bool) bool {
	switch {
	case a.Status == http.StatusTooManyRequests:
		return true
	case hasKey:
		return a.Status >= 500 || a.Status == 0
	default:
		return a.Status == 0 && !sent
	}
}

// once makes one HTTP exchange. sent reports whether the request may have
// reached LINE.
func (c *Client) once(ctx context.Context, hc *http.Client, x exchange, url string, token []byte) (Attempt, time.Duration, bool, []byte) {
	a := Attempt{At: time.Now()}
	var rd io.Reader
	if x.body != nil {
		rd = bytes.NewReader(x.body)
	}
	req, err := http.NewRequestWithContext(ctx, x.method, url, rd)
	if err != nil {
		a.Error = "bad request URL"
		return a, 0, false, nil
	}
	if x.contentType != "" {
		req.Header.Set("Content-Type", x.contentType)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	if x.retryKey != "" {
		req.Header.Set("X-Line-Retry-Key", x.retryKey)
	}
	sent := false
	start := time.Now()
	resp, err := hc.Do(req)
	a.LatencyMs = float64(time.Since(start)) / float64(time.Millisecond)
	if err != nil {
		a.Error = scrubError(err)
		// A dial failure means the request never left; anything later
		// (a reset, a timeout waiting for the answer) may have been taken.
		sent = !isDialError(err)
		return a, 0, sent, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a.Status = resp.StatusCode
	a.RequestID = resp.Header.Get("X-Line-Request-Id")
	a.AcceptedRequest = resp.Header.Get("X-Line-Accepted-Request-Id")
	a.Headers = map[string][]string{}
	for _, k := range []string{"X-Line-Request-Id", "X-Line-Accepted-Request-Id", "Retry-After", "Content-Type"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			a.Headers[k] = v
		}
	}
	if json.Valid(b) {
		a.Response = b
	} else if len(b) > 0 {
		a.Response, _ = json.Marshal(string(b))
	}
	var retryAfter time.Duration
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			retryAfter = time.Duration(n) * time.Second
		}
	}
	return a, retryAfter, true, b
}

// scrubError describes a transport error without the URL (which is ours)
// or anything the request carried.
func scrubError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	s := err.Error()
	if i := strings.Index(s, "Bearer"); i >= 0 {
		s = s[:i]
	}
	return s
}

// isDialError reports a failure to resolve (a *net.DNSError) or to
// connect (a *net.OpError of op "dial", also under a proxy's): the request
// never left.
func isDialError(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	for ; err != nil; err = errors.Unwrap(err) {
		if op, ok := err.(*net.OpError); ok && op.Op == "dial" {
			return true
		}
	}
	return false
}

// failure classifies a failed call, for the log, with what the log may
// show of it: statuses, request ids, the transport error and LINE's error
// message, never the request.
func (c *Call) failure() (class string, args []any) {
	a := c.Last()
	for i := len(c.Attempts) - 1; i >= 0 && a.Status == 0 && strings.HasPrefix(a.Error, "gave up:"); i-- {
		a = c.Attempts[i] // the failure before the give-up
	}
	switch {
	case a.Status == 0 && strings.HasPrefix(a.Error, errNoToken):
		class = "no_access_token"
	case a.Status == 0:
		class = "api_unreachable"
	case a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden:
		class = "access_token_rejected"
	case a.Status == http.StatusTooManyRequests:
		class = "api_rate_limited"
	case a.Status >= 500:
		class = "api_server_error"
	default:
		class = "api_rejected"
	}
	args = []any{"attempts", len(c.Attempts), "status", a.Status}
	if a.RequestID != "" {
		args = append(args, "x_line_request_id", a.RequestID)
	}
	if a.Error != "" {
		args = append(args, "err", oplog.Truncate(a.Error, 300))
	}
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(a.Response, &e) == nil && e.Message != "" {
		args = append(args, "line_message", oplog.Truncate(e.Message, 200))
	}
	return class, args
}

// String describes a call for logs: endpoint, statuses, request ids.
func (c *Call) String() string {
	var parts []string
	for _, a := range c.Attempts {
		if a.Status != 0 {
			parts = append(parts, fmt.Sprintf("%d(%s)", a.Status, a.RequestID))
		} else {
			parts = append(parts, "error")
		}
	}
	return c.Endpoint + " " + strings.Join(parts, ",")
}
