// Package canary is the runbook's canary: a text with a unique marker (the
// prefix MarkerPrefix and a UUID) pushed to a channel's canary group, a
// LINE group of internal testers, through the whole path (the Sender, the
// Messaging API, the group, LINE's webhook, the ledger, the pipeline); the
// round trip is complete when the marker comes back from that group as a
// message event. The canary is the one send that the kill switch and
// dry-run let through, to the canary group alone, so that it can run
// before the switches are lifted.
//
// It also watches for markers where they must never be: in any event from
// another conversation, and in any send to another conversation. Each one
// found is a leak: a ledger record (admin action "canary_leak"), the
// metric linegate_canary_leaks_total and a log line that names the
// channel, the direction, the record and the marker, never the message
// text or the LINE user. The check is one bytes.Contains of the prefix on
// the bytes already in hand.
package canary

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/prometheus/client_golang/prometheus"
)

// MarkerPrefix begins every canary marker; a UUID follows it.
const MarkerPrefix = "lgcanary-"

var prefix = []byte(MarkerPrefix)

// markerLen is the length of a marker: the prefix and a UUID.
const markerLen = len(MarkerPrefix) + 36

// NewMarker returns a new, unique marker.
func NewMarker() string { return MarkerPrefix + uuid.NewString() }

// Markers returns the markers in b, each once, in order.
func Markers(b []byte) []string {
	var out []string
	for {
		i := bytes.Index(b, prefix)
		if i < 0 {
			return out
		}
		b = b[i:]
		m := string(b[:min(len(b), markerLen)])
		if len(m) == markerLen && uuid.Validate(m[len(MarkerPrefix):]) == nil {
			dup := false
			for _, o := range out {
				dup = dup || o == m
			}
			if !dup {
				out = append(out, m)
			}
		}
		b = b[len(prefix):]
	}
}

// Sender sends the canary; *outbound.Sender implements it.
type Sender interface {
	Send(ctx context.Context, r outbound.Request) (outbound.Outcome, error)
}

// Options configures a Watch.
type Options struct {
	// Groups are the canary groups by channel: a LINE group id (C...).
	// A channel without one has no canary, and every marker seen on it
	// is a leak.
	Groups map[string]string
	// Retention is each channel's retention class, for the canary's send.
	Retention map[string]string
	// Ledger records runs and leaks.
	Ledger outbound.Committer
	// Sender sends the canary (Run); nil: Run fails.
	Sender Sender
	// State reads the settings that Ledger's records set (the store);
	// with it, a run also completes when another replica on the same
	// database saw the marker come back (nil: this process alone).
	State interface {
		Setting(ctx context.Context, key string) (string, error)
	}
	// Poll is how often a run looks for another replica's sighting
	// (default 200ms).
	Poll   time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// Watch runs canaries and watches for leaks. It is safe for concurrent
// use.
//
// A run waits in the process that sent it. With replicas on one database
// the marker may come back through another replica's pipeline: that one
// records the sighting (admin action "canary_echo", which stores the time
// as the setting "canary_echo:" and the marker), and the run reads it.
type Watch struct {
	o     Options
	fails *oplog.Limiter

	mu      sync.Mutex
	waiting map[string]chan time.Time // marker -> its arrival
	issued  map[string]bool           // the markers this process's runs sent

	leaks  *prometheus.CounterVec
	runs   *prometheus.CounterVec
	lastOK *prometheus.GaugeVec
}

const metricPrefix = "linegate_"

// New returns a Watch.
func New(o Options) *Watch {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	w := &Watch{o: o, fails: oplog.NewLimiter(o.Logger, oplog.Every), waiting: map[string]chan time.Time{}, issued: map[string]bool{}}
	w.leaks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "canary_leaks_total",
		Help: "Canary markers seen outside the canary group (in an event from, or a send to, another conversation), by channel.",
	}, []string{"channel"})
	w.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "canary_runs_total",
		Help: "Canary runs by channel and outcome (ok, timeout, send_failed).",
	}, []string{"channel", "outcome"})
	w.lastOK = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "canary_last_success_timestamp_seconds",
		Help: "When the last canary round trip of the channel completed (Unix time).",
	}, []string{"channel"})
	// Exported at 0 from the start, so that alerts see the first leak or
	// failed run as an increase.
	for ch, group := range o.Groups {
		w.leaks.WithLabelValues(ch)
		if group != "" {
			for _, out := range []string{OK, Timeout, SendFailed} {
				w.runs.WithLabelValues(ch, out)
			}
		}
	}
	return w
}

