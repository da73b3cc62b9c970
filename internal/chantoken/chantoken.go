// Package chantoken keeps the channel access tokens that linegate issues
// itself fresh: a channel that gives its channel id and secret (stateless
// tokens, POST /oauth2/v3/token, 15 minutes) or its channel id and an
// assertion signing key (channel access tokens v2.1, POST
// /oauth2/v2.1/token with a JWT assertion, a lifetime of its choice up to
// 30 days) instead of a long-lived token gets a token at start, a new one
// before the old expires and at once after LINE refuses one (401), and
// its v2.1 token revoked on shutdown and when a new one replaces it
// (stateless tokens cannot be revoked; they expire by themselves).
//
// Every token issued and revoked is an admin record in the ledger
// (actions "token_issued" and "token_revoked"), naming the token by LINE's
// key_id (v2.1) and the first 16 hex digits of its SHA-256, never by
// itself. Tokens, secrets and assertions never reach a log line, an error
// or a metric label.
package chantoken

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// Method is how a channel's tokens are issued.
type Method string

// The methods.
const (
	// Stateless tokens: POST /oauth2/v3/token with the channel id and
	// secret (client credentials). Valid for 15 minutes; not revocable.
	Stateless Method = "stateless"
	// V21 tokens: POST /oauth2/v2.1/token with a JWT assertion signed by
	// the channel's assertion signing key. Revoked with the channel
	// secret (POST /oauth2/v2.1/revoke).
	V21 Method = "v2.1"
)

const (
	// DefaultLifetime is the lifetime a v2.1 token is asked for.
	DefaultLifetime = 24 * time.Hour
	// MaxLifetime is the longest LINE issues a v2.1 token for.
	MaxLifetime = 30 * 24 * time.Hour
	// assertionLife is how long a JWT assertion is valid (LINE: at most 30
	// minutes).
	assertionLife = 5 * time.Minute
	// audience is the aud claim LINE requires of an assertion.
	audience = "https://api.line.me/"
	// callTimeout bounds one call to a token endpoint.
	callTimeout = 15 * time.Second
	// maxBackoff bounds the wait between failed issues.
	maxBackoff = time.Minute
)

// Credentials are what a channel gives for linegate to issue its tokens.
type Credentials struct {
	// Channel is linegate's name of the channel (the config's id).
	Channel string
	// ClientID is LINE's channel id (LINE Developers Console, Basic
	// settings).
	ClientID string
	// Secret is the channel secret: the client secret of stateless tokens,
	// and what revokes a v2.1 token.
	Secret []byte
	// NextSecret, during a rotation of the channel secret, is tried when
	// LINE refuses Secret (invalid_client): after the console reissues
	// it, the new one is the client secret.
	NextSecret []byte
	// Key, if set, is the assertion signing key (a private RSA key, its
	// KeyID the kid the console gave its public half): the channel's
	// tokens are v2.1 tokens. Without it, stateless tokens.
	Key *jose.JSONWebKey
	// Lifetime is the token_exp a v2.1 token is asked for (default
	// DefaultLifetime, at most MaxLifetime). Stateless tokens live as long
	// as LINE says.
	Lifetime time.Duration
	// RenewBefore is how long before its expiry a token is replaced
	// (default a third of its lifetime).
	RenewBefore time.Duration
	// Base is the API's base URL (default outbound.DefaultAPIBase).
	Base string
}

// Method returns how the channel's tokens are issued.
func (c *Credentials) Method() Method {
	if c.Key != nil {
		return V21
	}
	return Stateless
}

// Appender records in the ledger; *ledger.Ledger implements it.
type Appender interface {
	Append(ctx context.Context, e ledger.Entry) (uint64, error)
}

// Options configures a Set.
type Options struct {
	Channels []Credentials
	// Ledger receives the token_issued and token_revoked records.
	Ledger Appender
	HTTP   *http.Client
	Logger *slog.Logger
}

// Set is the token sources of the channels that issue their own tokens.
type Set struct {
	o       Options
	sources map[string]*Source
	order   []*Source

	expiry   *prometheus.GaugeVec
	renewals *prometheus.CounterVec

	stop   context.CancelFunc
	wg     sync.WaitGroup // the renewals
	issues sync.WaitGroup // the issues in flight
	closed atomic.Bool
}

