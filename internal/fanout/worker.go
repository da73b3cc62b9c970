package fanout

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/rules"
)

// The breaker's states, as the metric linegate_fanout_breaker_state
// gives them.
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

var breakerNames = []string{"closed", "half_open", "open"}

// maxResponse bounds the answer read from a destination (its size and
// hash are recorded; the rest is not read).
const maxResponse = 1 << 20

// headsPerRound bounds the conversations a worker looks at in one round.
const headsPerRound = 256

// worker delivers one destination's queue: the first queued event of each
// conversation whose retry time has come, up to Options.Concurrency of
// them at once (one, the probe, while the breaker is half-open).
type worker struct {
	f    *Fanout
	d    *Destination
	http *http.Client
	wake chan struct{}

	paused atomic.Bool
	// pauseSets counts SetPaused's changes to paused, so that a read of
	// the stored switch begun before one does not undo it.
	pauseSets atomic.Uint64
	// lingering is when the worker's linger ends (Unix ns, real time, as
	// its timer's): what comes before then waits for the timer.
	lingering atomic.Int64

	// roundMu is held by a round, and by a replay while it queues.
	roundMu sync.Mutex
	s       stream // the events after the cursor (without Options.Table)

	// Requests in flight, which may outlast the round that sent them:
	// their conversations wait for them; slots holds one token a request,
	// Options.Concurrency at most.
	ifMu     sync.Mutex
	inflight map[string]bool
	slots    chan struct{}
	reqs     sync.WaitGroup

	mu        sync.Mutex // the breaker and the last error, read by Status
	state     int
	failures  int // consecutive failed attempts
	opens     int // times the breaker opened since the last success
	openUntil time.Time
	lastError string
	// The times of the last failed attempt and of the last delivered
	// one, zero until there is one: whether last_error is still the news.
	lastErrorAt, lastDeliveredAt time.Time
	depth                        int64
}

func newWorker(f *Fanout, d *Destination) *worker {
	return &worker{f: f, d: d, http: rules.FencedClient(), wake: make(chan struct{}, 1),
		inflight: map[string]bool{}, slots: make(chan struct{}, f.o.Concurrency)}
}

