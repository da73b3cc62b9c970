// Package sim is a LINE platform simulator: a fake Messaging API that
// follows LINE's specification (single-use, expiring reply tokens; retry
// keys and 409s; per-channel rate limits and 429s; x-line-request-id on
// every response; the spec's error bodies), a webhook sender that signs like
// LINE, and a synthetic conversation generator. It is the test bed for
// linegate and a playground for its users. Every call the fake API
// receives is recorded and can be read at GET /_sim/calls.
package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"golang.org/x/time/rate"
)

// Channel is a channel the fake API knows: its access token authenticates
// calls; its secret signs the webhook test request.
type Channel struct {
	ID          string
	AccessToken string
	Secret      string
	// Endpoint is the webhook URL (set with PUT .../webhook/endpoint too).
	Endpoint string
	// WebhookOff starts the channel with the console's "Use webhook"
	// switched off (GET .../webhook/endpoint answers active: false); see
	// API.SetWebhookActive.
	WebhookOff bool
	// Quota is the channel's monthly message quota, as GET
	// /v2/bot/message/quota reports it: 0 or less is none (type "none").
	// Past it, sends that count answer 429; see API.SetQuota.
	Quota int64
	// ClientID is LINE's channel id, with which the channel asks for
	// tokens (token.go): with Secret, or with a JWT assertion signed by
	// one of AssertionKeys (public keys, each with its kid).
	ClientID      string
	AssertionKeys []jose.JSONWebKey
}

// Faults injects failures into the Messaging API endpoints (not /_sim/).
type Faults struct {
	Latency   time.Duration `json:"latency"`    // added to every call
	Jitter    time.Duration `json:"jitter"`     // plus up to this much, at random
	ErrorRate float64       `json:"error_rate"` // share of calls answered 500
	DropRate  float64       `json:"drop_rate"`  // share of calls whose connection is closed unanswered
	// ClockOffset shifts the Date header of the API's answers from the
	// simulator's clock: LINE's clock, as a gateway with a drifting clock
	// sees it.
	ClockOffset time.Duration `json:"clock_offset"`
}

// Options configures the fake API.
type Options struct {
	// Channels; with none, any bearer token is accepted, each token
	// being a channel of its own.
	Channels []Channel
	// ReplyTokenTTL is how long a reply token stays valid (default 60s).
	ReplyTokenTTL time.Duration
	// RateLimit is each channel's limit per endpoint, in requests per
	// second (default 2000, LINE's default); Burst its bucket (default
	// RateLimit/10, at least 1).
	RateLimit float64
	Burst     int
	Faults    Faults
	// StatelessTokenTTL is the lifetime of the tokens of POST
	// /oauth2/v3/token (default 15m, LINE's).
	StatelessTokenTTL time.Duration
	// MaxCalls bounds the calls kept for /_sim/calls (default 100000).
	MaxCalls int
	// EchoGroups are group chats whose members write back what the bot
	// pushes to them (EchoGroup).
	EchoGroups []EchoGroup
	// Client sends the webhook test request (default: a client with a 10s
	// timeout).
	Client *http.Client
	Logger *slog.Logger
	Now    func() time.Time
	// WebhookTimeout is how long the webhook test waits for the answer
	// (default 2s, LINE's deadline) before it reports request_timeout.
	WebhookTimeout time.Duration
	// GroupMembers is how many members a group or room has, each counted
	// in the quota consumption of a push to it (default 3); Friends is how
	// many friends a broadcast or narrowcast reaches (default 100).
	GroupMembers int64
	Friends      int64
}

// Call is one call the fake API received, as /_sim/calls reports it.
type Call struct {
	Seq       int64               `json:"seq"`
	Time      time.Time           `json:"time"`
	Channel   string              `json:"channel,omitempty"`
	Method    string              `json:"method"`
	Path      string              `json:"path"`
	Headers   map[string][]string `json:"headers"`
	Body      json.RawMessage     `json:"body,omitempty"`
	Status    int                 `json:"status"`
	RequestID string              `json:"request_id"`
	Response  json.RawMessage     `json:"response,omitempty"`
}

