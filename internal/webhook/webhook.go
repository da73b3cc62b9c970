// Package webhook is linegate's ingress: the http.Handler that receives
// LINE's webhook requests, caps their size, checks their signature over
// the exact bytes received, and answers 200 only once the request is
// durable in the ledger. It does not parse events: that is the pipeline's
// work, after the acknowledgement.
package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// Appender makes an entry durable. *ledger.Ledger implements it.
// Append must return only once the entry is durable, and an error (such as
// ledger.ErrPushback) when it cannot take the entry now.
type Appender interface {
	Append(ctx context.Context, e ledger.Entry) (uint64, error)
}

// Channel is one LINE channel that the gateway receives webhooks for.
type Channel struct {
	// ID is the {channel-id} of the webhook URL.
	ID string
	// Verifiers check the signature: the channel secret and, during a
	// rotation, the next one.
	Verifiers []line.Verifier
	// Retention is the retention class written with every record, unless
	// an audience of the channel claims one of the request's subjects.
	Retention string
	// Audiences map groups of subjects to their own retention classes;
	// the first audience that has one of a request's subjects decides.
	Audiences []Audience
}

// Audience is a group of a channel's users (or groups, or rooms) with its
// own retention class, such as the customers of one country.
type Audience struct {
	Name      string
	Retention string
	Subjects  map[string]bool
}

// class returns the retention class for a request with these subjects.
func (ch *Channel) class(subjects []string) string {
	for _, a := range ch.Audiences {
		for _, s := range subjects {
			if a.Subjects[s] {
				return a.Retention
			}
		}
	}
	return ch.Retention
}

// DefaultMaxBody is the default body cap: LINE's webhook bodies are far
// smaller.
const DefaultMaxBody = 1 << 20

// Options configures a Handler.
type Options struct {
	Channels []Channel
	Ledger   Appender
	// MaxBody caps request bodies (default DefaultMaxBody).
	MaxBody int64
	Logger  *slog.Logger
	// Now returns the receive time (default time.Now).
	Now func() time.Time
	// Appended, if set, is called after each verified request is durable
	// (to wake the pipeline). It must not block.
	Appended func()
	// Rejections bounds the records of requests that fail
	// authentication.
	Rejections RejectionPolicy
	// ByBot, if set, also serves POST /webhook for every channel: the
	// body's destination (a bot user id, a key of ByBot) names the
	// channel (its value) whose secrets verify it (single.go).
	ByBot map[string]string
}

// Handler serves POST /webhook/{channel}.
type Handler struct {
	mux      *http.ServeMux
	channels map[string]*Channel
	ledger   Appender
	maxBody  int64
	log      *slog.Logger
	fails    *oplog.Limiter // failures, by class and channel, rate limited
	now      func() time.Time
	appended func()
	rejects  *rejections
	byBot    map[string]string

	requests   *prometheus.CounterVec
	sigFails   *prometheus.CounterVec
	ackLatency *prometheus.HistogramVec
	bodyBytes  prometheus.Histogram
}

// Outcomes of a webhook request, the values of the "outcome" label.
const (
	OutcomeOK               = "ok"
	OutcomeBadSignature     = "bad_signature"
	OutcomeMissingSignature = "missing_signature"
	OutcomeTooLarge         = "too_large"
	OutcomeUnknownChannel   = "unknown_channel"
	OutcomeUnavailable      = "unavailable"
	OutcomeBadRequest       = "bad_request"
)

// New returns the ingress handler.
func New(opts Options) *Handler {
	h := &Handler{
		mux:      http.NewServeMux(),
		channels: make(map[string]*Channel),
		ledger:   opts.Ledger,
		maxBody:  opts.MaxBody,
		log:      opts.Logger,
		now:      opts.Now,
		appended: opts.Appended,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_requests_total",
			Help: "Webhook requests by channel and outcome.",
		}, []string{"channel", "outcome"}),
		sigFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_signature_failures_total",
			Help: "Webhook requests with a missing or invalid signature, by channel.",
		}, []string{"channel"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPrefix + "webhook_ack_seconds",
			Help:    "Time from the end of the request headers to the answer, by channel and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 15),
		}, []string{"channel", "outcome"}),
		bodyBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "webhook_body_bytes",
			Help:    "Sizes of webhook bodies read.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 9),
		}),
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.fails = oplog.NewLimiter(h.log, oplog.Every)
	h.rejects = newRejections(opts.Rejections, opts.Ledger, h.fails)
	for i := range opts.Channels {
		c := opts.Channels[i]
		h.channels[c.ID] = &c
		// Pre-create the series, so that dashboards see zeros.
		h.sigFails.WithLabelValues(c.ID)
		h.requests.WithLabelValues(c.ID, OutcomeOK)
		h.requests.WithLabelValues(c.ID, OutcomeUnavailable)
	}
	h.mux.HandleFunc("POST /webhook/{channel}", h.serveWebhook)
	if opts.ByBot != nil {
		h.byBot = opts.ByBot
		h.mux.HandleFunc("POST /webhook", h.serveSingle)
	}
	return h
}

