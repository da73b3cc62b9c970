package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// RejectionPolicy bounds what unauthenticated traffic (a missing or bad
// signature) can write to the ledger. A rejection is recorded as bounded
// evidence (the body's size and SHA-256, a few headers, truncated), at
// most PerSecond a second per channel; the rest are counted, and a
// summary record of each channel's count is written every SummaryEvery.
// Rejections are never acknowledged after a commit: the 401 goes out at
// once and the record follows, so that a flood never waits in the ledger's
// queue beside signed webhooks, nor fills it.
type RejectionPolicy struct {
	// Retention is the retention class of rejection records (default
	// "rejections", a short period).
	Retention string
	// PerSecond and Burst bound the records per channel (defaults 5 and
	// 20).
	PerSecond float64
	Burst     int
	// SummaryEvery is how often the counts of rejections not recorded
	// one by one are written (default 1 minute).
	SummaryEvery time.Duration
}

// Bounds on a rejection record's headers.
const (
	rejectMaxHeaders     = 12
	rejectMaxHeaderName  = 64
	rejectMaxHeaderValue = 256
	// rejectInFlight bounds the rejection records waiting for a commit.
	rejectInFlight = 64
)

// rejections records rejected requests within a RejectionPolicy.
type rejections struct {
	p        RejectionPolicy
	ledger   Appender
	fails    *oplog.Limiter
	inFlight chan struct{}

	mu         sync.Mutex
	clients    map[string]*rate.Limiter // failures by client address
	limiters   map[string]*rate.Limiter
	suppressed map[string]map[string]int64 // channel -> reason -> count
	since      time.Time

	recorded   *prometheus.CounterVec
	unrecorded *prometheus.CounterVec
}

func newRejections(p RejectionPolicy, l Appender, fails *oplog.Limiter) *rejections {
	if p.Retention == "" {
		p.Retention = "rejections"
	}
	if p.PerSecond <= 0 {
		p.PerSecond = 5
	}
	if p.Burst <= 0 {
		p.Burst = 20
	}
	if p.SummaryEvery <= 0 {
		p.SummaryEvery = time.Minute
	}
	return &rejections{
		p: p, ledger: l, fails: fails, inFlight: make(chan struct{}, rejectInFlight),
		clients: map[string]*rate.Limiter{}, limiters: map[string]*rate.Limiter{}, suppressed: map[string]map[string]int64{}, since: time.Now(),
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_rejections_recorded_total",
			Help: "Rejected webhook requests recorded one by one in the ledger, by channel.",
		}, []string{"channel"}),
		unrecorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_rejections_summarised_total",
			Help: "Rejected webhook requests past the rate limit: counted, and recorded in a periodic summary.",
		}, []string{"channel"}),
	}
}

// Bounds on the answers to a client that keeps failing authentication:
// past clientFailures a second (and a burst of clientBurst), each of its
// 401s waits clientDelay, so that a flood costs its sender time and the
// gateway little CPU. At most maxClients addresses are remembered.
const (
	clientFailures = 10
	clientBurst    = 50
	clientDelay    = 500 * time.Millisecond
	maxClients     = 10000
)

// delay returns how long to hold the 401 to a client that failed
// authentication.
func (rj *rejections) delay(client string, now time.Time) time.Duration {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	lim := rj.clients[client]
	if lim == nil {
		if len(rj.clients) >= maxClients {
			clear(rj.clients) // forget them all rather than grow
		}
		lim = rate.NewLimiter(clientFailures, clientBurst)
		rj.clients[client] = lim
	}
	if lim.AllowN(now, 1) {
		return 0
	}
	return clientDelay
}

// record records a rejected request, or counts it for the next summary.
// It never blocks on the ledger.
func (rj *rejections) record(ch *Channel, r *http.Request, body []byte, reason string, received time.Time) {
	rj.mu.Lock()
	lim := rj.limiters[ch.ID]
	if lim == nil {
		lim = rate.NewLimiter(rate.Limit(rj.p.PerSecond), rj.p.Burst)
		rj.limiters[ch.ID] = lim
	}
	allowed := lim.AllowN(received, 1)
	rj.mu.Unlock()
	if !allowed {
		rj.count(ch.ID, reason)
		return
	}
	sum := sha256.Sum256(body)
	meta := &record.Meta{
		Channel: ch.ID, ReceivedMs: received.UnixMilli(), Remote: truncate(r.RemoteAddr, rejectMaxHeaderValue),
		Method: r.Method, Path: truncate(r.URL.Path, rejectMaxHeaderValue),
		Reason: reason, BodySize: int64(len(body)), BodySHA256: hex.EncodeToString(sum[:]),
	}
	meta.Headers, meta.HeaderCount, meta.HeaderBytes = boundedHeaders(r.Header)
	rj.append(ch.ID, reason, meta, received)
}

