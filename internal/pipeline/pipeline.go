// Package pipeline turns webhook records, once they are durable in the
// ledger, into events that actions can act on. It runs behind the
// acknowledgement, as an outbox: a cursor over the ledger, a durable dedup
// memory and a queue, in the same database as the ledger.
//
// Each event is decoded and validated on its own (a malformed or unknown
// event never blocks its batch), deduplicated per channel by
// webhookEventId (or, for older events, by content), checked against the
// receive time and the dedup horizon (an older event is held: its key may
// be forgotten), and against the channel's bot (a webhook for another bot
// is foreign), and, only if its mode is active, handed to the action, in
// order within its conversation and in parallel across conversations.
// Delivery to the action is at least once: after a crash, events that were
// queued but not completed run again, so actions must make their effects
// idempotent (a reply token is single-use; a push carries a retry key
// derived from the event). Completing an event and recording its outcome
// in the ledger are one transaction, so every event has exactly one
// outcome record.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// Action acts on events. Handle is called at least once for every event
// with outcome OutcomeProcess, in order within a conversation; it must be
// idempotent under Item.Key. An error makes the outcome OutcomeFailed with
// the error as the reason (so errors must not carry message text).
type Action interface {
	Handle(ctx context.Context, it *Item, e *line.Event) error
}

// ActionFunc is a function that is an Action.
type ActionFunc func(ctx context.Context, it *Item, e *line.Event) error

// Handle implements Action.
func (f ActionFunc) Handle(ctx context.Context, it *Item, e *line.Event) error { return f(ctx, it, e) }

// ChannelPolicy is a channel's pipeline settings.
type ChannelPolicy struct {
	// QuarantineDrift quarantines events with fields or enum values the
	// specification does not have; by default they are processed and
	// counted as schema drift.
	QuarantineDrift bool
	// HoldSkewed holds events whose timestamp is far from the receive time
	// (and that are not redeliveries) instead of processing them.
	HoldSkewed bool
	// BotUserID is the channel's bot user id: a webhook whose destination
	// names another bot is recorded as foreign, never answered. Empty: not
	// checked.
	BotUserID string
}

// Options configures a Pipeline.
type Options struct {
	// Ledger is the store the webhook records are read from.
	Ledger ledger.Store
	// Log records outcomes, with the dequeue of their events in the same
	// commit (default: a ledger.Writer over Ledger, sealing with Sealer).
	Log Committer
	// Sealer opens sealed payloads and seals outcome records (nil: they
	// are stored as they are).
	Sealer   ledger.Sealer
	Store    Store
	Channels map[string]ChannelPolicy
	Action   Action
	// Workers is the number of conversations handled at once (default 16).
	Workers int
	// ClockThreshold is how far an event's timestamp may be from its
	// receive time before it is flagged (default 2s).
	ClockThreshold time.Duration
	// DedupHorizon is how long dedup keys are remembered (default 7 days).
	DedupHorizon time.Duration
	// Poll is how often the ledger is checked for new records when nothing
	// kicks the pipeline (default 50ms).
	Poll time.Duration
	// Linger is how long the pipeline gathers work before each of its
	// commits (default 0: none). Its queue changes and outcomes go through
	// the ledger's one writer, which groups them with whatever else is
	// committed meanwhile, so that waiting gains little and costs latency.
	Linger time.Duration
	// Claimer, if set, shares the queue with other processes on the same
	// database (gateway replicas): each claims the events it handles, and
	// only the holder of DispatchLease moves records into the queue.
	Claimer       Claimer
	DispatchLease ledger.Lease
	// Owner names this process in its claims (default: random).
	Owner string
	// ClaimFor is how long a claim holds without renewal (default 15s):
	// the events of a process that died are taken over after it.
	ClaimFor time.Duration
	// Follow, if set, returns effects that commit with the outcome records
	// of completed items (the fan-out's queueing): they take effect if and
	// only if the outcomes are recorded. It is called again, for each
	// item alone, when a batch is split.
	Follow func(items []*Item) []ledger.Effect
	// Completed, if set, is called after the outcome records of items
	// are committed, items[i]'s at index first+i, in the order of their
	// commits (the fan-out reads its queue from them). Not with a Claimer.
	Completed func(items []*Item, first uint64)
	Logger    *slog.Logger
	Now       func() time.Time
}

