package sim

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
)

// The channel settings an operator changes in the LINE Developers Console
// and the quota LINE counts: the API's endpoints for them, and the
// controls (/_sim/channels/...) with which tests play the operator.

// validEndpoint reports whether a webhook URL is one LINE takes: an
// absolute URL of at most 500 characters. LINE wants HTTPS; the simulator
// takes plain HTTP too, for gateways on loopback in tests.
func validEndpoint(s string) bool {
	u, err := url.Parse(s)
	return err == nil && len(s) <= 500 && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// isTimeout reports whether a webhook post failed for want of an answer
// in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reserve counts n messages against the channel's quota, or answers 429
// as LINE does once the month's quota is spent; release gives them back
// when the send is not accepted after all. LINE counts each recipient
// once, whatever the number of message objects; replies are free.
func (c *call) reserve(n int64) bool {
	c.a.mu.Lock()
	ok := c.ch.Quota <= 0 || c.ch.consumed+n <= c.ch.Quota
	if ok {
		c.ch.consumed += n
	}
	c.a.mu.Unlock()
	if !ok {
		c.fail(http.StatusTooManyRequests, "You have reached your monthly limit.")
	}
	return ok
}

func (c *call) release(n int64) {
	c.a.mu.Lock()
	c.ch.consumed -= n
	c.a.mu.Unlock()
}

// quota answers GET /v2/bot/message/quota: the month's target limit, or
// type none.
func (a *API) quota(c *call) {
	a.mu.Lock()
	q := c.ch.Quota
	a.mu.Unlock()
	if q <= 0 {
		c.reply(http.StatusOK, map[string]any{"type": "none"})
		return
	}
	c.reply(http.StatusOK, map[string]any{"type": "limited", "value": q})
}

// quotaConsumption answers GET /v2/bot/message/quota/consumption: the
// messages counted this month.
//
// BUG: the simulator has no months: it counts from its start (PUT
// /_sim/channels/{id} {"consumed": 0} starts a new one).
func (a *API) quotaConsumption(c *call) {
	a.mu.Lock()
	n := c.ch.consumed
	a.mu.Unlock()
	c.reply(http.StatusOK, map[string]any{"totalUsage": n})
}

// ChannelControl is what PUT /_sim/channels/{id} changes; absent fields
// stay as they are.
type ChannelControl struct {
	// WebhookActive is the console's "Use webhook" switch.
	WebhookActive *bool `json:"webhook_active,omitempty"`
	// Endpoint sets the webhook URL as the console does.
	Endpoint *string `json:"endpoint,omitempty"`
	// Quota sets the monthly quota (0: none); Consumed the messages
	// counted so far.
	Quota    *int64 `json:"quota,omitempty"`
	Consumed *int64 `json:"consumed,omitempty"`
}

// ErrUnknownChannel is returned for a channel the API does not know.
var ErrUnknownChannel = errors.New("sim: unknown channel")

// Control changes a channel's settings, as an operator in the console
// would (see ChannelControl).
func (a *API) Control(channel string, cc ChannelControl) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := a.channels[channel]
	if ch == nil {
		return ErrUnknownChannel
	}
	if cc.WebhookActive != nil {
		ch.WebhookOff = !*cc.WebhookActive
	}
	if cc.Endpoint != nil {
		ch.Endpoint = *cc.Endpoint
	}
	if cc.Quota != nil {
		ch.Quota = *cc.Quota
	}
	if cc.Consumed != nil {
		ch.consumed = *cc.Consumed
	}
	return nil
}

// SetWebhookActive switches the channel's "Use webhook" on or off.
func (a *API) SetWebhookActive(channel string, on bool) error {
	return a.Control(channel, ChannelControl{WebhookActive: &on})
}

// SetQuota sets the channel's monthly quota (0: none).
func (a *API) SetQuota(channel string, n int64) error {
	return a.Control(channel, ChannelControl{Quota: &n})
}

// channelView is a channel as GET /_sim/channels/{id} shows it: never its
// token or secret.
type channelView struct {
	ID            string `json:"id"`
	Endpoint      string `json:"endpoint"`
	WebhookActive bool   `json:"webhook_active"`
	Quota         int64  `json:"quota"`
	Consumed      int64  `json:"consumed"`
}

func (a *API) routeControls() {
	a.mux.HandleFunc("GET /_sim/channels/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		ch := a.channels[r.PathValue("id")]
		var v channelView
		if ch != nil {
			v = channelView{ID: ch.ID, Endpoint: ch.Endpoint, WebhookActive: !ch.WebhookOff, Quota: ch.Quota, Consumed: ch.consumed}
		}
		a.mu.Unlock()
		if ch == nil {
			writeJSON(w, http.StatusNotFound, errorBody{Message: "unknown channel"})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	a.mux.HandleFunc("PUT /_sim/channels/{id}", func(w http.ResponseWriter, r *http.Request) {
		var cc ChannelControl
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cc); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Message: "bad channel control: " + err.Error()})
			return
		}
		if cc.Endpoint != nil && *cc.Endpoint != "" && !validEndpoint(*cc.Endpoint) {
			writeJSON(w, http.StatusBadRequest, errorBody{Message: "endpoint: want an http or https URL of at most 500 characters"})
			return
		}
		if err := a.Control(r.PathValue("id"), cc); err != nil {
			writeJSON(w, http.StatusNotFound, errorBody{Message: "unknown channel"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