// New returns the token sources of the channels. Nothing is issued before
// Start.
func New(o Options) *Set {
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: callTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{o: o, sources: map[string]*Source{},
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricPrefix + "channel_token_expiry_timestamp_seconds",
			Help: "When the channel access token linegate issued for the channel expires (Unix time)."}, []string{"channel"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "channel_token_renewals_total",
			Help: "Channel access tokens asked of LINE, the first of each start included, by outcome (ok, failed)."}, []string{"channel", "outcome"}),
	}
	for _, c := range o.Channels {
		if c.Key != nil && c.Lifetime <= 0 {
			c.Lifetime = DefaultLifetime
		}
		if c.Base == "" {
			c.Base = outbound.DefaultAPIBase
		}
		src := &Source{set: s, c: c, log: o.Logger.With("channel", c.Channel, "token_method", string(c.Method()))}
		s.sources[c.Channel] = src
		s.order = append(s.order, src)
		s.renewals.WithLabelValues(c.Channel, "ok")
		s.renewals.WithLabelValues(c.Channel, "failed")
	}
	return s
}

// Collectors returns the Set's metrics.
func (s *Set) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.expiry, s.renewals}
}

// Source returns the channel's token source, or nil when the channel does
// not issue its own tokens.
func (s *Set) Source(channel string) *Source {
	if s == nil {
		return nil
	}
	return s.sources[channel]
}

// Start issues each channel's first token, waiting for them until ctx
// ends, and starts their renewals. A channel whose first token fails is
// not an error: it is logged and retried, with a growing wait, and its
// sends fail meanwhile; webhooks are received and recorded all the same.
func (s *Set) Start(ctx context.Context) {
	var wg sync.WaitGroup
	for _, src := range s.order {
		wg.Go(func() {
			if err := src.refresh(ctx, "start", nil); err != nil {
				src.log.Error("no channel access token: sends of this channel fail until one is issued", "err", err)
			}
		})
	}
	wg.Wait()
	loopCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	for _, src := range s.order {
		s.wg.Go(func() { src.renewals(loopCtx) })
	}
}

// Close stops the renewals and revokes the v2.1 tokens in hand, recording
// each revocation, until ctx ends. Stateless tokens expire by themselves.
func (s *Set) Close(ctx context.Context) error {
	s.closed.Store(true)
	if s.stop != nil {
		s.stop()
		s.wg.Wait()
	}
	s.issues.Wait()
	var errs []error
	for _, src := range s.order {
		if err := src.revokeCurrent(ctx, "shutdown"); err != nil {
			errs = append(errs, fmt.Errorf("channel %s: %w", src.c.Channel, err))
		}
	}
	return errors.Join(errs...)
}

// errClosed is the error of a token asked for after Close.
var errClosed = errors.New("channel access tokens: closed")

// Source is one channel's token: it implements outbound.TokenSource.
type Source struct {
	set *Set
	c   Credentials
	log *slog.Logger

	mu       sync.Mutex
	cur      issued
	inflight chan struct{} // closed when the issue in flight ends
	lastErr  error
	failures int       // issues failed in a row
	lastFail time.Time // when the last of them failed
}

// issued is a token in hand.
type issued struct {
	token   []byte
	expires time.Time
	life    time.Duration // as LINE gave it
	keyID   string        // LINE's key_id of a v2.1 token
	// rejected: LINE answered 401 to it (expires is then zero)
	rejected bool
}

var _ outbound.TokenSource = (*Source)(nil)

// Token returns the channel's token; when none is valid, it asks LINE for
// one and waits for it until ctx ends.
func (s *Source) Token(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur.token != nil && time.Now().Before(cur.expires) {
		return cur.token, nil
	}
	// After a failure, senders wait for the renewals' next try rather
	// than ask LINE again each, for a second.
	s.mu.Lock()
	err, recent := s.lastErr, s.failures > 0 && time.Since(s.lastFail) < time.Second
	s.mu.Unlock()
	if recent {
		return nil, err
	}
	reason := "expired"
	if cur.rejected {
		reason = "rejected"
	}
	if err := s.refresh(ctx, reason, cur.token); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.token == nil {
		return nil, errors.New("no channel access token")
	}
	return s.cur.token, nil
}

// Rejected tells the source that LINE refused token (401): unless it was
// replaced already, it is dropped, and the next Token issues a new one.
func (s *Source) Rejected(token []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.token != nil && bytes.Equal(s.cur.token, token) {
		s.log.Warn("LINE refused the channel access token: issuing a new one", "token_sha256", tokenHash(token))
		s.cur.expires, s.cur.rejected = time.Time{}, true
	}
}