// API is the fake Messaging API. It is an http.Handler.
type API struct {
	opts    Options
	mux     *http.ServeMux
	byToken map[string]*channelState
	anon    bool

	mu       sync.Mutex
	channels map[string]*channelState // by id; anonymous channels added on first use
	tokens   map[string]replyToken
	calls    []Call
	seq      int64
	faults   Faults
	msgID    atomic.Int64
	issued   tokenStore // the channel access tokens issued (token.go)

	contents map[string]*contentState // message content by id (content.go)
	// readTokens are the markAsReadTokens issued, with their channel
	// ("" for any) (chatapi.go).
	readTokens map[string]string
}

type channelState struct {
	Channel
	limiters  map[string]*rate.Limiter // by endpoint
	retryKeys map[string]string        // retry key -> accepted request id
	consumed  int64                    // messages counted against the quota
}

type replyToken struct {
	channel string // "" when issued for any channel
	expires time.Time
	used    bool
}

// NewAPI returns a fake Messaging API.
func NewAPI(opts Options) *API {
	if opts.ReplyTokenTTL <= 0 {
		opts.ReplyTokenTTL = 60 * time.Second
	}
	if opts.RateLimit <= 0 {
		opts.RateLimit = 2000
	}
	if opts.Burst <= 0 {
		opts.Burst = max(1, int(opts.RateLimit/10))
	}
	if opts.MaxCalls <= 0 {
		opts.MaxCalls = 100000
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.WebhookTimeout <= 0 {
		opts.WebhookTimeout = 2 * time.Second
	}
	if opts.GroupMembers <= 0 {
		opts.GroupMembers = 3
	}
	if opts.Friends <= 0 {
		opts.Friends = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &API{
		opts:     opts,
		mux:      http.NewServeMux(),
		byToken:  make(map[string]*channelState),
		channels: make(map[string]*channelState),
		tokens:   make(map[string]replyToken),
		faults:   opts.Faults,
		anon:     len(opts.Channels) == 0,
	}
	a.msgID.Store(500000000000000000)
	for _, c := range opts.Channels {
		cs := a.newChannelState(c)
		a.byToken[c.AccessToken] = cs
		a.channels[c.ID] = cs
	}
	a.route("POST /v2/bot/message/reply", a.reply)
	a.route("POST /v2/bot/message/push", a.push)
	a.route("POST /v2/bot/message/multicast", a.multicast)
	a.route("POST /v2/bot/message/broadcast", a.broadcast)
	a.route("POST /v2/bot/message/narrowcast", a.narrowcast)
	a.route("POST /v2/bot/message/validate/{kind}", a.validate)
	a.route("GET /v2/bot/channel/webhook/endpoint", a.getEndpoint)
	a.route("PUT /v2/bot/channel/webhook/endpoint", a.setEndpoint)
	a.route("POST /v2/bot/channel/webhook/test", a.testEndpoint)
	a.route("GET /v2/bot/info", a.botInfo)
	a.route("GET /v2/bot/message/quota", a.quota)
	a.route("GET /v2/bot/message/quota/consumption", a.quotaConsumption)
	a.route("POST /v2/bot/chat/markAsRead", a.markAsRead)
	a.route("POST /v2/bot/chat/loading/start", a.loadingStart)
	a.routeControls()
	a.routeTokens()
	a.routeReads()
	a.routeContent()
	a.mux.HandleFunc("GET /_sim/calls", a.serveCalls)
	a.mux.HandleFunc("DELETE /_sim/calls", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.calls = nil
		a.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	a.mux.HandleFunc("POST /_sim/reply-tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"replyToken": a.IssueReplyToken(r.URL.Query().Get("channel"))})
	})
	a.mux.HandleFunc("POST /_sim/read-tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"markAsReadToken": a.IssueReadToken(r.URL.Query().Get("channel"))})
	})
	a.mux.HandleFunc("GET /demo/orders/{user}", demoOrder)
	a.mux.HandleFunc("PUT /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&f); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Message: "bad faults: " + err.Error()})
			return
		}
		a.SetFaults(f)
		w.WriteHeader(http.StatusNoContent)
	})
	return a
}

