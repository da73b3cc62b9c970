package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/outbound"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	internalErrors *prometheus.CounterVec
	depth          *prometheus.GaugeVec
	backlog        *prometheus.GaugeVec
	attempts       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	breaker        *prometheus.GaugeVec
	paused         *prometheus.GaugeVec
}

func newMetrics() *metrics {
	return &metrics{
		internalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "fanout_internal_errors_total",
			Help: "Delivery attempts cut short by a fault of linegate's (a panic, logged with its stack), by destination: the events stay queued and the destination backs off.",
		}, []string{"destination"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "fanout_queue_depth",
			Help: "Events queued for a destination and not yet delivered, by destination.",
		}, []string{"destination"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "fanout_backlog_records",
			Help: "Ledger records a destination has still to read its events from (after a restart, or after more came than it holds in memory while it was slow, paused or down), by destination; 0 when it reads none.",
		}, []string{"destination"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "fanout_attempts_total",
			Help: "Events attempted, by destination and result (delivered, failed, dropped); a request carries one or several.",
		}, []string{"destination", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPrefix + "fanout_attempt_seconds",
			Help:    "Time of a delivery request, from its start to the end of the answer, by destination.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"destination"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "fanout_breaker_state",
			Help: "A destination's circuit breaker: 0 closed, 1 half-open (probing), 2 open.",
		}, []string{"destination"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "fanout_paused",
			Help: "1 while a destination is paused from the admin API.",
		}, []string{"destination"}),
	}
}

func (m *metrics) collectors(f *Fanout) []prometheus.Collector {
	for _, w := range f.order {
		// Zeros from the start, so that dashboards and alerts see them.
		n := w.d.Name
		m.depth.WithLabelValues(n)
		m.breaker.WithLabelValues(n)
		m.paused.WithLabelValues(n)
		m.backlog.WithLabelValues(n)
		m.latency.WithLabelValues(n)
		m.internalErrors.WithLabelValues(n)
		for _, r := range []string{"delivered", "failed", "dropped"} {
			m.attempts.WithLabelValues(n, r)
		}
	}
	return []prometheus.Collector{m.depth, m.backlog, m.attempts, m.latency, m.breaker, m.paused, m.internalErrors}
}

// Status is a destination's state, as GET /admin/destinations lists it.
type Status struct {
	Name           string `json:"name"`
	Channel        string `json:"channel"`
	URL            string `json:"url"`
	OwnsReplyToken bool   `json:"owns_reply_token"`
	Paused         bool   `json:"paused"`
	Breaker        string `json:"breaker"`
	Failures       int    `json:"consecutive_failures"`
	QueueDepth     int64  `json:"queue_depth"`
	// Backlog: the destination is reading its events from the ledger,
	// from this index on (after a restart, or after more than it holds in
	// memory came while it was slow, paused or down); QueueDepth counts
	// only those read so far.
	Backlog *uint64 `json:"backlog_from,omitempty"`
	// BacklogRecords: while Backlog is set, the ledger's records from
	// Backlog on (of every kind: an upper bound of the events still to
	// be read, which QueueDepth does not count yet).
	BacklogRecords *uint64 `json:"backlog_records,omitempty"`
	LastError      string  `json:"last_error,omitempty"`
	// LastErrorAt is when the last failed attempt ended (with
	// LastError), LastDeliveredAt when the last delivered one did: an
	// error older than the last delivery is one the destination
	// recovered from. Absent until there is one (since the start).
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
	LastDeliveredAt *time.Time `json:"last_delivered_at,omitempty"`
	// NextProbeAt: while the breaker is open, when its next attempt (the
	// half-open probe) may go.
	NextProbeAt *time.Time `json:"next_probe_at,omitempty"`
}

// breakerStatus fills st's fields of the worker's breaker and attempts.
func (w *worker) breakerStatus(st *Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st.Breaker, st.Failures, st.LastError = breakerNames[w.state], w.failures, w.lastError
	st.LastErrorAt, st.LastDeliveredAt = timeOrNil(w.lastErrorAt), timeOrNil(w.lastDeliveredAt)
	st.NextProbeAt = nil
	if w.state == breakerOpen {
		st.NextProbeAt = timeOrNil(w.openUntil)
	}
}