// append writes a rejection record in the background, within the bound
// of records in flight; past it, the rejection is counted instead.
func (rj *rejections) append(channel, reason string, meta *record.Meta, at time.Time) {
	payload, err := record.EncodePayload(meta, nil)
	if err != nil {
		return
	}
	select {
	case rj.inFlight <- struct{}{}:
	default:
		rj.count(channel, reason)
		return
	}
	go func() {
		defer func() { <-rj.inFlight }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := rj.ledger.Append(ctx, ledger.Entry{
			Kind: ledger.KindRejection, Time: at, Channel: channel, Retention: rj.p.Retention, Payload: payload,
		})
		if err != nil {
			rj.fails.Log(slog.LevelWarn, oplog.Key{Class: "rejection_not_recorded", Channel: channel},
				"rejected webhook not recorded one by one: counted in the next summary", "reason", reason, "err", oplog.Truncate(err.Error(), 300))
			if meta.Suppressed > 0 {
				// A summary not recorded: its counts go to the next one.
				rj.tally(channel, strings.TrimPrefix(meta.Reason, summaryPrefix), meta.Suppressed)
				return
			}
			rj.count(channel, reason)
			return
		}
		rj.recorded.WithLabelValues(channel).Inc()
	}()
}

func (rj *rejections) count(channel, reason string) {
	rj.unrecorded.WithLabelValues(channel).Inc()
	rj.tally(channel, reason, 1)
}

// tally adds n to the count of a channel's requests refused for reason,
// for the next summary.
func (rj *rejections) tally(channel, reason string, n int64) {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	m := rj.suppressed[channel]
	if m == nil {
		m = map[string]int64{}
		rj.suppressed[channel] = m
	}
	m[reason] += n
}

// summaryPrefix begins the reason of a summary record.
const summaryPrefix = "summary: "

// Unavailable counts a signed webhook answered 503 (the ledger could not
// take it) for the next summary: the summary record, written once the
// ledger takes writes again, is how the ledger learns of the 503s.
func (h *Handler) Unavailable(channel string) { h.rejects.tally(channel, OutcomeUnavailable, 1) }

// flush writes one summary record per channel and reason of the
// rejections counted since the last flush, in the background.
func (rj *rejections) flush(now time.Time) {
	for _, m := range rj.summaries(now) {
		rj.append(m.Channel, m.Reason, m, now)
	}
}

// summaries takes the counts since the last flush, as summary records'
// metadata.
func (rj *rejections) summaries(now time.Time) []*record.Meta {
	rj.mu.Lock()
	counts, since := rj.suppressed, rj.since
	rj.suppressed, rj.since = map[string]map[string]int64{}, now
	rj.mu.Unlock()
	channels := make([]string, 0, len(counts))
	for ch := range counts {
		channels = append(channels, ch)
	}
	slices.Sort(channels)
	var out []*record.Meta
	for _, ch := range channels {
		for reason, n := range counts[ch] {
			out = append(out, &record.Meta{Channel: ch, ReceivedMs: now.UnixMilli(), Reason: summaryPrefix + reason,
				Suppressed: n, SinceMs: since.UnixMilli()})
		}
	}
	return out
}

// FlushRejections records the summaries of the rejections counted so far
// and waits until they are durable: at shutdown, before the ledger
// closes.
func (h *Handler) FlushRejections(ctx context.Context) error {
	h.fails.Flush() // and the counts of failures not logged yet
	now := h.now()
	for _, m := range h.rejects.summaries(now) {
		payload, err := record.EncodePayload(m, nil)
		if err != nil {
			return err
		}
		if _, err := h.ledger.Append(ctx, ledger.Entry{Kind: ledger.KindRejection, Time: now, Channel: m.Channel,
			Retention: h.rejects.p.Retention, Payload: payload}); err != nil {
			return err
		}
	}
	return nil
}

// RunRejectionSummaries writes the summaries of rejections not recorded
// one by one, every SummaryEvery, until ctx ends (FlushRejections writes
// the last ones).
func (h *Handler) RunRejectionSummaries(ctx context.Context) {
	periodic.Every(ctx, h.rejects.p.SummaryEvery, func(context.Context) { h.rejects.flush(h.now()) })
}

// boundedHeaders keeps at most rejectMaxHeaders headers (by name, sorted;
// X-Line-Signature, Content-Type and User-Agent first), each name and
// first value truncated, and reports how many there were and their size.
func boundedHeaders(hs http.Header) (map[string][]string, int, int64) {
	var size int64
	names := make([]string, 0, len(hs))
	for name, vs := range hs {
		names = append(names, name)
		size += int64(len(name))
		for _, v := range vs {
			size += int64(len(v))
		}
	}
	first := func(n string) int {
		switch n {
		case line.SignatureHeader, "Content-Type", "User-Agent":
			return 0
		}
		return 1
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := first(a) - first(b); d != 0 {
			return d
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
	out := make(map[string][]string, min(len(names), rejectMaxHeaders))
	for _, n := range names[:min(len(names), rejectMaxHeaders)] {
		if vs := hs[n]; len(vs) > 0 {
			out[truncate(n, rejectMaxHeaderName)] = []string{truncate(vs[0], rejectMaxHeaderValue)}
		}
	}
	return out, len(names), size
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