// Pipeline processes webhook events.
type Pipeline struct {
	o       Options
	log     *slog.Logger
	fails   *oplog.Limiter // events not handled, by outcome and channel, rate limited
	kick    chan struct{}
	inQueue atomic.Int64 // events in hand: dispatched or claimed, not completed

	claimWake chan struct{}
	copies    ledger.CopyGuard // of the dispatcher
	// The dispatcher's cursor as it last read or moved it, when known
	// (the dispatcher's alone). Without a Claimer, the dispatcher is the
	// only one that moves the cursor, in its own commits: it reads it
	// from the store once, and again only after a dispatch failed,
	// rather than with a query each time it is woken (at every commit of
	// webhooks).
	cursor      uint64
	cursorKnown bool

	events     *prometheus.CounterVec
	drift      *prometheus.CounterVec
	dupMsgs    *prometheus.CounterVec
	skewed     *prometheus.CounterVec
	lag        prometheus.Histogram
	delay      prometheus.Histogram
	queueDepth prometheus.GaugeFunc
	backlog    prometheus.Gauge
}

// New returns a pipeline; Run runs it.
func New(o Options) *Pipeline {
	if o.Log == nil {
		o.Log = ledger.NewWriter(o.Ledger, o.Sealer, o.Logger)
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.ClockThreshold <= 0 {
		o.ClockThreshold = 2 * time.Second
	}
	if o.DedupHorizon <= 0 {
		o.DedupHorizon = 7 * 24 * time.Hour
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Owner == "" {
		o.Owner = fmt.Sprintf("p-%x", rand.Uint64())
	}
	if o.ClaimFor <= 0 {
		o.ClaimFor = 15 * time.Second
	}
	p := &Pipeline{o: o, log: o.Logger, fails: oplog.NewLimiter(o.Logger, oplog.Every), kick: make(chan struct{}, 1), claimWake: make(chan struct{}, 1)}
	p.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "pipeline_events_total",
		Help: "Webhook events by channel, type and outcome (processed, failed, duplicate, quarantined, unknown, standby, unknown_mode, foreign, held, dummy, held_for_human).",
	}, []string{"channel", "type", "outcome"})
	p.drift = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "pipeline_schema_drift_total",
		Help: "Events with fields, enum values or nested types that the specification does not have, by channel (first deliveries only).",
	}, []string{"channel"})
	p.dupMsgs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "pipeline_duplicate_message_ids_total",
		Help: "Message events whose LINE message id was seen before under another event, by channel.",
	}, []string{"channel"})
	p.skewed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "pipeline_clock_skew_total",
		Help: "Events whose timestamp was far from the receive time (and that were not redeliveries) or not a time at all, by channel (first deliveries only).",
	}, []string{"channel"})
	p.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricPrefix + "pipeline_lag_seconds",
		Help:    "Time from the receipt of a webhook to the recorded outcome of its event.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	p.delay = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricPrefix + "pipeline_delivery_delay_seconds",
		Help:    "LINE's delivery delay: the receipt of a webhook minus its event's timestamp, for first deliveries (not redeliveries, not duplicates).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	p.queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "pipeline_queue_depth",
		Help: "Events queued and not yet completed by this process.",
	}, func() float64 { return float64(p.inQueue.Load()) })
	p.backlog = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricPrefix + "pipeline_backlog_records",
		Help: "Ledger records not yet dispatched to the pipeline, at the last dispatch.",
	})
	for ch := range o.Channels {
		// Zeros from the start: an alert on increase() sees the first one.
		p.dupMsgs.WithLabelValues(ch)
		p.skewed.WithLabelValues(ch)
	}
	return p
}