// refresh issues a new token, unless stale is set and the token in hand
// is no longer it (another caller replaced it). Callers at once share one
// issue; it runs to its end even if ctx ends first.
func (s *Source) refresh(ctx context.Context, reason string, stale []byte) error {
	s.mu.Lock()
	if stale != nil && !bytes.Equal(stale, s.cur.token) {
		s.mu.Unlock()
		return nil
	}
	wait := s.inflight
	if wait == nil {
		if s.set.closed.Load() {
			s.mu.Unlock()
			return errClosed
		}
		wait = make(chan struct{})
		s.inflight = wait
		s.set.issues.Add(1)
		go func() {
			defer s.set.issues.Done()
			s.issueAndSwap(reason, wait)
		}()
	}
	s.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// issueAndSwap asks LINE for a token and puts it in hand; it records it,
// and revokes the v2.1 token it replaces.
func (s *Source) issueAndSwap(reason string, done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	next, err := s.issue(ctx)
	if err == nil {
		// Recorded before anyone can use it: a send made with the token
		// is never in the ledger ahead of the token's issue.
		s.set.renewals.WithLabelValues(s.c.Channel, "ok").Inc()
		s.set.expiry.WithLabelValues(s.c.Channel).Set(float64(next.expires.Unix()))
		detail := s.describe(next)
		detail["reason"] = reason
		detail["expires_at"] = next.expires.UTC().Format(time.RFC3339)
		s.log.Info("channel access token issued", logArgs(detail)...)
		s.record(ctx, "token_issued", detail)
	}
	s.mu.Lock()
	old := s.cur
	s.lastErr = err
	if err == nil {
		s.cur = next
		s.failures = 0
	} else {
		s.failures++
		s.lastFail = time.Now()
	}
	s.inflight = nil
	s.mu.Unlock()
	close(done)

	if err != nil {
		s.set.renewals.WithLabelValues(s.c.Channel, "failed").Inc()
		s.log.Error("issuing a channel access token failed", "reason", reason, "err", err)
		return
	}
	if old.token != nil && s.c.Method() == V21 {
		if err := s.revoke(ctx, old, "replaced"); err != nil {
			s.log.Warn("revoking the replaced channel access token failed: it stays valid until it expires",
				"key_id", old.keyID, "err", err)
		}
	}
}

// describe names a token for the ledger and the log.
func (s *Source) describe(t issued) map[string]any {
	d := map[string]any{"channel": s.c.Channel, "method": string(s.c.Method()), "token_sha256": tokenHash(t.token)}
	if t.keyID != "" {
		d["key_id"] = t.keyID
	}
	if s.c.Key != nil {
		d["assertion_kid"] = s.c.Key.KeyID
	}
	return d
}

// renewals replaces the token before it expires until ctx ends; after a
// failure, it tries again after a wait that doubles up to maxBackoff.
func (s *Source) renewals(ctx context.Context) {
	for {
		s.mu.Lock()
		cur, failures := s.cur, s.failures
		s.mu.Unlock()
		var wait time.Duration
		switch {
		case failures > 0 || cur.token == nil:
			wait = min(time.Second<<min(failures, 10), maxBackoff)
		default:
			wait = time.Until(cur.expires.Add(-s.renewBefore(cur)))
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Unless a send replaced the token meanwhile (after a 401).
		s.refresh(ctx, "renew", cur.token)
	}
}

// renewBefore returns how long before its expiry a token is replaced: the
// configured margin, or a third of its lifetime; at most two thirds of its
// lifetime, so that a token is used a while before it is replaced.
func (s *Source) renewBefore(t issued) time.Duration {
	rb := s.c.RenewBefore
	if rb <= 0 {
		rb = t.life / 3
	}
	return min(rb, t.life*2/3)
}

// revokeCurrent revokes the v2.1 token in hand.
func (s *Source) revokeCurrent(ctx context.Context, reason string) error {
	s.mu.Lock()
	cur := s.cur
	s.cur = issued{}
	s.mu.Unlock()
	if cur.token == nil {
		return nil
	}
	if s.c.Method() != V21 {
		s.log.Info("a stateless channel access token cannot be revoked: it expires by itself",
			"token_sha256", tokenHash(cur.token), "expires_at", cur.expires.UTC().Format(time.RFC3339))
		return nil
	}
	return s.revoke(ctx, cur, reason)
}

// revoke revokes a v2.1 token and records it.
func (s *Source) revoke(ctx context.Context, t issued, reason string) error {
	form := url.Values{"client_id": {s.c.ClientID}, "access_token": {string(t.token)}}
	if _, err := s.postWithSecret(ctx, "/oauth2/v2.1/revoke", form); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	detail := s.describe(t)
	detail["reason"] = reason
	s.log.Info("channel access token revoked", logArgs(detail)...)
	s.record(ctx, "token_revoked", detail)
	return nil
}

// issue asks LINE for a token.
func (s *Source) issue(ctx context.Context) (issued, error) {
	var path string
	form := url.Values{"grant_type": {"client_credentials"}}
	if s.c.Method() == V21 {
		assertion, err := s.assertion()
		if err != nil {
			return issued{}, err
		}
		path = "/oauth2/v2.1/token"
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
	} else {
		path = "/oauth2/v3/token"
		form.Set("client_id", s.c.ClientID)
	}
	start := time.Now()
	var b []byte
	var err error
	if s.c.Method() == V21 {
		b, err = s.post(ctx, path, form)
	} else {
		b, err = s.postWithSecret(ctx, path, form)
	}
	if err != nil {
		return issued{}, fmt.Errorf("issue: %w", err)
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
		KeyID       string `json:"key_id"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || resp.AccessToken == "" || resp.ExpiresIn <= 0 {
		return issued{}, fmt.Errorf("issue: %s answered no token and expiry", path)
	}
	// Counted from before the request: the token expires no later than
	// this.
	life := time.Duration(resp.ExpiresIn) * time.Second
	return issued{token: []byte(resp.AccessToken), expires: start.Add(life), life: life, keyID: resp.KeyID}, nil
}

// assertion returns a JWT assertion for a v2.1 token, as LINE documents
// it: RS256 with the key's kid; iss and sub the channel id; aud
// https://api.line.me/; exp; token_exp, the lifetime asked for.
func (s *Source) assertion() (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: s.c.Key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("assertion signing key: %w", err)
	}
	now := time.Now()
	claims := jwt.Claims{Issuer: s.c.ClientID, Subject: s.c.ClientID, Audience: jwt.Audience{audience},
		Expiry: jwt.NewNumericDate(now.Add(assertionLife))}
	extra := map[string]any{"token_exp": int64(s.c.Lifetime / time.Second)}
	out, err := jwt.Signed(signer).Claims(claims).Claims(extra).Serialize()
	if err != nil {
		return "", fmt.Errorf("assertion: %w", err)
	}
	return out, nil
}

// postWithSecret posts the form with the channel secret as client_secret,
// and with the next secret when LINE refuses it as invalid_client.
func (s *Source) postWithSecret(ctx context.Context, path string, form url.Values) ([]byte, error) {
	var err error
	for _, secret := range [][]byte{s.c.Secret, s.c.NextSecret} {
		if len(secret) == 0 {
			continue
		}
		form.Set("client_secret", string(secret))
		var b []byte
		if b, err = s.post(ctx, path, form); err == nil {
			return b, nil
		}
		var ae *apiError
		if !errors.As(err, &ae) || ae.code != "invalid_client" {
			return nil, err
		}
	}
	return nil, err
}

// apiError is a token endpoint's answer other than 200: its message holds
// the status, LINE's error code and description, never the form.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// post sends a form to a token endpoint and returns the body of a 200. Its
// errors carry LINE's status and error code and description, never the
// form.
func (s *Source) post(ctx context.Context, path string, form url.Values) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(s.c.Base, "/")+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, errors.New("bad API base URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.set.o.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && ue.Err != nil {
			err = ue.Err
		}
		return nil, fmt.Errorf("POST %s: %s", path, oplog.Truncate(err.Error(), 200))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return b, nil
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	json.Unmarshal(b, &e)
	msg := fmt.Sprintf("POST %s: %d", path, resp.StatusCode)
	if e.Error != "" {
		msg += " " + oplog.Truncate(e.Error, 60)
	}
	if d := e.Description + e.Message; d != "" {
		msg += ": " + oplog.Truncate(d, 200)
	}
	if id := resp.Header.Get("X-Line-Request-Id"); id != "" {
		msg += " (x-line-request-id " + oplog.Truncate(id, 64) + ")"
	}
	return nil, &apiError{status: resp.StatusCode, code: e.Error, msg: msg}
}

// record appends an admin record of the channel, waiting out the ledger's
// pushback.
func (s *Source) record(ctx context.Context, action string, detail map[string]any) {
	if s.set.o.Ledger == nil {
		return
	}
	now := time.Now()
	payload, err := record.Encode(&record.Meta{Channel: s.c.Channel, ReceivedMs: now.UnixMilli()},
		&record.Admin{Action: action, Detail: detail})
	if err == nil {
		err = outbound.AppendRetrying(s.set.o.Ledger, ledger.Entry{Kind: ledger.KindAdmin, Time: now, Channel: s.c.Channel, Payload: payload})
	}
	if err != nil {
		s.log.Error("recording a channel access token event failed", "action", action, "err", err)
	}
}

// logArgs returns a record's detail for the log, but the channel and
// method, which the source's logger carries.
func logArgs(detail map[string]any) []any {
	var args []any
	for _, k := range []string{"reason", "token_sha256", "key_id", "assertion_kid", "expires_at"} {
		if v, ok := detail[k]; ok {
			args = append(args, k, v)
		}
	}
	return args
}

// tokenHash is what linegate shows of a token: the first 16 hex digits of
// its SHA-256.
func tokenHash(t []byte) string {
	sum := sha256.Sum256(t)
	return hex.EncodeToString(sum[:8])
}