func (w *worker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// handedOver wakes the worker for events the pipeline handed over,
// unless it would not act on them now: while it lingers (its timer wakes
// it), while paused, or while its breaker is open. The pipeline hands
// events over at each of its commits; a wake-up each time, for nothing,
// took the gateway's cores from the acknowledgements.
func (w *worker) handedOver() {
	if w.lingers() || w.paused.Load() || w.waiting(w.f.o.Now()) {
		return
	}
	w.kick()
}

// lingers reports whether the worker waits for its linger's timer.
func (w *worker) lingers() bool { return time.Now().UnixNano() < w.lingering.Load() }

func (w *worker) run(ctx context.Context) {
	f := w.f
	t := time.NewTimer(0)
	defer t.Stop()
	var pauseRead, cursorSaved time.Time
	for {
		select {
		case <-ctx.Done():
			w.reqs.Wait() // each within its timeout, and recorded
			if !f.o.Table {
				w.stop()
			}
			return
		case <-w.wake:
			// New events, a replay, or SetPaused (which sets w.paused
			// itself: the switch need not be read for it). While the
			// worker lingers, they wait for its timer: the pipeline
			// hands events over at every one of its commits, and each
			// would otherwise go in a request of its own.
			if w.lingers() {
				continue
			}
		case <-t.C:
		}
		full, emptied := false, false
		if f.o.Lease == nil || f.o.Lease.Held(ctx) {
			// The switch is set by SetPaused in this process; another
			// replica's is seen within a second.
			if now := f.o.Now(); now.Sub(pauseRead) >= time.Second {
				sets := w.pauseSets.Load()
				if v, err := f.o.Store.Setting(ctx, pauseKey(w.d.Name)); err == nil {
					if w.pauseSets.Load() == sets {
						w.paused.Store(v == "on")
					}
					pauseRead = now
				}
			}
			if !w.paused.Load() && !w.waiting(f.o.Now()) {
				w.roundMu.Lock()
				full, emptied = w.round(ctx)
				w.roundMu.Unlock()
			} else if !f.o.Table {
				// Paused, or its breaker open: a backlog is still read
				// into memory, as far as it has room, so that its queue
				// depth counts those events too.
				w.roundMu.Lock()
				if _, behind, _ := w.s.held(); behind {
					if _, err := w.scan(ctx); err != nil && ctx.Err() == nil {
						f.log.Warn("fanout: read the backlog from the ledger", "destination", w.d.Name, "err", err)
					}
				}
				w.roundMu.Unlock()
			}
			if !f.o.Table && f.o.Now().Sub(cursorSaved) >= time.Second {
				w.saveCursor(ctx)
				cursorSaved = f.o.Now()
			}
		}
		f.m.paused.WithLabelValues(w.d.Name).Set(b2f(w.paused.Load()))
		switch {
		case full:
			t.Reset(0) // more is ready behind what went
		case emptied:
			t.Reset(f.o.Linger) // what arrives meanwhile goes together
			w.lingering.Store(time.Now().Add(f.o.Linger).UnixNano())
		default:
			t.Reset(f.o.Poll)
		}
	}
}

// stop keeps what the destination holds for the next start: its held
// entries go into the table, in order, with the cursor past them, so that
// the next start reads nothing twice (the cursor alone, the first event
// not delivered, may stand behind events that other conversations'
// requests delivered). Failing that, the cursor as it is is saved.
func (w *worker) stop() {
	w.roundMu.Lock()
	defer w.roundMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.spill(ctx, true); err != nil {
		w.f.log.Error("fanout: keep the held events for the next start: they are read again from the ledger then, and some may be delivered twice",
			"destination", w.d.Name, "err", oplog.Truncate(err.Error(), 300))
	}
	w.saveCursor(ctx)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// roundWait is how long a round waits for its requests: one that takes
// longer goes on beside the next rounds, which leave its conversations
// out until it is done, so that a conversation whose requests hang does
// not hold up the others.
const roundWait = 250 * time.Millisecond

// round attempts what is ready: for each conversation whose first queued
// entry's time has come, that entry and the ones queued after it (up to
// Batch, in order, of its retention class and redelivery or not), in
// requests of up to Batch events. It reports whether the requests were
// full (more may be ready behind them), and whether any entry left the
// queue.
func (w *worker) round(ctx context.Context) (full, left bool) {
	f := w.f
	heads, more, err := w.heads(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Error("fanout: read queue", "destination", w.d.Name, "err", err)
		}
		return false, false
	}
	// A conversation with a request in flight waits for it.
	heads = slices.DeleteFunc(heads, func(e *Entry) bool { return w.inFlight(e.Conversation) })
	// The runs: each conversation's entries, in Seq order, up to the
	// first of another class than its head's.
	type run struct {
		key     string
		entries []*Entry
		stopped bool
		split   bool // stopped at an entry of another class
	}
	var runs []*run
	byConv := map[string]*run{}
	now := f.o.Now().UnixMilli()
	for _, e := range heads {
		k := fmt.Sprintf("%s\x00%v", e.Retention, e.Redelivery)
		r, ok := byConv[e.Conversation]
		if !ok {
			// Not ready: none of it; but an entry its destination no
			// longer takes is dropped at once.
			r = &run{key: k, stopped: e.NextMs > now && w.d.stillTakes(e)}
			byConv[e.Conversation] = r
			if !r.stopped {
				runs = append(runs, r)
			}
		}
		if r.stopped || k != r.key {
			r.split = r.split || !r.stopped
			r.stopped = true
			continue
		}
		r.entries = append(r.entries, e)
	}
	// Requests of up to Batch events, each of one class; a conversation's
	// run is never split, so that its order holds whatever the outcome
	// of each request.
	// A conversation whose first event failed before goes in a request of
	// its own: a destination that refuses one conversation's events
	// (whatever the reason) fails only that conversation's requests, not
	// the others' that would ride with it.
	var batches [][]*Entry
	filling := map[string]int{}
	for _, r := range runs {
		if r.entries[0].Attempts > 0 {
			batches = append(batches, r.entries)
			continue
		}
		i, ok := filling[r.key]
		if !ok || len(batches[i])+len(r.entries) > f.o.Batch {
			batches = append(batches, nil)
			i = len(batches) - 1
			filling[r.key] = i
		}
		batches[i] = append(batches[i], r.entries...)
	}
	// Requests with events not tried before first: the half-open
	// breaker's probe is one of them when there is one, since a
	// conversation that failed before may be refused for its own sake.
	// Then those of conversations that failed before, in the order they
	// came due (as Store.Heads picks them): when the slots are fewer
	// than the conversations due, one that came due while others were
	// retried goes before those retried again since, not behind every
	// conversation queued ahead of it.
	slices.SortStableFunc(batches, func(a, b []*Entry) int {
		fa, fb := fresh(a), fresh(b)
		if c := cmp.Compare(b2i(!fa), b2i(!fb)); c != 0 || fa {
			return c
		}
		return cmp.Compare(a[0].NextMs, b[0].NextMs)
	})
	// More may be ready than this round saw: as many conversations as
	// it reads, a conversation with as many entries as it takes, or one
	// whose next entries are of another class.
	full = len(byConv) >= headsPerRound || more
	for _, r := range byConv {
		if len(r.entries) >= f.o.Batch || r.split {
			full = true
		}
	}
	var delivered atomic.Bool
	var mine sync.WaitGroup
launch:
	for _, b := range batches {
		// A pause stops the round's requests not yet sent.
		if ctx.Err() != nil || w.paused.Load() || !w.allow(f.o.Now()) {
			break
		}
		if w.probing() {
			// Half-open: the probe alone, once nothing else is in
			// flight, and the next only once it has closed the breaker.
			if len(w.slots) > 0 {
				break
			}
			if w.safeAttempt(ctx, b) {
				delivered.Store(true)
			}
			continue
		}
		// Closed: several batches at once; each conversation still has
		// its entries in one request in flight at most.
		select {
		case w.slots <- struct{}{}:
		default:
			full = true // every slot is taken: the rest waits for one
			break launch
		}
		w.begin(b)
		mine.Go(func() {
			defer w.end(b)
			if w.safeAttempt(ctx, b) {
				delivered.Store(true)
			}
		})
	}
	waitAtMost(&mine, roundWait)
	left = delivered.Load()
	return full && (left || more), left
}

// begin marks a batch's conversations in flight (a slot taken).
func (w *worker) begin(b []*Entry) {
	w.ifMu.Lock()
	for _, e := range b {
		w.inflight[e.Conversation] = true
	}
	w.ifMu.Unlock()
	w.reqs.Add(1)
}

// end marks a batch's request done, frees its slot, and wakes the worker
// for its conversations' next events.
func (w *worker) end(b []*Entry) {
	w.ifMu.Lock()
	for _, e := range b {
		delete(w.inflight, e.Conversation)
	}
	w.ifMu.Unlock()
	<-w.slots
	w.reqs.Done()
	w.kick()
}

// inFlight reports whether conversation has a request in flight.
func (w *worker) inFlight(conversation string) bool {
	w.ifMu.Lock()
	defer w.ifMu.Unlock()
	return w.inflight[conversation]
}

// waitAtMost waits for wg, or d.
func waitAtMost(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// heads returns the entries a round looks at: the table's (Store.Heads)
// and, without Options.Table, the held ones of the conversations that
// have none there, after reading the next chunk of a backlog and moving
// into the table the held entries that must follow what is there; more
// reports that more of a backlog is to be read.
func (w *worker) heads(ctx context.Context) (heads []*Entry, more bool, err error) {
	f, s := w.f, &w.s
	if f.o.Table {
		heads, err = f.o.Store.Heads(ctx, w.d.Name, f.o.Now().UnixMilli(), headsPerRound, f.o.Batch)
		return heads, false, err
	}
	if _, behind, _ := s.held(); behind {
		if more, err = w.scan(ctx); err != nil {
			return nil, false, fmt.Errorf("read the backlog from the ledger: %w", err)
		}
	}
	if err := w.spill(ctx, false); err != nil {
		return nil, false, fmt.Errorf("move events into the queue table: %w", err)
	}
	s.mu.Lock()
	inTable := len(s.queued) > 0
	s.mu.Unlock()
	var skip map[string]bool
	if inTable {
		if heads, err = f.o.Store.Heads(ctx, w.d.Name, f.o.Now().UnixMilli(), headsPerRound, f.o.Batch); err != nil {
			return nil, false, err
		}
		if len(heads) == 0 {
			// The table is empty: every conversation's events are held
			// in order again (spill and replay run under roundMu, as
			// this does).
			s.mu.Lock()
			clear(s.queued)
			s.mu.Unlock()
		}
		// The table's conversations that failed before, waiting for a
		// retry or due again, do not take the held ones' place in the
		// round (the held ones were never tried, and the round's
		// requests carry those first): however many the destination
		// refuses, the others go on.
		skip = map[string]bool{}
		fresh := 0
		for _, e := range heads {
			if !skip[e.Conversation] && e.Attempts == 0 {
				fresh++
			}
			skip[e.Conversation] = true
		}
		return append(heads, s.memHeads(max(0, headsPerRound-fresh), f.o.Batch, skip)...), more, nil
	}
	return append(heads, s.memHeads(headsPerRound, f.o.Batch, skip)...), more, nil
}

// probing reports whether the breaker is half-open.
func (w *worker) probing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state == breakerHalfOpen
}

// takesSoon reports whether the worker takes the events handed over to it
// as they come: it is not paused, and its breaker is not open.
func (w *worker) takesSoon(now time.Time) bool {
	return !w.paused.Load() && !w.waiting(now)
}

// waiting reports whether the breaker is open and its cooldown not over:
// the queue need not even be read.
func (w *worker) waiting(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state == breakerOpen && now.Before(w.openUntil)
}

// allow reports whether the breaker lets an attempt through at now: always
// when closed; when open, none until its cooldown has passed, then one
// probe (half-open).
func (w *worker) allow(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case breakerOpen:
		if now.Before(w.openUntil) {
			return false
		}
		w.setState(breakerHalfOpen)
		return true
	case breakerHalfOpen:
		return true // round makes the probe alone
	}
	return true
}