// Collectors returns the pipeline's metrics.
func (p *Pipeline) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.events, p.drift, p.dupMsgs, p.skewed, p.lag, p.delay, p.queueDepth, p.backlog}
}

// Kick tells the pipeline that new records may be in the ledger.
func (p *Pipeline) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Idle reports whether every ledger record has been dispatched (the
// dispatcher also moves past the outcome records the pipeline appends)
// and every queued event completed.
func (p *Pipeline) Idle(ctx context.Context) (bool, error) {
	c, err := p.o.Store.Cursor(ctx)
	if err != nil {
		return false, err
	}
	n, err := p.o.Ledger.Count(ctx)
	if err != nil {
		return false, err
	}
	if c < n {
		return false, nil
	}
	d, err := p.o.Store.QueueDepth(ctx)
	return d == 0, err
}

// Run runs the pipeline until ctx ends, then finishes the events in hand
// and records their outcomes before it returns.
func (p *Pipeline) Run(ctx context.Context) error {
	workers := make([]chan *Item, p.o.Workers)
	done := make(chan *Item, 1024)
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = make(chan *Item, 64)
		wg.Go(func() { p.worker(workers[i], done) })
	}
	compDone := make(chan struct{})
	go func() { defer close(compDone); p.completer(ctx, done) }()
	p.forget(ctx)
	var loops sync.WaitGroup
	if p.o.Claimer != nil {
		loops.Go(func() { p.dispatcher(ctx, nil) })
		loops.Go(func() { p.claimer(ctx, workers) })
		loops.Go(func() { p.renewer(ctx) })
	} else {
		loops.Go(func() {
			// Events queued before a crash or a stop run first, so that
			// each conversation keeps its order; then new ones, straight
			// from the dispatcher.
			p.resume(ctx, workers)
			p.dispatcher(ctx, workers)
		})
	}
	loops.Go(func() { p.forgetter(ctx) })
	loops.Wait()
	for _, w := range workers {
		close(w)
	}
	wg.Wait()
	close(done)
	<-compDone
	p.fails.Flush()
	return nil
}

// forgetter forgets dedup keys past the horizon every hour; Run does it
// once before it takes any event.
func (p *Pipeline) forgetter(ctx context.Context) {
	periodic.Every(ctx, time.Hour, p.forget)
}

func (p *Pipeline) forget(ctx context.Context) {
	if n, err := p.o.Store.ForgetKeys(ctx, p.o.Now().Add(-p.o.DedupHorizon)); err != nil && ctx.Err() == nil {
		p.log.Error("pipeline: forget dedup keys", "err", err)
	} else if n > 0 {
		p.log.Info("pipeline: dedup keys past the horizon forgotten", "keys", n)
	}
}

func (p *Pipeline) linger(ctx context.Context) {
	if p.o.Linger <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(p.o.Linger):
	}
}

func (p *Pipeline) wait(ctx context.Context, kick <-chan struct{}) bool {
	t := time.NewTimer(p.o.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-kick:
	case <-t.C:
	}
	return true
}

// dispatcher moves webhook records from the ledger into the queue, and
// hands their events to the workers (with a Claimer, the claimer does).
func (p *Pipeline) dispatcher(ctx context.Context, workers []chan *Item) {
	for p.wait(ctx, p.kick) {
		p.linger(ctx)
		if p.o.DispatchLease != nil && !p.o.DispatchLease.Held(ctx) {
			continue
		}
		for {
			more, err := p.dispatch(ctx, workers)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Error("pipeline: dispatch", "err", err)
				}
				break
			}
			if !more {
				break
			}
		}
	}
}

// dispatchBatch bounds the records one dispatch reads, and so the time its
// transaction holds the database's write lock, which ingress waits for.
const dispatchBatch = 256

