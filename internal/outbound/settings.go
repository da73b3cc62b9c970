package outbound

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/oplog"
)

// The channel's settings and counters that the runbook watches and
// changes through LINE's API: the webhook endpoint (get, set, test) and
// the month's message quota and consumption. These calls are made by an
// operator or by a monitor, not for a user, so they are not retried: the
// next poll, or the operator, tries again.

// Exchange is one settings call as it went: LINE's answer and its time.
type Exchange struct {
	Endpoint  string // "webhook_endpoint", "webhook_test", "quota", ...
	Status    int    // 0: no answer
	RequestID string // x-line-request-id
	// Date is LINE's clock, from the answer's Date header (zero when it
	// has none); Sent and Received are the local times around the call.
	Date           time.Time
	Sent, Received time.Time
}

// ClockDrift is LINE's clock minus the local one, estimated from the Date
// header, which has whole seconds: LINE's time is taken as the middle of
// the Date's second and compared to the middle of the call, so the
// estimate is within about half a second plus half the round trip. ok is
// false when the answer had no Date.
func (x Exchange) ClockDrift() (d time.Duration, ok bool) {
	if x.Date.IsZero() || x.Sent.IsZero() || x.Received.IsZero() {
		return 0, false
	}
	mid := x.Sent.Add(x.Received.Sub(x.Sent) / 2)
	return x.Date.Add(500 * time.Millisecond).Sub(mid), true
}

// APIError is LINE's answer to a call that failed: the status, LINE's
// message (never anything of the request) and the request id to quote to
// LINE's support. Status 0 is no answer, with the transport error.
type APIError struct {
	Endpoint  string
	Status    int
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("%s: no answer from the Messaging API: %s", e.Endpoint, e.Message)
	case e.RequestID != "":
		return fmt.Sprintf("%s: LINE answered %d: %s (x-line-request-id %s)", e.Endpoint, e.Status, e.Message, e.RequestID)
	}
	return fmt.Sprintf("%s: LINE answered %d: %s", e.Endpoint, e.Status, e.Message)
}

// WebhookEndpoint is GET /v2/bot/channel/webhook/endpoint's answer.
type WebhookEndpoint struct {
	Endpoint string `json:"endpoint"`
	// Active is the console's "Use webhook": LINE sends webhooks only
	// when it is on.
	Active bool `json:"active"`
}

// WebhookTest is POST /v2/bot/channel/webhook/test's answer.
type WebhookTest struct {
	Success    bool   `json:"success"`
	Timestamp  string `json:"timestamp"`
	StatusCode int    `json:"statusCode"`
	// Reason is "OK", or why it failed: could_not_connect,
	// request_timeout, error_status_code, unclassified.
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// Quota is GET /v2/bot/message/quota's answer.
type Quota struct {
	Type  string `json:"type"` // "none" or "limited"
	Value int64  `json:"value"`
}

// Limit returns the month's target limit, -1 when there is none.
func (q Quota) Limit() int64 {
	if q.Type != "limited" {
		return -1
	}
	return q.Value
}

// QuotaConsumption is GET /v2/bot/message/quota/consumption's answer.
type QuotaConsumption struct {
	TotalUsage int64 `json:"totalUsage"`
}

// WebhookEndpoint gets the channel's webhook URL and whether it is in use.
// LINE answers 404 when no URL was ever set (an *APIError).
func (c *Client) WebhookEndpoint(ctx context.Context) (WebhookEndpoint, Exchange, error) {
	var v WebhookEndpoint
	x, err := c.settings(ctx, "webhook_endpoint", "GET", "/v2/bot/channel/webhook/endpoint", nil, &v)
	return v, x, err
}

// SetWebhookEndpoint sets the channel's webhook URL.
func (c *Client) SetWebhookEndpoint(ctx context.Context, endpoint string) (Exchange, error) {
	body, _ := json.Marshal(map[string]string{"endpoint": endpoint})
	return c.settings(ctx, "webhook_endpoint_set", "PUT", "/v2/bot/channel/webhook/endpoint", body, nil)
}

// TestWebhookEndpoint has LINE send a test webhook (no events) to
// endpoint, or to the URL set when endpoint is "", and returns what LINE
// reports of it.
func (c *Client) TestWebhookEndpoint(ctx context.Context, endpoint string) (WebhookTest, Exchange, error) {
	var body []byte
	if endpoint != "" {
		body, _ = json.Marshal(map[string]string{"endpoint": endpoint})
	}
	var v WebhookTest
	x, err := c.settings(ctx, "webhook_test", "POST", "/v2/bot/channel/webhook/test", body, &v)
	return v, x, err
}

// Quota gets the month's message quota.
func (c *Client) Quota(ctx context.Context) (Quota, Exchange, error) {
	var v Quota
	x, err := c.settings(ctx, "quota", "GET", "/v2/bot/message/quota", nil, &v)
	return v, x, err
}

// QuotaConsumption gets the messages sent this month, as LINE counts them.
func (c *Client) QuotaConsumption(ctx context.Context) (QuotaConsumption, Exchange, error) {
	var v QuotaConsumption
	x, err := c.settings(ctx, "quota_consumption", "GET", "/v2/bot/message/quota/consumption", nil, &v)
	return v, x, err
}

// settings makes one settings call and decodes a 2xx answer into out.
func (c *Client) settings(ctx context.Context, endpoint, method, path string, body []byte, out any) (Exchange, error) {
	x := Exchange{Endpoint: endpoint}
	base := c.Base
	if base == "" {
		base = DefaultAPIBase
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return x, &APIError{Endpoint: endpoint, Message: "bad request URL"}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	token := c.Token
	if c.Tokens != nil {
		// A token linegate issues itself (it renews it before expiry).
		if token, err = c.Tokens.Token(ctx); err != nil {
			return x, &APIError{Endpoint: endpoint, Message: "no channel access token: " + err.Error()}
		}
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	x.Sent = time.Now()
	resp, err := hc.Do(req)
	x.Received = time.Now()
	a := Attempt{At: x.Sent, LatencyMs: float64(x.Received.Sub(x.Sent)) / float64(time.Millisecond)}
	if err != nil {
		a.Error = scrubError(err)
		if c.Observe != nil {
			c.Observe(endpoint, a)
		}
		return x, &APIError{Endpoint: endpoint, Message: a.Error}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	x.Status, x.RequestID = resp.StatusCode, resp.Header.Get("X-Line-Request-Id")
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		x.Date = d
	}
	a.Status, a.RequestID = x.Status, x.RequestID
	if c.Observe != nil {
		c.Observe(endpoint, a)
	}
	if x.Status/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		msg := http.StatusText(x.Status)
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			msg = oplog.Truncate(e.Message, 200)
		}
		return x, &APIError{Endpoint: endpoint, Status: x.Status, Message: msg, RequestID: x.RequestID}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return x, &APIError{Endpoint: endpoint, Status: x.Status, Message: "the answer is not the JSON the spec has: " + oplog.Truncate(err.Error(), 100), RequestID: x.RequestID}
		}
	}
	return x, nil
}