// result feeds an attempt's result to the breaker. A failed attempt
// counts toward opening it (counts) unless the destination answered it
// with a refusal (4xx): of a retry (a conversation the destination
// refuses, retried, says nothing new of it), or of new events from a
// destination that took others within BreakerMaxCooldown (it is up, and
// refuses these for their own sake); nor does a 5xx answer to a retry,
// from a destination that took others within BreakerCooldown (deliver). Counted, such conversations
// would open the breaker and fill its probes, and keep the destination
// from all the others; a destination that refuses everything (a wrong
// secret), or fails everything, still opens it. Such a failure still
// sends a half-open breaker back to open, for as long as before.
func (w *worker) result(ok, counts bool, errText string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		w.failures, w.opens = 0, 0
		w.lastDeliveredAt = now
		w.setState(breakerClosed)
		return
	}
	w.lastError, w.lastErrorAt = errText, now
	if !counts {
		if w.state == breakerHalfOpen {
			w.openUntil = now.Add(w.cooldown())
			w.setState(breakerOpen)
		}
		return
	}
	w.failures++
	if w.state == breakerHalfOpen || w.failures >= w.f.o.BreakerFailures {
		if w.state != breakerOpen {
			// Opened anew (a failed probe, or the first time): each
			// opening since the last success waits twice as long as the
			// one before, up to BreakerMaxCooldown, so that a dead
			// destination costs a bounded number of attempts (and
			// records) a day.
			w.opens++
			w.f.log.Warn("fanout: destination failing: breaker open", "destination", w.d.Name,
				"failures", w.failures, "retry_in", w.cooldown().String(), "err", errText)
		}
		w.openUntil = now.Add(w.cooldown())
		w.setState(breakerOpen)
	}
}