func (a *API) newChannelState(c Channel) *channelState {
	return &channelState{Channel: c, limiters: make(map[string]*rate.Limiter), retryKeys: make(map[string]string)}
}

// SetFaults replaces the fault injection settings.
func (a *API) SetFaults(f Faults) {
	a.mu.Lock()
	a.faults = f
	a.mu.Unlock()
}

// IssueReplyToken returns a new reply token, as LINE puts in a replyable
// webhook event, valid for ReplyTokenTTL and once. An empty channel makes
// it valid for any channel.
func (a *API) IssueReplyToken(channel string) string {
	b := make([]byte, 16)
	rand.Read(b)
	t := hex.EncodeToString(b)
	a.mu.Lock()
	a.tokens[t] = replyToken{channel: channel, expires: a.opts.Now().Add(a.opts.ReplyTokenTTL)}
	a.mu.Unlock()
	return t
}

// Calls returns a copy of the calls recorded so far.
func (a *API) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Call(nil), a.calls...)
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// errorBody is the spec's ErrorResponse.
type errorBody struct {
	Message      string        `json:"message"`
	Details      []ErrorDetail `json:"details,omitempty"`
	SentMessages []sentMessage `json:"sentMessages,omitempty"`
}

type sentMessage struct {
	ID         string `json:"id"`
	QuoteToken string `json:"quoteToken,omitempty"`
}

// call is one request being handled.
type call struct {
	a         *API
	w         http.ResponseWriter
	r         *http.Request
	ch        *channelState
	body      []byte
	requestID string
	endpoint  string
	status    int
	response  []byte
}

// route wraps a Messaging API handler: request id, fault injection, body
// cap, authentication, rate limit, and the record of the call.
func (a *API) route(pattern string, h func(*call)) {
	_, endpoint, _ := strings.Cut(pattern, " ")
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &call{a: a, w: w, r: r, requestID: newRequestID(), endpoint: endpoint}
		w.Header().Set("X-Line-Request-Id", c.requestID)
		defer c.record()
		a.mu.Lock()
		f := a.faults
		a.mu.Unlock()
		if d := f.Latency + time.Duration(mrand.Int64N(int64(f.Jitter)+1)); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		if f.DropRate > 0 && mrand.Float64() < f.DropRate {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					c.status = -1 // dropped
					return
				}
			}
		}
		var err error
		c.body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, 2<<20))
		if err != nil {
			c.fail(http.StatusRequestEntityTooLarge, "The request body is too large (max 2MB)")
			return
		}
		if c.ch = a.authenticate(r); c.ch == nil {
			c.fail(http.StatusUnauthorized, "Authentication failed. Confirm that the access token in the authorization header is valid.")
			return
		}
		if f.ErrorRate > 0 && mrand.Float64() < f.ErrorRate {
			c.fail(http.StatusInternalServerError, "An error occurred in the server. Try again later.")
			return
		}
		if !a.limiter(c.ch, endpoint).Allow() {
			c.fail(http.StatusTooManyRequests, "You have reached your rate limit.")
			return
		}
		h(c)
	})
}

func (a *API) authenticate(r *http.Request) *channelState {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return nil
	}
	if !a.anon {
		if cs := a.byToken[tok]; cs != nil {
			return cs
		}
		return a.issuedChannel(tok)
	}
	// Anonymous: each token is a channel of its own, named by its hash so
	// that the token itself is never shown.
	sum := sha256.Sum256([]byte(tok))
	id := "anon-" + hex.EncodeToString(sum[:4])
	a.mu.Lock()
	defer a.mu.Unlock()
	cs := a.channels[id]
	if cs == nil {
		cs = a.newChannelState(Channel{ID: id})
		a.channels[id] = cs
	}
	return cs
}