// Collectors returns the Watch's metrics.
func (w *Watch) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.leaks, w.runs, w.lastOK}
}

// The outcomes of a run.
const (
	OK         = "ok"
	Timeout    = "timeout"
	SendFailed = "send_failed"
)

// ErrNoGroup is the error of a run on a channel with no canary group.
var ErrNoGroup = errors.New("canary: the channel has no canary_group")

// Result is what a run found.
type Result struct {
	Channel string `json:"channel"`
	Marker  string `json:"marker"`
	Outcome string `json:"outcome"`
	// Send is the push's outcome (sent, failed, ...), and Reason why it
	// failed.
	Send   string `json:"send"`
	Reason string `json:"reason,omitempty"`
	// SentAt is when the push was made; RoundTripMs how long until the
	// marker came back from the group (0 unless OK).
	SentAt      time.Time `json:"sent_at"`
	RoundTripMs float64   `json:"round_trip_ms,omitempty"`
	TimeoutMs   float64   `json:"timeout_ms"`
	// Record is the ledger index of the run's record.
	Record uint64 `json:"record"`
}

// Run pushes a new marker to the channel's canary group and waits, at
// most timeout, for it to come back from the group; it records the run
// (admin action "canary_run", with what it found added to detail: who
// asked) and returns what it found. The error is for a run that could not
// start (no group, ErrNoGroup) or whose record failed.
func (w *Watch) Run(ctx context.Context, channel string, timeout time.Duration, detail map[string]any) (*Result, error) {
	group := w.o.Groups[channel]
	if group == "" {
		return nil, ErrNoGroup
	}
	if w.o.Sender == nil {
		return nil, errors.New("canary: no sender")
	}
	marker := NewMarker()
	arrived := make(chan time.Time, 1)
	w.mu.Lock()
	w.waiting[marker] = arrived
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.waiting, marker)
		w.mu.Unlock()
	}()
	if err := w.issue(ctx, channel, marker); err != nil {
		return nil, err
	}
	text, _ := json.Marshal(map[string]string{"type": "text", "text": "linegate canary " + marker})
	start := w.o.Now()
	res := &Result{Channel: channel, Marker: marker, SentAt: start.UTC(), TimeoutMs: float64(timeout) / float64(time.Millisecond)}
	out, err := w.o.Sender.Send(ctx, outbound.Request{
		Channel: channel, Retention: w.o.Retention[channel], Subjects: []string{"group:" + group},
		EventKey: "canary:" + marker, Rule: "canary", To: group, ForcePush: true,
		Messages: []json.RawMessage{text}, Class: outbound.Transactional, Canary: true,
	})
	res.Send = string(out)
	if out != outbound.Sent {
		res.Outcome = SendFailed
		if err != nil {
			res.Reason = err.Error()
		}
	} else {
		res.Outcome = Timeout
		if at, ok := w.wait(ctx, marker, arrived, timeout); ok {
			res.Outcome, res.RoundTripMs = OK, float64(at.Sub(start))/float64(time.Millisecond)
		} else if ctx.Err() != nil {
			res.Reason = "the caller went away"
		}
	}
	if detail == nil {
		detail = map[string]any{}
	}
	detail["channel"], detail["marker"], detail["outcome"], detail["send"] = channel, marker, res.Outcome, res.Send
	detail["sent_at"], detail["timeout_ms"] = res.SentAt.Format(time.RFC3339Nano), res.TimeoutMs
	if res.Outcome == OK {
		detail["round_trip_ms"] = res.RoundTripMs
	}
	if res.Reason != "" {
		detail["reason"] = res.Reason
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	idx, err := outbound.RecordAdmin(rctx, w.o.Ledger, "canary_run", detail, nil, w.o.Now())
	w.runs.WithLabelValues(channel, res.Outcome).Inc()
	if res.Outcome == OK {
		w.lastOK.WithLabelValues(channel).Set(float64(w.o.Now().UnixMilli()) / 1000)
	}
	if err != nil {
		return res, fmt.Errorf("record canary run: %w", err)
	}
	res.Record = idx
	return res, nil
}