// timeOrNil returns t in UTC, or nil for the zero time.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Status returns the state of every destination, its queue depth read now.
func (f *Fanout) Status(ctx context.Context) ([]Status, error) {
	// What each destination holds in memory is read before the table:
	// held entries leave memory only once the commit that moved them into
	// the table (or delivered them) is done, so that an entry being moved
	// is counted once or twice, never missed.
	type mem struct {
		held   int
		behind bool
		next   uint64
	}
	mems := make([]mem, len(f.order))
	for i, w := range f.order {
		mems[i].held, mems[i].behind, mems[i].next = w.s.held()
	}
	depths, err := f.o.Store.QueueDepths(ctx)
	if err != nil {
		return nil, err
	}
	var count uint64
	if !f.o.Table && slices.ContainsFunc(mems, func(m mem) bool { return m.behind }) {
		if count, err = f.o.Ledger.Count(ctx); err != nil {
			return nil, err
		}
	}
	out := []Status{}
	for i, w := range f.order {
		v, err := f.o.Store.Setting(ctx, pauseKey(w.d.Name))
		if err != nil {
			return nil, err
		}
		held, behind, next := mems[i].held, mems[i].behind, mems[i].next
		var backlog, records *uint64
		if behind && !f.o.Table {
			n := count - min(count, next)
			backlog, records = &next, &n
		}
		st := Status{Name: w.d.Name, Channel: w.d.Channel, URL: w.d.URL, OwnsReplyToken: w.d.OwnsReplyToken,
			Paused: v == "on", QueueDepth: depths[w.d.Name] + int64(held), Backlog: backlog, BacklogRecords: records}
		w.breakerStatus(&st)
		out = append(out, st)
	}
	return out, nil
}

// SetPaused pauses or resumes a destination: an admin record (action
// "destination_pause" or "destination_resume", with detail) whose commit
// sets the switch. While paused, its events stay queued.
func (f *Fanout) SetPaused(ctx context.Context, name string, paused bool, detail map[string]any) error {
	w := f.byName[name]
	if w == nil {
		return ErrUnknownDestination
	}
	action, value := "destination_resume", "off"
	if paused {
		action, value = "destination_pause", "on"
	}
	if detail == nil {
		detail = map[string]any{}
	}
	detail["destination"], detail["channel"] = name, w.d.Channel
	if _, err := outbound.RecordAdmin(ctx, f.o.Log, action, detail, nil, f.o.Now(),
		outbound.SetSetting{Key: pauseKey(name), Value: value}); err != nil {
		return err
	}
	w.pauseSets.Add(1) // before: a read of the switch that saw none of it is dropped
	w.paused.Store(paused)
	f.m.paused.WithLabelValues(name).Set(b2f(paused))
	w.kick()
	return nil
}

// Routes adds the destinations' admin endpoints to mux (which the admin
// API serves behind its bearer token):
//
//	GET  /admin/destinations                 every destination's state
//	POST /admin/destinations/{name}/pause    {"reason": "..."} (optional)
//	POST /admin/destinations/{name}/resume   {"reason": "..."} (optional)
//	POST /admin/destinations/{name}/replay   {"from": RFC 3339, "to": RFC 3339, "channel": "...", "reason": "..."}
func (f *Fanout) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/destinations", func(w http.ResponseWriter, r *http.Request) {
		st, err := f.Status(r.Context())
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, map[string]any{"destinations": st})
	})
	for _, op := range []string{"pause", "resume"} {
		mux.HandleFunc("POST /admin/destinations/{name}/"+op, func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Reason string `json:"reason"`
			}
			if !decodeOptional(w, r, &req) {
				return
			}
			name := r.PathValue("name")
			detail := map[string]any{"remote": r.RemoteAddr}
			if req.Reason != "" {
				detail["reason"] = req.Reason
			}
			if err := f.SetPaused(r.Context(), name, op == "pause", detail); err != nil {
				httpError(w, err)
				return
			}
			writeJSON(w, map[string]any{"destination": name, "paused": op == "pause"})
		})
	}
	mux.HandleFunc("POST /admin/destinations/{name}/replay", func(w http.ResponseWriter, r *http.Request) {
		var req ReplayRequest
		if !decodeOptional(w, r, &req) {
			return
		}
		req.Destination = r.PathValue("name")
		req.remote = r.RemoteAddr
		res, err := f.Replay(r.Context(), req)
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, res)
	})
}

// maxAdminBody bounds an admin request's body.
const maxAdminBody = 64 << 10

func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		http.Error(w, "body not read: over 64 KiB or cut\n", http.StatusRequestEntityTooLarge)
		return false
	}
	if len(b) == 0 {
		return true
	}
	if err := json.Unmarshal(b, v); err != nil {
		http.Error(w, fmt.Sprintf("bad JSON body: %v\n", err), http.StatusBadRequest)
		return false
	}
	return true
}

func httpError(w http.ResponseWriter, err error) {
	var bad *BadRequestError
	switch {
	case errors.Is(err, ErrUnknownDestination):
		http.Error(w, err.Error()+"\n", http.StatusNotFound)
	case errors.As(err, &bad):
		http.Error(w, err.Error()+"\n", http.StatusBadRequest)
	case errors.Is(err, ErrBacklog):
		http.Error(w, err.Error()+"\n", http.StatusConflict)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		http.Error(w, "timed out\n", http.StatusServiceUnavailable)
	default:
		http.Error(w, "internal error: "+err.Error()+"\n", http.StatusInternalServerError)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// BadRequestError is a request that cannot be done as asked.
type BadRequestError struct{ Msg string }

func (e *BadRequestError) Error() string { return e.Msg }
