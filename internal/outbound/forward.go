package outbound

import (
	"context"
	"errors"
)

// The calls that other tools make to LINE through linegate's Messaging API
// proxy (package proxy) go through the same client, rate limit and quota
// gate as linegate's own sends.

// ForwardRequest is one call a tool asked for.
type ForwardRequest struct {
	// Endpoint names the call in metrics and records.
	Endpoint string
	Method   string
	// Base is the host to call (the data API for content), default the
	// client's Base.
	Base string
	// Path is the LINE path, with its query if any.
	Path        string
	Body        []byte
	ContentType string
	// RetryKey, if set, is sent as X-Line-Retry-Key on every try; a 409
	// with x-line-accepted-request-id is then a success.
	RetryKey string
	// Idempotent allows retries after a 5xx or a lost answer without a
	// retry key (reads).
	Idempotent bool
}

// Forward makes a tool's call with the channel's token and the client's
// retry policy: with a retry key or Idempotent, any 429, 5xx or network
// failure is retried; otherwise only what surely did not take effect.
func (c *Client) Forward(ctx context.Context, r ForwardRequest) *Call {
	return c.exchange(ctx, exchange{endpoint: r.Endpoint, method: r.Method, base: r.Base, path: r.Path, body: r.Body,
		contentType: r.ContentType, retryKey: r.RetryKey, idempotent: r.Idempotent})
}

// AccessToken returns the token the client sends now (its own, or its
// source's). It is for a caller that streams an answer itself; never log
// it.
func (c *Client) AccessToken(ctx context.Context) ([]byte, error) {
	if c.Tokens != nil {
		return c.Tokens.Token(ctx)
	}
	if len(c.Token) == 0 {
		return nil, errors.New("no channel access token")
	}
	return c.Token, nil
}

// Wait waits for the channel's rate limit, the one linegate's own sends
// share (nil at once for a channel the Sender does not know).
func (s *Sender) Wait(ctx context.Context, channel string) error {
	l := s.limiters[channel]
	if l == nil {
		return nil
	}
	return l.Wait(ctx)
}

// QuotaHeld returns why a promotional send on the channel is held back by
// its quota budget, or "" when it may go (see SenderOptions.QuotaBudgets).
func (s *Sender) QuotaHeld(ctx context.Context, channel string) string {
	return s.quotaHeld(ctx, channel)
}

// CountQuota notes n messages sent on the channel outside the Sender, so
// that the quota budget counts them until the next poll.
func (s *Sender) CountQuota(channel string, n int64) { s.quota.counted(channel, n) }

// EnvKillSwitch reports whether REPLY_ENABLE=false holds every send.
func (s *Sender) EnvKillSwitch() bool { return s.o.EnvKillSwitch }