// settingIssued begins the setting that says a marker was sent by a run
// (of any replica): only such a marker seen elsewhere is a leak.
const settingIssued = "canary_issued:"

// issue records that a run is about to send marker (admin action
// "canary_start", with the setting settingIssued for the other replicas),
// before it is sent: a marker is a leak only if a run sent it, so that
// anyone typing text shaped like a marker cannot raise the leak alarm.
func (w *Watch) issue(ctx context.Context, channel, marker string) error {
	now := w.o.Now()
	var effects []ledger.Effect
	if w.o.State != nil {
		effects = append(effects, outbound.SetSetting{Key: settingIssued + marker, Value: now.UTC().Format(time.RFC3339Nano)})
	}
	if _, err := outbound.RecordAdmin(ctx, w.o.Ledger, "canary_start", map[string]any{"channel": channel, "marker": marker}, nil, now, effects...); err != nil {
		return fmt.Errorf("record canary start: %w", err)
	}
	w.mu.Lock()
	w.issued[marker] = true
	w.mu.Unlock()
	return nil
}

// wasIssued reports whether a run of this process, or of another replica
// on the same database, sent marker.
func (w *Watch) wasIssued(ctx context.Context, marker string) bool {
	w.mu.Lock()
	ok := w.issued[marker]
	w.mu.Unlock()
	if ok || w.o.State == nil {
		return ok
	}
	v, err := w.o.State.Setting(ctx, settingIssued+marker)
	return err == nil && v != ""
}

// settingEcho begins the setting in which a replica records when it saw
// a marker come back.
const settingEcho = "canary_echo:"

// wait waits, at most timeout, for the marker to come back: through this
// process's pipeline (arrived), or another replica's (the setting).
func (w *Watch) wait(ctx context.Context, marker string, arrived <-chan time.Time, timeout time.Duration) (time.Time, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	poll := time.NewTicker(w.o.Poll)
	defer poll.Stop()
	for {
		select {
		case at := <-arrived:
			return at, true
		case <-t.C:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		case <-poll.C:
			if w.o.State == nil {
				continue
			}
			v, err := w.o.State.Setting(ctx, settingEcho+marker)
			if err != nil || v == "" {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return at, true
			}
		}
	}
}

// Action wraps the pipeline's action: an event that carries a marker is
// a canary's round trip when it comes from the channel's canary group
// (it completes its run, and goes no further: it is not the rules' to
// answer), and a leak from anywhere else (recorded, then handled as
// usual).
func (w *Watch) Action(next pipeline.Action) pipeline.Action {
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, e *line.Event) error {
		if !bytes.Contains(e.Raw, prefix) {
			return next.Handle(ctx, it, e)
		}
		markers := Markers(e.Raw)
		if len(markers) == 0 {
			return next.Handle(ctx, it, e)
		}
		group := w.o.Groups[it.Channel]
		if group != "" && e.Source != nil && e.Source.Type == "group" && e.Source.GroupID == group {
			return w.arrived(ctx, it.Channel, markers)
		}
		w.leak(ctx, it.Channel, "inbound", conversation(e), markers, map[string]any{"event": it.Key, "webhook_record": it.Record})
		return next.Handle(ctx, it, e)
	})
}