// dispatch queues the events of up to dispatchBatch records past the
// cursor, and reports whether more records wait.
func (p *Pipeline) dispatch(ctx context.Context, workers []chan *Item) (more bool, err error) {
	cursor := p.cursor
	if !p.cursorKnown || p.o.Claimer != nil {
		if cursor, err = p.o.Store.Cursor(ctx); err != nil {
			return false, err
		}
	}
	defer func() {
		// Known again only once read or moved by this dispatch.
		p.cursor, p.cursorKnown = cursor, err == nil
	}()
	count, err := p.o.Ledger.Count(ctx)
	if err != nil {
		return false, err
	}
	p.backlog.Set(float64(count - min(count, cursor)))
	if count <= cursor {
		return false, nil
	}
	end := min(count, cursor+dispatchBatch)
	var recs []ledger.Record
	var leaves [][]byte
	for rec, err := range p.o.Ledger.Records(ctx, cursor, end) {
		if err != nil {
			return false, err
		}
		recs = append(recs, rec)
		leaves = append(leaves, rec.Leaf)
	}
	// A record copied whole from a recent one (someone with write access
	// to the database replaying a webhook) is never acted on; the
	// sequencer refuses to sign it.
	copies, err := p.copies.Copies(ctx, p.o.Ledger, cursor, leaves)
	if err != nil {
		p.log.Error("pipeline: copies of records not checked", "err", err)
	}
	for i, rec := range recs {
		if orig, ok := copies[rec.Index]; ok {
			p.log.Error("pipeline: a record copied from an earlier one is not acted on", "record", rec.Index, "copy_of", orig)
			recs[i].Payload = nil
		}
	}
	// Decoding and validation are the costly part: split on all cores but
	// one, which stays with ingress, keeping the records' order.
	parts := make([][]*Item, max(1, runtime.GOMAXPROCS(0)-1))
	errs := make([]error, len(parts))
	per := (len(recs) + len(parts) - 1) / len(parts)
	var wg sync.WaitGroup
	for i := range parts {
		lo, hi := min(i*per, len(recs)), min((i+1)*per, len(recs))
		wg.Go(func() {
			for _, rec := range recs[lo:hi] {
				items, err := p.split(rec)
				if err != nil {
					errs[i] = err
					return
				}
				parts[i] = append(parts[i], items...)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// The keys could not be read: nothing is queued, and the cursor
		// stays, so that the records are split again once they can be.
		return false, err
	}
	items := slices.Concat(parts...)
	// Alone on its database (SQLite, one writer), queueing shares the
	// ledger writer's commits with the webhooks being acknowledged. With
	// replicas on PostgreSQL, which runs transactions side by side, it is
	// a transaction of its own: in the writer's, its many statements
	// would hold the log's append lock, which every replica's
	// acknowledgements wait for.
	if p.o.Claimer != nil {
		err = p.o.Store.Enqueue(ctx, end, items, p.o.Now())
	} else {
		_, err = p.o.Log.Commit(ctx, nil, Enqueue{Next: end, Items: items, Now: p.o.Now()})
	}
	if err != nil {
		return false, fmt.Errorf("enqueue: %w", err)
	}
	cursor = end
	if workers == nil {
		p.claimKick()
		return end < count, nil
	}
	p.inQueue.Add(int64(len(items)))
	for _, it := range items {
		if !p.route(ctx, workers, it) {
			return false, ctx.Err()
		}
	}
	return end < count, nil
}

// split turns a webhook record into queue items, one per event, each
// judged on its own. Its only error is a payload whose keys could not be
// read (ledger.ErrUnavailable): the record is split again later.
func (p *Pipeline) split(rec ledger.Record) ([]*Item, error) {
	var leaf ledger.Leaf
	if rec.Leaf == nil || leaf.UnmarshalBinary(rec.Leaf) != nil || leaf.Kind != ledger.KindWebhook || rec.Payload == nil {
		return nil, nil
	}
	payload, err := ledger.OpenPayload(context.Background(), p.o.Sealer, rec)
	if errors.Is(err, ledger.ErrUnavailable) {
		return nil, fmt.Errorf("record %d: %w", rec.Index, err)
	}
	if err != nil {
		// Its data key was destroyed since it was appended, or the key
		// encryption key is wrong: nothing can be done with it.
		p.log.Error("pipeline: unreadable payload", "record", rec.Index, "err", err)
		return nil, nil
	}
	metaJSON, body, err := record.SplitPayload(payload)
	if err != nil {
		p.log.Error("pipeline: undecodable payload", "record", rec.Index, "err", err)
		return nil, nil
	}
	// Only what the pipeline needs of the metadata: decoding the whole
	// header map for every event is a cost ingress pays for nothing.
	var meta struct {
		Channel    string `json:"channel"`
		ReceivedMs int64  `json:"received_ms"`
		Headers    struct {
			DryRun []string `json:"X-Line-Dry-Run"`
		} `json:"headers"`
	}
	if err := json.Unmarshal(metaJSON, &meta); err != nil {
		p.log.Error("pipeline: undecodable payload metadata", "record", rec.Index, "err", err)
		return nil, nil
	}
	pol := p.o.Channels[meta.Channel]
	// The records that follow from this one keep its retention class.
	base := Item{Record: rec.Index, Channel: meta.Channel, Retention: leaf.Retention, ReceivedMs: meta.ReceivedMs}
	if len(meta.Headers.DryRun) > 0 {
		base.Header = map[string]string{"X-Line-Dry-Run": meta.Headers.DryRun[0]}
	}
	cb, err := line.ParseCallback(body)
	if err != nil {
		it := base
		it.Key, it.Index, it.Type = fmt.Sprintf("record:%d", rec.Index), -1, "(body)"
		it.Outcome, it.Reason = OutcomeQuarantined, err.Error()
		return []*Item{&it}, nil
	}
	base.Destination = cb.Destination
	// The destination is judged apart from the events: a malformed or
	// missing one is flagged on each, one naming another bot makes them
	// all foreign.
	var bodyFlags []string
	for _, pr := range cb.Problems {
		bodyFlags = append(bodyFlags, pr.Flag())
	}
	foreign := pol.BotUserID != "" && cb.Destination != "" && cb.Destination != pol.BotUserID
	if foreign {
		bodyFlags = append(bodyFlags, "foreign:destination")
	}
	now := p.o.Now()
	items := make([]*Item, 0, len(cb.Events))
	for i, raw := range cb.Events {
		e := line.DecodeEvent(raw)
		it := base
		it.Index, it.Event, it.Type = i, raw, e.Type
		it.Key = e.DedupKey()
		it.Conversation = e.Conversation()
		it.Subjects = e.Subjects()
		if e.Message != nil && e.Message.ID != "" && e.Type == "message" {
			it.MessageKey = "msg:" + meta.Channel + ":" + e.Message.ID
		}
		it.Flags = slices.Clone(bodyFlags)
		p.judge(&it, e, pol, foreign, now)
		it.ev = e
		items = append(items, &it)
	}
	return items, nil
}

// judge sets an item's outcome before dedup: what the event is on its own
// (foreign: its webhook's destination names another bot), at now. Each
// flag names its field.
func (p *Pipeline) judge(it *Item, e *line.Event, pol ChannelPolicy, foreign bool, now time.Time) {
	for _, pr := range e.Problems {
		if pr.Kind == line.Drift || pr.Kind == line.Legacy {
			it.Flags = append(it.Flags, pr.Flag())
		}
	}
	// The clock (of an event whose timestamp is an integer): a timestamp
	// of 0 or below is no time at all; one older than the dedup horizon
	// may be a replay of an event whose key is forgotten, redelivered or
	// not. In milliseconds: a Duration overflows on absurd timestamps.
	var skew string
	stale := false
	if !e.Malformed() {
		if e.Timestamp <= 0 {
			skew = fmt.Sprintf("timestamp %d is not a time", e.Timestamp)
		} else {
			d := it.ReceivedMs - e.Timestamp
			if !e.Redelivery() {
				it.DelayMs = max(d, 0) + 1 // 0: not known
			}
			if !e.Redelivery() && max(d, -d) > p.o.ClockThreshold.Milliseconds() {
				skew = fmt.Sprintf("timestamp %d ms from receipt, beyond %v, not a redelivery", d, p.o.ClockThreshold)
			}
			stale = e.Timestamp < now.Add(-p.o.DedupHorizon).UnixMilli()
		}
		if skew != "" {
			it.Flags = append(it.Flags, "clock_skew:timestamp")
		}
	}
	switch {
	case e.VerifyDummy():
		// Before validity: the 2019 Verify dummies lack fields (mode).
		it.Outcome, it.Reason = OutcomeDummy, "the console's Verify dummy event: not answered"
	case foreign:
		it.Outcome, it.Reason = OutcomeForeign, fmt.Sprintf("destination %s is not this channel's bot %s: not answered", it.Destination, pol.BotUserID)
	case e.Malformed():
		it.Outcome, it.Reason = OutcomeQuarantined, e.Reasons(line.Malformed)
	case e.Unknown():
		it.Outcome, it.Reason = OutcomeUnknown, e.Reasons(line.Unknown)
	case stale:
		it.Outcome, it.Reason = OutcomeHeld, fmt.Sprintf("timestamp %d is older than the dedup horizon (%v): a replay is never acted on", e.Timestamp, p.o.DedupHorizon)
	case e.Drift() && pol.QuarantineDrift:
		it.Outcome, it.Reason = OutcomeQuarantined, e.Reasons(line.Drift)
	case e.Standby():
		it.Outcome, it.Reason = OutcomeStandby, "mode standby: not answered"
	case !e.Active():
		it.Outcome, it.Reason = OutcomeUnknownMode, fmt.Sprintf("mode %q is not active: not answered", e.Mode)
	case skew != "" && pol.HoldSkewed:
		it.Outcome, it.Reason = OutcomeHeld, skew
	default:
		it.Outcome = OutcomeProcess
		if e.Drift() {
			it.Reason = e.Reasons(line.Drift)
		}
	}
}

// route hands an item to its worker: each conversation always to the same
// one, so that its events are handled in order.
func (p *Pipeline) route(ctx context.Context, workers []chan *Item, it *Item) bool {
	h := fnv.New32a()
	if it.Conversation != "" {
		h.Write([]byte(it.Conversation))
	} else {
		h.Write([]byte(it.Key))
	}
	select {
	case workers[h.Sum32()%uint32(len(workers))] <- it:
		return true
	case <-ctx.Done():
		return false
	}
}

// resume hands the items left in the queue by an earlier run to the
// workers, with their events read back from the ledger.
func (p *Pipeline) resume(ctx context.Context, workers []chan *Item) {
	var after uint64
	for ctx.Err() == nil {
		items, err := p.o.Store.Pending(ctx, after, 1024)
		if err != nil {
			p.log.Error("pipeline: read queue", "err", err)
			// Wait a poll interval before the next try: Linger may be
			// zero, and a failing store must not be asked in a loop.
			p.wait(ctx, nil)
			continue
		}
		if len(items) == 0 {
			return
		}
		p.inQueue.Add(int64(len(items)))
		for _, it := range items {
			after = it.Seq
			p.loadEvent(ctx, it)
			if !p.route(ctx, workers, it) {
				return
			}
		}
	}
}

// loadEvent reads an item's event back from its webhook record.
func (p *Pipeline) loadEvent(ctx context.Context, it *Item) {
	if it.Index < 0 {
		return
	}
	for rec, err := range p.o.Ledger.Records(ctx, it.Record, it.Record+1) {
		if err != nil || rec.Payload == nil {
			return
		}
		payload, err := ledger.OpenPayload(ctx, p.o.Sealer, rec)
		if err != nil {
			return
		}
		_, body, err := record.DecodePayload(payload)
		if err != nil {
			return
		}
		if cb, err := line.ParseCallback(body); err == nil && it.Index < len(cb.Events) {
			it.Event = cb.Events[it.Index]
		}
	}
}

func (p *Pipeline) worker(in <-chan *Item, done chan<- *Item) {
	for it := range in {
		if it.Outcome == OutcomeProcess {
			it.Outcome = OutcomeProcessed
			if p.o.Action != nil {
				e := it.ev
				if e == nil {
					var err error
					if e, err = line.Decode(it.Event); err != nil {
						// The record's payload is gone or unreadable.
						it.Outcome, it.Reason = OutcomeFailed, "event not readable from its record"
						done <- it
						continue
					}
				}
				// The action is not tied to the pipeline's context: an
				// event in hand at shutdown is finished, not abandoned.
				if err := p.o.Action.Handle(context.Background(), it, e); err != nil {
					it.Outcome, it.Reason = OutcomeFailed, err.Error()
				}
			}
		}
		done <- it
	}
}

// completer records outcomes in groups: one transaction appends the
// outcome records and removes their items from the queue.
func (p *Pipeline) completer(ctx context.Context, done <-chan *Item) {
	batch := make([]*Item, 0, 256) // bounded like a dispatch, for the same reason
	for it := range done {
		batch = append(batch[:0], it)
		if p.o.Linger > 0 {
			batch = gather(batch, done, time.After(p.o.Linger))
		} else {
			// What finished while the last commit ran; the writer groups
			// it with everything else committed meanwhile.
			batch = gather(batch, done, closed)
		}
		p.complete(ctx, batch)
	}
}

// closed is a channel that is always ready.
var closed = func() chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// gather adds items from done to batch, up to its capacity, until stop is
// ready or done is closed; what is ready in done is always taken first.
func gather(batch []*Item, done <-chan *Item, stop <-chan time.Time) []*Item {
	for len(batch) < cap(batch) {
		select {
		case it, ok := <-done:
			if !ok {
				return batch
			}
			batch = append(batch, it)
			continue
		default:
		}
		select {
		case it, ok := <-done:
			if !ok {
				return batch
			}
			batch = append(batch, it)
		case <-stop:
			return batch
		}
	}
	return batch
}

// complete records a batch of outcomes. While the pipeline runs it retries
// a failing store; once it is stopping it tries once, and what fails stays
// queued for the next start.
func (p *Pipeline) complete(ctx context.Context, batch []*Item) {
	now := p.o.Now()
	seqs := make([]uint64, len(batch))
	for i, it := range batch {
		seqs[i] = it.Seq
	}
	for attempt := 1; ; attempt++ {
		// Sealed anew at every attempt: a store refuses a record whose
		// data key another process destroyed meanwhile.
		entries, err := p.outcomeEntries(batch, now)
		if err == nil && p.o.Claimer != nil {
			err = p.completeClaimed(context.Background(), batch, seqs, entries)
		} else if err == nil {
			var first uint64
			first, err = p.o.Log.Commit(context.Background(), entries, append([]ledger.Effect{Dequeue{Seqs: seqs}}, p.follow(batch)...)...)
			if err == nil && p.o.Completed != nil {
				p.o.Completed(batch, first)
			}
		}
		if err == nil {
			break
		}
		p.log.Error("pipeline: record outcomes", "events", len(batch), "err", err)
		if ctx.Err() != nil {
			return // still queued: they run again at the next start
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 5*time.Second)):
		}
	}
	p.inQueue.Add(-int64(len(batch)))
	if p.o.Claimer != nil {
		p.claimKick() // room, and the next events of these conversations
	}
	for _, it := range batch {
		typ := it.Type
		if !knownType(typ) {
			typ = "unknown"
		}
		p.events.WithLabelValues(it.Channel, typ, string(it.Outcome)).Inc()
		p.logOutcome(it)
		if it.Outcome != OutcomeDuplicate {
			// Events, once each: not every field, not redeliveries.
			if hasFlag(it.Flags, "drift") {
				p.drift.WithLabelValues(it.Channel).Inc()
			}
			if hasFlag(it.Flags, "duplicate_message_id") {
				p.dupMsgs.WithLabelValues(it.Channel).Inc()
			}
			if hasFlag(it.Flags, "clock_skew") {
				p.skewed.WithLabelValues(it.Channel).Inc()
			}
			if it.DelayMs > 0 {
				p.delay.Observe(float64(it.DelayMs-1) / 1000)
			}
		}
		if it.ReceivedMs > 0 {
			p.lag.Observe(float64(now.UnixMilli()-it.ReceivedMs) / 1000)
		}
	}
}

// logOutcome logs, rate limited by outcome and channel, the events that
// were not handled as they should have been: failed, quarantined, held, or
// sent to another bot. The reason is the outcome record's, which never
// carries message text.
func (p *Pipeline) logOutcome(it *Item) {
	level, msg := slog.LevelWarn, ""
	switch it.Outcome {
	case OutcomeFailed:
		level, msg = slog.LevelError, "event failed: its rules or sends did not complete"
	case OutcomeQuarantined:
		msg = "event quarantined, not acted on: malformed, or drift under drift_policy: quarantine"
	case OutcomeHeld:
		msg = "event held, not acted on: older than the dedup horizon, or far from its receipt under clock_skew: hold"
	case OutcomeForeign:
		msg = "event not answered: the webhook's destination is not the channel's bot_user_id"
	default:
		return
	}
	p.fails.Log(level, oplog.Key{Class: "event_" + string(it.Outcome), Channel: it.Channel}, msg,
		"type", it.Type, "record", it.Record, "index", it.Index, "event", it.Key, "reason", oplog.Truncate(it.Reason, 300))
}

// follow returns the effects Options.Follow adds to the outcomes of items.
func (p *Pipeline) follow(items []*Item) []ledger.Effect {
	if p.o.Follow == nil {
		return nil
	}
	return p.o.Follow(items)
}

// outcomeEntries builds the outcome records of a batch.
func (p *Pipeline) outcomeEntries(batch []*Item, now time.Time) ([]ledger.Entry, error) {
	recs := make([]ledger.Entry, len(batch))
	for i, it := range batch {
		payload, err := record.Encode(&record.Meta{Channel: it.Channel, ReceivedMs: it.ReceivedMs}, &record.Outcome{
			Record: it.Record, Index: it.Index, Key: it.Key, Type: it.Type,
			Outcome: string(it.Outcome), Reason: it.Reason, Flags: it.Flags, Conversation: it.Conversation,
			ReceivedMs: it.ReceivedMs, DoneMs: now.UnixMilli()})
		if err != nil {
			return nil, err
		}
		recs[i] = ledger.Entry{Kind: ledger.KindEvent, Time: now,
			Channel: it.Channel, Retention: it.Retention, Payload: payload, Subjects: it.Subjects}
	}
	return recs, nil
}

// hasFlag reports whether flags has one of kind: kind itself, or
// "kind:field".
func hasFlag(flags []string, kind string) bool {
	return slices.ContainsFunc(flags, func(f string) bool {
		return f == kind || strings.HasPrefix(f, kind+":")
	})
}

var knownTypes = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range line.EventTypes() {
		m[t] = true
	}
	return m
}()

func knownType(t string) bool { return knownTypes[t] }