func (a *API) limiter(ch *channelState, endpoint string) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := ch.limiters[endpoint]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(a.opts.RateLimit), a.opts.Burst)
		ch.limiters[endpoint] = l
	}
	return l
}

func newRequestID() string { return uuid.NewString() }

func (c *call) reply(status int, v any) {
	b, _ := json.Marshal(v)
	c.status, c.response = status, b
	c.a.mu.Lock()
	offset := c.a.faults.ClockOffset
	c.a.mu.Unlock()
	// LINE's clock, as its answers carry it.
	c.w.Header().Set("Date", c.a.opts.Now().Add(offset).UTC().Format(http.TimeFormat))
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	c.w.Write(b)
}

func (c *call) fail(status int, msg string, details ...ErrorDetail) {
	c.reply(status, errorBody{Message: msg, Details: details})
}

func (c *call) record() {
	h := make(map[string][]string, len(c.r.Header))
	for k, v := range c.r.Header {
		if k == "Authorization" {
			v = []string{"Bearer (redacted)"}
		}
		h[k] = v
	}
	call := Call{Time: c.a.opts.Now(), Method: c.r.Method, Path: c.r.URL.Path, Headers: h,
		Status: c.status, RequestID: c.requestID}
	if c.ch != nil {
		call.Channel = c.ch.ID
	}
	if json.Valid(c.body) {
		call.Body = c.body
	} else if len(c.body) > 0 {
		call.Body, _ = json.Marshal(string(c.body))
	}
	if json.Valid(c.response) {
		call.Response = c.response
	}
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	c.a.seq++
	call.Seq = c.a.seq
	if len(c.a.calls) >= c.a.opts.MaxCalls {
		c.a.calls = c.a.calls[1:]
	}
	c.a.calls = append(c.a.calls, call)
}

// decode parses the JSON body into v, answering 400 on failure.
func (c *call) decode(v any) bool {
	if err := json.Unmarshal(c.body, v); err != nil {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"malformed JSON", ""})
		return false
	}
	return true
}

// retryKey applies the retry key rules of the endpoints that take one:
// absent is fine; present and empty, or not a UUID, is 400; already
// accepted is 409 with x-line-accepted-request-id. Otherwise it claims the
// key for this request, atomically, so that of two concurrent requests
// with one key only one is accepted; callers call it last, when nothing
// can fail any more. It reports whether to go on.
func (c *call) retryKey() bool {
	vs := c.r.Header.Values("X-Line-Retry-Key")
	if len(vs) == 0 {
		return true
	}
	key := vs[0]
	if _, err := uuid.Parse(key); err != nil || len(vs) > 1 || len(key) != 36 {
		c.fail(http.StatusBadRequest, "The value of the X-Line-Retry-Key header is invalid")
		return false
	}
	c.a.mu.Lock()
	accepted, dup := c.ch.retryKeys[key]
	if !dup {
		c.ch.retryKeys[key] = c.requestID
	}
	c.a.mu.Unlock()
	if dup {
		c.w.Header().Set("X-Line-Accepted-Request-Id", accepted)
		c.fail(http.StatusConflict, "The retry key is already accepted")
		return false
	}
	return true
}

// noRetryKey refuses a retry key on an endpoint that takes none.
func (c *call) noRetryKey() bool {
	if len(c.r.Header.Values("X-Line-Retry-Key")) > 0 {
		c.fail(http.StatusBadRequest, "The X-Line-Retry-Key header is not supported by this endpoint")
		return false
	}
	return true
}

func (c *call) checkMessages(raw json.RawMessage) bool {
	if d := ValidateMessages(raw); d != nil {
		c.fail(http.StatusBadRequest, fmt.Sprintf("The request body has %d error(s)", len(d)), d...)
		return false
	}
	return true
}

func (c *call) sent(raw json.RawMessage) []sentMessage {
	var msgs []json.RawMessage
	json.Unmarshal(raw, &msgs)
	out := make([]sentMessage, len(msgs))
	for i := range msgs {
		id := c.a.msgID.Add(1)
		out[i] = sentMessage{ID: strconv.FormatInt(id, 10), QuoteToken: newQuoteToken()}
	}
	return out
}

func newQuoteToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *API) reply(c *call) {
	var req struct {
		ReplyToken string          `json:"replyToken"`
		Messages   json.RawMessage `json:"messages"`
	}
	if !c.noRetryKey() || !c.decode(&req) {
		return
	}
	if req.ReplyToken == "" {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be specified", "replyToken"})
		return
	}
	if !c.checkMessages(req.Messages) {
		return
	}
	a.mu.Lock()
	t, ok := a.tokens[req.ReplyToken]
	valid := ok && !t.used && a.opts.Now().Before(t.expires) && (t.channel == "" || t.channel == c.ch.ID)
	if valid {
		t.used = true
		a.tokens[req.ReplyToken] = t
	}
	a.mu.Unlock()
	if !valid {
		c.fail(http.StatusBadRequest, "Invalid reply token")
		return
	}
	c.reply(http.StatusOK, map[string]any{"sentMessages": c.sent(req.Messages)})
}

func (a *API) push(c *call) {
	var req struct {
		To       string          `json:"to"`
		Messages json.RawMessage `json:"messages"`
	}
	if !c.decode(&req) {
		return
	}
	if req.To == "" {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be specified", "to"})
		return
	}
	if !c.checkMessages(req.Messages) {
		return
	}
	n := int64(1)
	if !strings.HasPrefix(req.To, "U") {
		n = a.opts.GroupMembers // a group or a room: each member counts
	}
	if !c.reserve(n) {
		return
	}
	if !c.retryKey() {
		c.release(n)
		return
	}
	c.reply(http.StatusOK, map[string]any{"sentMessages": c.sent(req.Messages)})
	a.echo(c.ch, req.To, req.Messages)
}

// multicast, broadcast and narrowcast differ in their recipients and in
// the status they answer (narrowcast is asynchronous: 202).
func (a *API) multicast(c *call)  { a.fanout(c, true, http.StatusOK) }
func (a *API) broadcast(c *call)  { a.fanout(c, false, http.StatusOK) }
func (a *API) narrowcast(c *call) { a.fanout(c, false, http.StatusAccepted) }

func (a *API) fanout(c *call, needTo bool, status int) {
	var req struct {
		To       []string        `json:"to"`
		Messages json.RawMessage `json:"messages"`
	}
	if !c.decode(&req) {
		return
	}
	if needTo && (len(req.To) < 1 || len(req.To) > 500) {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"size must be between 1 and 500", "to"})
		return
	}
	if !c.checkMessages(req.Messages) {
		return
	}
	n := a.opts.Friends // broadcast and narrowcast reach the friends
	if needTo {
		n = int64(len(req.To))
	}
	if !c.reserve(n) {
		return
	}
	if !c.retryKey() {
		c.release(n)
		return
	}
	c.reply(status, struct{}{})
}

func (a *API) validate(c *call) {
	switch c.r.PathValue("kind") {
	case "reply", "push", "multicast", "narrowcast", "broadcast":
	default:
		c.fail(http.StatusNotFound, "Not found")
		return
	}
	var req struct {
		Messages json.RawMessage `json:"messages"`
	}
	if !c.noRetryKey() || !c.decode(&req) || !c.checkMessages(req.Messages) {
		return
	}
	c.reply(http.StatusOK, struct{}{})
}

func (a *API) getEndpoint(c *call) {
	a.mu.Lock()
	ep, off := c.ch.Endpoint, c.ch.WebhookOff
	a.mu.Unlock()
	if ep == "" {
		c.fail(http.StatusNotFound, "Not found")
		return
	}
	c.reply(http.StatusOK, map[string]any{"endpoint": ep, "active": !off})
}

func (a *API) setEndpoint(c *call) {
	var req struct {
		Endpoint *string `json:"endpoint"`
	}
	if !c.decode(&req) {
		return
	}
	if req.Endpoint == nil || !validEndpoint(*req.Endpoint) {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be an HTTPS URL of at most 500 characters", "endpoint"})
		return
	}
	a.mu.Lock()
	c.ch.Endpoint = *req.Endpoint
	a.mu.Unlock()
	c.reply(http.StatusOK, struct{}{})
}