// CheckSend is the Sender's inspection (outbound.Sender.InspectSends): a
// marker in a send to anywhere but the canary group is a leak.
func (w *Watch) CheckSend(r outbound.Request, body []byte) {
	if !bytes.Contains(body, prefix) || r.Canary {
		return
	}
	if group := w.o.Groups[r.Channel]; group != "" && r.To == group {
		return
	}
	markers := Markers(body)
	if len(markers) == 0 {
		return
	}
	subject := ""
	if r.To != "" {
		if s, ok := line.ParseSubject(r.To); ok && line.ValidSubject(s) {
			subject = s
		}
	}
	w.leak(context.Background(), r.Channel, "outbound", subject, markers,
		map[string]any{"event": r.EventKey, "webhook_record": r.Record, "rule": r.Rule})
}

// arrived completes the runs waiting for markers; a marker no run of
// this process waits for is recorded for the replica whose run it is.
// The error (the record failed) fails the event, which runs again.
func (w *Watch) arrived(ctx context.Context, channel string, markers []string) error {
	now := w.o.Now()
	var others []string
	w.mu.Lock()
	for _, m := range markers {
		if ch, ok := w.waiting[m]; ok {
			select {
			case ch <- now:
			default:
			}
			continue
		}
		others = append(others, m)
	}
	w.mu.Unlock()
	if w.o.State == nil {
		return nil
	}
	for _, m := range others {
		_, err := outbound.RecordAdmin(ctx, w.o.Ledger, "canary_echo", map[string]any{"channel": channel, "marker": m}, nil, now,
			outbound.SetSetting{Key: settingEcho + m, Value: now.UTC().Format(time.RFC3339Nano)})
		if err != nil {
			return fmt.Errorf("record canary echo: %w", err)
		}
	}
	return nil
}

// leak records, counts and logs markers found where they must not be.
// subject is the conversation ("user:U...", "group:C..."), sealed into
// the record, never logged.
func (w *Watch) leak(ctx context.Context, channel, direction, subject string, markers []string, detail map[string]any) {
	var issued []string
	for _, m := range markers {
		if w.wasIssued(ctx, m) {
			issued = append(issued, m)
		}
	}
	if len(issued) < len(markers) {
		w.fails.Log(slog.LevelInfo, oplog.Key{Class: "canary_marker_unknown", Channel: channel},
			"text shaped like a canary marker that no canary run sent: not a leak", "direction", direction, "event", detail["event"])
	}
	if len(issued) == 0 {
		return
	}
	markers = issued
	w.leaks.WithLabelValues(channel).Inc()
	detail["channel"], detail["direction"], detail["markers"] = channel, direction, markers
	var subjects []string
	if subject != "" {
		subjects = []string{subject}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	idx, err := outbound.RecordAdmin(rctx, w.o.Ledger, "canary_leak", detail, subjects, w.o.Now())
	args := []any{"direction", direction, "markers", markers, "event", detail["event"], "webhook_record", detail["webhook_record"]}
	if err != nil {
		args = append(args, "err", oplog.Truncate(err.Error(), 300))
	} else {
		args = append(args, "record", idx)
	}
	w.fails.Log(slog.LevelError, oplog.Key{Class: "canary_leak", Channel: channel},
		"canary marker outside the canary group: a configuration leak", args...)
}

// conversation is the subject of the conversation an event came from.
func conversation(e *line.Event) string {
	if e.Source == nil {
		return ""
	}
	var s string
	switch e.Source.Type {
	case "group":
		s = "group:" + e.Source.GroupID
	case "room":
		s = "room:" + e.Source.RoomID
	case "user":
		s = "user:" + e.Source.UserID
	}
	if !line.ValidSubject(s) {
		return ""
	}
	return s
}