// deliveredWithin reports whether an attempt was delivered within d
// before now.
func (w *worker) deliveredWithin(now time.Time, d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.lastDeliveredAt.IsZero() && now.Sub(w.lastDeliveredAt) < d
}

// fresh reports whether none of es was tried before: a request of
// conversations that never failed. One of a conversation that failed is
// not, with events that came since it failed (never tried themselves).
func fresh(es []*Entry) bool {
	return !slices.ContainsFunc(es, func(e *Entry) bool { return e.Attempts > 0 })
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// cooldown is how long the breaker stays open after its opens-th opening
// since the last success: BreakerCooldown doubled at each one, up to
// BreakerMaxCooldown (w.mu held).
func (w *worker) cooldown() time.Duration {
	o := w.f.o
	d := o.BreakerCooldown
	for i := 1; i < w.opens && d < o.BreakerMaxCooldown; i++ {
		d *= 2
	}
	return min(d, max(o.BreakerMaxCooldown, o.BreakerCooldown))
}

// setState sets the breaker's state (w.mu held).
func (w *worker) setState(s int) {
	w.state = s
	w.f.m.breaker.WithLabelValues(w.d.Name).Set(float64(s))
}

// backoff returns the wait before the next attempt of an entry that has
// failed attempts times: BaseDelay doubled each time up to MaxDelay,
// jittered between half and all of it.
func (w *worker) backoff(attempts int) time.Duration {
	o := w.f.o
	d := o.BaseDelay
	for i := 1; i < attempts && d < o.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, o.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

// safeAttempt is attempt, with a panic (a fault of linegate's in reading
// or building what the batch carries) kept to this destination: it is
// logged and counted, the batch's entries stay queued as they were, and
// it counts as a failed attempt for the breaker, so that the destination
// backs off. Ingress, the other destinations and linegate's own rules go
// on; nothing is dropped, for the fault to be fixed and the events
// delivered after.
func (w *worker) safeAttempt(ctx context.Context, batch []*Entry) (left bool) {
	defer func() {
		if v := recover(); v != nil {
			f := w.f
			f.m.internalErrors.WithLabelValues(w.d.Name).Inc()
			f.log.Error("fanout: internal error delivering to a destination: its events stay queued", "destination", w.d.Name,
				"record", batch[0].Record, "events", len(batch), "panic", oplog.Truncate(fmt.Sprint(v), 200), "stack", oplog.Truncate(string(debug.Stack()), 2000))
			w.result(false, true, "internal error", f.o.Now())
			left = false
		}
	}()
	return w.attempt(ctx, batch)
}

// attempt delivers a batch of entries (the heads of distinct
// conversations, of one retention class, all redeliveries or none) in one
// request, records the attempt with its effects on the queue, and reports
// whether any entry left the queue. An entry whose event cannot be read
// any more is dropped with a record of its own.
func (w *worker) attempt(ctx context.Context, batch []*Entry) bool {
	f := w.f
	type loaded struct {
		e     *Entry
		dest  string
		event json.RawMessage
	}
	var ok []loaded
	left := false
	// Conversations with an entry that stays queued in this attempt:
	// their later entries in the batch stay too, so that none overtakes
	// it (the ones before it go).
	stopped := map[string]bool{}
	convDest := map[string]string{}
	for _, e := range batch {
		if stopped[e.Conversation] {
			continue
		}
		var dest string
		var event json.RawMessage
		var err error
		if w.d.stillTakes(e) {
			dest, event, err = w.load(ctx, e)
		} else {
			err = errNotTaken
		}
		switch {
		case errors.Is(err, ledger.ErrUnavailable):
			f.log.Warn("fanout: event not readable now: retried later", "destination", w.d.Name, "record", e.Record, "err", err)
			stopped[e.Conversation] = true
		case err != nil:
			// The record's payload is gone (retention, a destroyed key)
			// or not an event: nothing can ever be delivered; or the
			// destination, as configured now, no longer takes it.
			rec := w.newRecord([]*Entry{e}, f.o.Now())
			rec.Outcome, rec.Reason = "dropped", err.Error()
			f.m.attempts.WithLabelValues(w.d.Name, "dropped").Inc()
			if w.commitDone(rec, []*Entry{e}) {
				left = true
			} else {
				stopped[e.Conversation] = true
			}
		case differs(convDest, e.Conversation, dest):
			// Another body destination than the conversation's entries
			// before it in this batch (foreign events): it waits for the
			// next round, and the ones after it too, rather than go in a
			// request of its own that could arrive first.
			stopped[e.Conversation] = true
		default:
			if len(e.Subjects) == 0 && e.At > 0 {
				// Read back from an outcome record stored as it is
				// (without sealing, whose keys name the subjects).
				e.Subjects = line.DecodeEvent(event).Subjects()
			}
			convDest[e.Conversation] = dest
			ok = append(ok, loaded{e, dest, event})
		}
	}
	// Conversations whose request failed in this attempt: their entries
	// in a later request of it stay queued.
	held := map[string]bool{}
	// One request per body destination (the bot's user id: the same for
	// every event of a channel but foreign ones), one after the other.
	for len(ok) > 0 {
		dest := ok[0].dest
		var es []*Entry
		var events []json.RawMessage
		rest := ok[:0]
		for _, l := range ok {
			switch {
			case held[l.e.Conversation]:
			case l.dest == dest:
				es, events = append(es, l.e), append(events, l.event)
			default:
				rest = append(rest, l)
			}
		}
		ok = rest
		if len(es) == 0 {
			continue
		}
		if w.deliver(ctx, dest, es, events, held) {
			left = true
		}
	}
	return left
}

// errNotTaken drops an entry queued under an earlier configuration of its
// destination (Destination.stillTakes).
var errNotTaken = errors.New("the destination's channel or filters, as configured now, do not take this event")

// differs reports whether conversation has a destination in m other than
// dest.
func differs(m map[string]string, conversation, dest string) bool {
	d, ok := m[conversation]
	return ok && d != dest
}

// newRecord starts the record of an attempt at entries.
func (w *worker) newRecord(es []*Entry, start time.Time) *record.Outbound {
	e := es[0]
	var subj []string
	for _, x := range es {
		subj = append(subj, x.Subjects...)
	}
	rec := &record.Outbound{EventKey: e.Key, Record: e.Record, Endpoint: Endpoint, Destination: w.d.Name,
		URL: w.d.URL, SecretID: w.d.SecretID, Redelivery: e.Redelivery, Subj: record.SortedSubjects(subj),
		Extra: map[string]string{"attempt": fmt.Sprint(e.Attempts + 1)}}
	if len(es) > 1 {
		for _, x := range es {
			rec.Events = append(rec.Events, record.DeliveredEvent{Key: x.Key, Record: x.Record, Index: x.Index, Attempt: x.Attempts + 1})
		}
	}
	return rec
}

// deliver sends events (of entries es) in one request, and records it. It
// reports whether any entry left the queue, and adds to held the
// conversations of the entries that stay queued.
func (w *worker) deliver(ctx context.Context, dest string, es []*Entry, events []json.RawMessage, held map[string]bool) bool {
	f := w.f
	start := f.o.Now()
	rec := w.newRecord(es, start)
	body, err := BuildBody(dest, events, w.d.OwnsReplyToken, es[0].Redelivery)
	if err != nil {
		// An event that is not a JSON object: LINE's never are, but the
		// ledger keeps what came; each is dropped alone.
		if len(es) > 1 {
			left := false
			for i := range es {
				if !held[es[i].Conversation] && w.deliver(ctx, dest, es[i:i+1], events[i:i+1], held) {
					left = true
				}
			}
			return left
		}
		rec.Outcome, rec.Reason = "dropped", err.Error()
		f.m.attempts.WithLabelValues(w.d.Name, "dropped").Inc()
		if w.commitDone(rec, es) {
			return true
		}
		held[es[0].Conversation] = true
		return false
	}
	// The body's size and hash, not the body: the webhook records hold
	// the events, and BuildBody rebuilds the body from them byte for
	// byte.
	bodySum := sha256.Sum256(body)
	rec.RequestBytes, rec.RequestSHA256 = int64(len(body)), hex.EncodeToString(bodySum[:])
	status, size, sum, errText := w.post(ctx, body)
	lat := f.o.Now().Sub(start)
	rec.Status, rec.Error, rec.LatencyMs = status, errText, float64(lat)/float64(time.Millisecond)
	rec.ResponseBytes, rec.ResponseSHA256 = size, sum
	f.m.latency.WithLabelValues(w.d.Name).Observe(lat.Seconds())
	ok := errText == "" && status/100 == 2
	// A 4xx answer (but 408 and 429) refuses what the request carried,
	// from a destination that is up.
	refused := errText == "" && status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
	serverError := errText == "" && status/100 == 5
	if !ok && errText == "" {
		errText = fmt.Sprintf("answered %d", status)
	}
	now, isFresh := f.o.Now(), fresh(es)
	counts := true
	switch {
	case refused:
		counts = isFresh && !w.deliveredWithin(now, f.o.BreakerMaxCooldown)
	case serverError && !isFresh:
		// A 5xx answer to a retry, from a destination that delivered
		// others within BreakerCooldown: it is up, and fails these for
		// their own sake (a conversation it cannot take, whatever it
		// answers). A destination that goes down fails new events too,
		// and its retries count once it has delivered nothing for a
		// cooldown.
		counts = !w.deliveredWithin(now, f.o.BreakerCooldown)
	}
	w.result(ok, counts, errText, now)
	if ok {
		rec.Outcome = "delivered"
		f.m.attempts.WithLabelValues(w.d.Name, "delivered").Add(float64(len(es)))
		if w.commitDone(rec, es) {
			return true
		}
	} else {
		rec.Outcome, rec.Reason = "failed", errText
		// Table entries wait for their next try where they are; held
		// ones move into the table with it, and their conversations'
		// later events follow them there.
		var effects []ledger.Effect
		var retry []*Entry
		// A refusal of a request of several conversations never tried
		// may be of one of them: each is tried again at once, in a
		// request of its own, so that the others go through without
		// waiting for a retry. (With the breaker open, they wait for it.)
		split := refused && isFresh && slices.ContainsFunc(es, func(e *Entry) bool { return e.Conversation != es[0].Conversation })
		for _, e := range es {
			next := now.UnixMilli()
			if !split {
				next = now.Add(w.backoff(e.Attempts + 1)).UnixMilli()
			}
			if e.mem {
				c := *e
				c.Attempts, c.NextMs, c.mem = e.Attempts+1, next, false
				retry = append(retry, &c)
				continue
			}
			effects = append(effects, Retry{Seq: e.Seq, Attempts: e.Attempts + 1, NextMs: next})
		}
		f.m.attempts.WithLabelValues(w.d.Name, "failed").Add(float64(len(es)))
		more, done := w.queueEffects(es, retry)
		if w.commit(rec, es, append(effects, more...)...) {
			done()
		}
	}
	for _, e := range es {
		held[e.Conversation] = true
	}
	return false
}

// commitDone records an attempt after which the entries es leave the
// queue (delivered, or dropped), and reports whether it was recorded.
func (w *worker) commitDone(rec *record.Outbound, es []*Entry) bool {
	var seqs []uint64
	for _, e := range es {
		if !e.mem {
			seqs = append(seqs, e.Seq)
		}
	}
	var effects []ledger.Effect
	if len(seqs) > 0 {
		effects = append(effects, Delivered{Seqs: seqs})
	}
	more, done := w.queueEffects(es, nil)
	if !w.commit(rec, es, append(effects, more...)...) {
		return false
	}
	done()
	return true
}

// commit records an attempt with its effects on the queue, and reports
// whether it was recorded.
func (w *worker) commit(rec *record.Outbound, es []*Entry, effects ...ledger.Effect) bool {
	f := w.f
	e := es[0]
	at := f.o.Now()
	payload, err := record.Encode(&record.Meta{Channel: e.Channel, ReceivedMs: at.UnixMilli()}, rec)
	if err != nil {
		f.log.Error("fanout: encode attempt record", "destination", w.d.Name, "err", err)
		return false
	}
	entry := ledger.Entry{Kind: ledger.KindOutbound, Time: at, Channel: e.Channel, Retention: e.Retention,
		Payload: payload, Subjects: rec.Subj}
	// Not tied to the worker's context: an attempt made is recorded, even
	// at shutdown.
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.o.Log.Commit(cctx, []ledger.Entry{entry}, effects...); err != nil {
		// The events stay queued as they were and are delivered again: a
		// destination sees an event at least once, and dedups by
		// webhookEventId as it does LINE's redeliveries.
		f.log.Error("fanout: attempt not recorded: its events are delivered again", "destination", w.d.Name,
			"event", e.Key, "events", len(es), "err", oplog.Truncate(err.Error(), 300))
		return false
	}
	return true
}

// load returns an entry's event, with the body's destination (the bot's
// user id): as the pipeline handed it over, or read back from its webhook
// record.
func (w *worker) load(ctx context.Context, e *Entry) (string, json.RawMessage, error) {
	f := w.f
	if dest, event, ok := f.hand.take(e.Record, e.Index); ok {
		if dest == "" {
			dest = f.o.BotUserIDs[e.Channel]
		}
		return dest, event, nil
	}
	for rec, err := range f.o.Ledger.Records(ctx, e.Record, e.Record+1) {
		if err != nil {
			return "", nil, fmt.Errorf("%w: read record %d: %v", ledger.ErrUnavailable, e.Record, err)
		}
		if rec.Payload == nil {
			return "", nil, fmt.Errorf("the payload of record %d is deleted", e.Record)
		}
		payload, err := ledger.OpenPayload(ctx, f.o.Sealer, rec)
		if errors.Is(err, ledger.ErrUnavailable) {
			return "", nil, err
		}
		if err != nil {
			return "", nil, fmt.Errorf("the payload of record %d cannot be opened: %v", e.Record, err)
		}
		_, body, err := record.DecodePayload(payload)
		if err != nil {
			return "", nil, fmt.Errorf("record %d: %v", e.Record, err)
		}
		cb, err := line.ParseCallback(body)
		if err != nil || e.Index >= len(cb.Events) {
			return "", nil, fmt.Errorf("record %d has no event %d", e.Record, e.Index)
		}
		dest := cb.Destination
		if dest == "" {
			dest = f.o.BotUserIDs[e.Channel]
		}
		return dest, cb.Events[e.Index], nil
	}
	return "", nil, fmt.Errorf("record %d not found", e.Record)
}

// post sends a body and returns the answer's status, size and SHA-256, or
// an error text (never the body, never the secret).
func (w *worker) post(ctx context.Context, body []byte) (status int, size int64, sum, errText string) {
	// A request sent finishes, within its timeout, even when linegate is
	// stopping: its answer is recorded, rather than the events sent again
	// after the next start.
	ctx, cancel := context.WithTimeout(rules.WithFence(context.WithoutCancel(ctx), w.d.u, w.d.loopback), w.d.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", w.d.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", "request not built"
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "linegate-fanout")
	req.Header.Set(line.SignatureHeader, line.Sign(w.d.Secret, body))
	resp, err := w.http.Do(req)
	if err != nil {
		switch {
		case rules.OutsideFence(err):
			return 0, 0, "", "refused: outside the destination's fence"
		case ctx.Err() != nil:
			return 0, 0, "", fmt.Sprintf("timed out after %v", w.d.Timeout)
		}
		return 0, 0, "", "no answer: connection failed"
	}
	defer resp.Body.Close()
	h := sha256.New()
	// io.Copy would allocate 32 KiB for every answer (neither side has a
	// ReadFrom or WriteTo), which is most often a few bytes: garbage
	// beside the acknowledgements, a request each.
	buf := copyBufs.Get().(*[4096]byte)
	n, _ := io.CopyBuffer(h, io.LimitReader(resp.Body, maxResponse), buf[:])
	copyBufs.Put(buf)
	return resp.StatusCode, n, hex.EncodeToString(h.Sum(nil)), ""
}

// copyBufs holds the buffers post reads answers through.
var copyBufs = sync.Pool{New: func() any { return new([4096]byte) }}

func isLoopbackIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