// Collectors returns the handler's metrics, for the caller's registry.
func (h *Handler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.requests, h.sigFails, h.ackLatency, h.bodyBytes, h.rejects.recorded, h.rejects.unrecorded}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request) {
	received := h.now()
	id := r.PathValue("channel")
	ch := h.channels[id]
	if ch == nil {
		// Unknown channel ids are attacker-chosen: no label of their own,
		// and one rate limit for all of them.
		// The id is logged by the start of its SHA-256, never as it is: a
		// URL set by mistake may carry a secret in its path.
		sum := sha256.Sum256([]byte(id))
		h.fails.Log(slog.LevelWarn, oplog.Key{Class: OutcomeUnknownChannel}, "webhook rejected: unknown channel (not in the config's channels)",
			"channel_sha256", hex.EncodeToString(sum[:6]), "channel_bytes", len(id), "remote", clientAddr(r))
		h.finish(w, "", OutcomeUnknownChannel, http.StatusNotFound, received)
		return
	}
	if r.ContentLength > h.maxBody {
		h.tooLarge(r, id, r.ContentLength)
		h.finish(w, id, OutcomeTooLarge, http.StatusRequestEntityTooLarge, received)
		return
	}
	// While it reads its body, a request has nothing at stake yet: past
	// BodyGrace, a client slow to send it may lose its connection to a new
	// one when the listener is full.
	done := cuttable(r.Context(), BodyGrace)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	done()
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.tooLarge(r, id, -1)
			h.finish(w, id, OutcomeTooLarge, http.StatusRequestEntityTooLarge, received)
		} else {
			h.fails.Log(slog.LevelWarn, oplog.Key{Class: OutcomeBadRequest, Channel: id}, "webhook rejected: body not read",
				"remote", clientAddr(r), "err", oplog.Truncate(err.Error(), 200))
			h.finish(w, id, OutcomeBadRequest, http.StatusBadRequest, received)
		}
		return
	}
	h.accept(w, r, ch, body, received)
}

// accept verifies a webhook's body, read whole, for channel ch, and
// acknowledges it once it is durable.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, ch *Channel, body []byte, received time.Time) {
	id := ch.ID
	h.bodyBytes.Observe(float64(len(body)))
	meta := &record.Meta{
		Channel:    id,
		ReceivedMs: received.UnixMilli(),
		Remote:     r.RemoteAddr,
		Method:     r.Method,
		Path:       r.URL.Path,
		Headers:    r.Header,
	}
	v, err := line.Check(ch.Verifiers, body, r.Header.Get(line.SignatureHeader))
	if err != nil {
		h.reject(w, r, ch, body, err, received)
		return
	}
	meta.Verifier = v.Name()
	payload, err := record.EncodePayload(meta, body)
	if err != nil {
		h.fails.Log(slog.LevelError, oplog.Key{Class: "encode_failed", Channel: id}, "webhook not acknowledged: payload not encoded", "err", err)
		h.finish(w, id, OutcomeUnavailable, http.StatusInternalServerError, received)
		return
	}
	subjects := line.BodySubjects(body)
	_, err = h.ledger.Append(r.Context(), ledger.Entry{
		Kind: ledger.KindWebhook, Time: received, Channel: id, Retention: ch.class(subjects), Payload: payload,
		Subjects: subjects,
	})
	if err != nil {
		h.fails.Log(slog.LevelError, oplog.Key{Class: "ledger_unavailable", Channel: id}, "webhook not acknowledged (503): the ledger cannot take it",
			"err", oplog.Truncate(err.Error(), 300))
		h.Unavailable(id)
		h.finish(w, id, OutcomeUnavailable, http.StatusServiceUnavailable, received)
		return
	}
	if h.appended != nil {
		h.appended()
	}
	h.finish(w, id, OutcomeOK, http.StatusOK, received)
}

// reject answers 401 to a request that failed authentication, and
// records it within the RejectionPolicy: its size, the SHA-256 of its
// body and a few of its headers, never the body, after the answer.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, ch *Channel, body []byte, why error, received time.Time) {
	outcome := OutcomeBadSignature
	if errors.Is(why, line.ErrNoSignature) {
		outcome = OutcomeMissingSignature
	}
	h.sigFails.WithLabelValues(ch.ID).Inc()
	if outcome == OutcomeMissingSignature {
		h.fails.Log(slog.LevelWarn, oplog.Key{Class: outcome, Channel: ch.ID}, "webhook rejected (401): no x-line-signature header",
			"remote", clientAddr(r), "body_bytes", len(body))
	} else {
		h.fails.Log(slog.LevelWarn, oplog.Key{Class: outcome, Channel: ch.ID}, "webhook rejected (401): bad signature",
			"remote", clientAddr(r), "body_bytes", len(body),
			"hint", "check the channel's secret in the config against the LINE Developers Console (Basic settings)")
	}
	h.rejects.record(ch, r, body, outcome, received)
	// A client that keeps failing waits for its answers: a flood slows
	// itself down instead of taking the CPU signed webhooks need.
	// The connection may be cut meanwhile: the request is refused and
	// recorded already.
	if d := h.rejects.delay(clientAddr(r), received); d > 0 {
		done := cuttable(r.Context(), 0)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		done()
	}
	h.finish(w, ch.ID, outcome, http.StatusUnauthorized, received)
}

// tooLarge logs a body over the cap (size -1: it did not say its size).
func (h *Handler) tooLarge(r *http.Request, channel string, size int64) {
	h.fails.Log(slog.LevelWarn, oplog.Key{Class: OutcomeTooLarge, Channel: channel}, "webhook rejected (413): body over max_body_bytes",
		"remote", clientAddr(r), "content_length", size, "max_body_bytes", h.maxBody)
}

// clientAddr returns the request's client address without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (h *Handler) finish(w http.ResponseWriter, channel, outcome string, status int, received time.Time) {
	h.requests.WithLabelValues(channel, outcome).Inc()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(statusBody(status))))
	w.WriteHeader(status)
	io.WriteString(w, statusBody(status))
	h.ackLatency.WithLabelValues(channel, outcome).Observe(h.now().Sub(received).Seconds())
}

func statusBody(status int) string {
	switch status {
	case http.StatusOK:
		return ""
	case http.StatusServiceUnavailable:
		return "ledger unavailable, retry later\n"
	}
	return http.StatusText(status) + "\n"
}