// testEndpoint sends the request the console's Verify button sends: a
// signed body with no events, to the URL given or else the one set. It
// reports what came of it as LINE does: success for a 2xx answer within
// WebhookTimeout; otherwise the reason (could_not_connect,
// request_timeout, error_status_code) and its detail, with statusCode 0
// when no answer came.
func (a *API) testEndpoint(c *call) {
	var req struct {
		Endpoint string `json:"endpoint"`
	}
	if len(c.body) > 0 && !c.decode(&req) {
		return
	}
	a.mu.Lock()
	ep, secret := c.ch.Endpoint, c.ch.Secret
	a.mu.Unlock()
	if req.Endpoint != "" {
		if !validEndpoint(req.Endpoint) {
			c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be an HTTPS URL of at most 500 characters", "endpoint"})
			return
		}
		ep = req.Endpoint
	}
	if ep == "" {
		c.fail(http.StatusBadRequest, "The webhook endpoint URL is not set")
		return
	}
	if secret == "" {
		c.fail(http.StatusBadRequest, "The simulator has no channel secret for this channel")
		return
	}
	body := fmt.Appendf(nil, `{"destination":%q,"events":[]}`, BotUserID(c.ch.ID))
	ctx, cancel := context.WithTimeout(c.r.Context(), a.opts.WebhookTimeout)
	defer cancel()
	now := a.opts.Now()
	status, err := PostWebhook(ctx, a.opts.Client, ep, []byte(secret), body)
	resp := map[string]any{"success": err == nil && status/100 == 2, "timestamp": now.UTC().Format(time.RFC3339Nano), "statusCode": status}
	switch {
	case err != nil && isTimeout(err):
		resp["statusCode"], resp["reason"], resp["detail"] = 0, "request_timeout", "Request timeout"
	case err != nil:
		resp["statusCode"], resp["reason"], resp["detail"] = 0, "could_not_connect", "Connection failed"
	case status/100 == 2:
		resp["reason"], resp["detail"] = "OK", strconv.Itoa(status)
	default:
		resp["reason"], resp["detail"] = "error_status_code", strconv.Itoa(status)
	}
	c.reply(http.StatusOK, resp)
}

func (a *API) botInfo(c *call) {
	c.reply(http.StatusOK, map[string]any{
		"userId":         BotUserID(c.ch.ID),
		"basicId":        "@" + c.ch.ID,
		"displayName":    "linegate sim " + c.ch.ID,
		"chatMode":       "bot",
		"markAsReadMode": "auto",
	})
}

func (a *API) serveCalls(w http.ResponseWriter, r *http.Request) {
	calls := a.Calls()
	path := r.URL.Query().Get("path")
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	out := []Call{}
	for _, c := range calls {
		if (path == "" || c.Path == path) && c.Seq > since {
			out = append(out, c)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// BotUserID is the bot's user id the simulator gives a channel: "U" and 32
// hex digits, as LINE's destination field has.
func BotUserID(channel string) string {
	sum := sha256.Sum256([]byte("bot:" + channel))
	return "U" + hex.EncodeToString(sum[:16])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// demoOrder is the demo order service of the examples: the latest order of
// a user, made up from the user id so that it stays the same.
func demoOrder(w http.ResponseWriter, r *http.Request) {
	sum := sha256.Sum256([]byte(r.PathValue("user")))
	n := 1000 + int(sum[0])<<8%9000 + int(sum[1])%100
	statuses := []string{"Shipped", "Out for delivery", "Packed"}
	writeJSON(w, http.StatusOK, map[string]any{
		"order":   fmt.Sprintf("A%d", n),
		"status":  statuses[int(sum[2])%len(statuses)],
		"carrier": "Kerry Express",
		"eta":     time.Now().Add(24 * time.Hour).Format("Mon 2 Jan"),
		"image":   "https://linegate.example/demo/parcel.png",
	})
}
