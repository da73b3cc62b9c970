// Package fanout delivers a channel's webhook events to the other tools an
// operator runs (a CRM, a helpdesk, an existing bot): its destinations.
//
// Each destination gets a body shaped as LINE's ({"destination": the bot's
// user id, "events": [one event]}), signed with its own secret as LINE
// signs (x-line-signature = base64(HMAC-SHA256(secret, body))), so that a
// tool built on LINE's SDKs verifies it unchanged. At most one destination
// of a channel owns the reply token; the others get each event with its
// replyToken removed.
//
// Delivery is durable and in order per conversation: an event is queued
// for the destinations whose filters take it by the commit of its outcome
// record (the ledger is the queue, read from each destination's cursor:
// stream.go; or, with Options.Table, a row committed with the record:
// Follow), and one worker per destination delivers the first queued
// events of each conversation, retries with
// exponential backoff and jitter, and stops calling a destination that
// keeps failing (a circuit breaker, with a half-open probe). Each attempt
// is an outbound ledger record (Endpoint "destination"), committed with
// the change of the queue it causes. Nothing in the ingress path or the
// rules waits for a destination.
package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/prometheus/client_golang/prometheus"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// Endpoint is the Endpoint of the outbound records of deliveries.
const Endpoint = "destination"

// ErrUnknownDestination is returned for a destination name that is not
// configured.
var ErrUnknownDestination = errors.New("fanout: unknown destination")

// ErrBacklog refuses a replay for a destination still reading a backlog
// larger than it holds: its replayed events would come before the
// backlog's in their conversations.
var ErrBacklog = errors.New("fanout: the destination has a backlog to read")

// Destination is one configured destination of a channel.
type Destination struct {
	// Name identifies the destination across channels (the admin API, the
	// records, the metrics, replay).
	Name    string
	Channel string
	// URL is https://, or http:// to a loopback IP address with
	// AllowHTTP.
	URL       string
	AllowHTTP bool
	// Secret signs the bodies; SecretID names it in the records (never
	// the secret).
	Secret   []byte
	SecretID string
	// The filters (empty: all): event types ("message", "follow"...),
	// source types ("user", "group", "room"; "none" for events without a
	// source), and pipeline outcomes (default DefaultOutcomes).
	EventTypes  []string
	SourceTypes []string
	Outcomes    []string
	// OwnsReplyToken: this destination receives replyToken; the others
	// never do.
	OwnsReplyToken bool
	// Timeout bounds one attempt (default 5s).
	Timeout time.Duration

	u        *url.URL
	loopback bool // the fence keeps the calls on loopback
}

// DefaultOutcomes are the pipeline outcomes delivered when a destination
// names none: every event linegate acted on or recorded as new, but not
// duplicates, the console's Verify dummies, events for another bot,
// malformed (quarantined) ones, or those of conversations a person has
// taken over (held_for_human: list it for a tool that should see them).
var DefaultOutcomes = []string{
	string(pipeline.OutcomeProcessed), string(pipeline.OutcomeFailed), string(pipeline.OutcomeUnknown),
	string(pipeline.OutcomeStandby), string(pipeline.OutcomeHeld), string(pipeline.OutcomeUnknownMode),
}

// Check checks a destination's settings and completes its defaults.
func (d *Destination) Check() error {
	if !namePattern(d.Name) {
		return fmt.Errorf("name %q: want 1 to 64 letters, digits, '.', '_' or '-'", d.Name)
	}
	u, err := url.Parse(d.URL)
	if d.URL == "" || err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("url %q: want https://host/path", d.URL)
	}
	if u.User != nil {
		return fmt.Errorf("url: no user or password in the URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !d.AllowHTTP || !isLoopbackIP(u.Hostname()) {
			return fmt.Errorf("url %s: http:// only to a loopback IP address (127.0.0.1, ::1) with allow_http: true; use https://", d.URL)
		}
	default:
		return fmt.Errorf("url %s: want https://", d.URL)
	}
	d.loopback = u.Scheme == "http"
	d.u = u
	for _, t := range d.SourceTypes {
		if !slices.Contains([]string{"user", "group", "room", "none"}, t) {
			return fmt.Errorf("source_types: %q: want user, group, room or none", t)
		}
	}
	if len(d.Outcomes) == 0 {
		d.Outcomes = DefaultOutcomes
	}
	for _, o := range d.Outcomes {
		if !slices.Contains(allOutcomes, o) {
			return fmt.Errorf("outcomes: %q: want one of %s", o, strings.Join(allOutcomes, ", "))
		}
	}
	if d.Timeout <= 0 {
		d.Timeout = 5 * time.Second
	}
	return nil
}

var allOutcomes = []string{
	string(pipeline.OutcomeProcessed), string(pipeline.OutcomeFailed), string(pipeline.OutcomeDuplicate),
	string(pipeline.OutcomeQuarantined), string(pipeline.OutcomeUnknown), string(pipeline.OutcomeStandby),
	string(pipeline.OutcomeUnknownMode), string(pipeline.OutcomeForeign), string(pipeline.OutcomeHeld),
	string(pipeline.OutcomeDummy), string(pipeline.OutcomeHeldForHuman),
}

func namePattern(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// CheckAll checks a set of destinations: each on its own, names unique,
// and at most one reply-token owner per channel.
func CheckAll(ds []*Destination) error {
	names := map[string]bool{}
	owners := map[string]string{}
	for _, d := range ds {
		if err := d.Check(); err != nil {
			return fmt.Errorf("destination %q: %w", d.Name, err)
		}
		if names[d.Name] {
			return fmt.Errorf("destination %q: the name is used twice: names are unique across channels", d.Name)
		}
		names[d.Name] = true
		if d.OwnsReplyToken {
			if o, ok := owners[d.Channel]; ok {
				return fmt.Errorf("destination %q: channel %q has a reply token owner already (%q): at most one destination owns the reply token", d.Name, d.Channel, o)
			}
			owners[d.Channel] = d.Name
		}
	}
	return nil
}

// takes reports whether d's filters take an event.
func (d *Destination) takes(typ, source, outcome string) bool {
	return d.filters(typ, source) && slices.Contains(d.Outcomes, outcome)
}

// filters reports whether the event type and source type filters take an
// event (a replay applies only these).
func (d *Destination) filters(typ, source string) bool {
	return (len(d.EventTypes) == 0 || slices.Contains(d.EventTypes, typ)) &&
		(len(d.SourceTypes) == 0 || slices.Contains(d.SourceTypes, source))
}

// stillTakes reports whether the destination, as configured now, takes a
// queued entry: its channel, and its filters (a replay's entries, and
// entries queued before they named their outcome, by type and source
// only, as a replay filters). An entry queued under an earlier
// configuration (the destination moved to another channel, or its filters
// narrowed) is dropped with a record rather than delivered, as the events
// of its backlog are left out.
func (d *Destination) stillTakes(e *Entry) bool {
	if e.Channel != d.Channel {
		return false
	}
	src := "none" // an event without a source: a conversation of its own
	if !strings.HasPrefix(e.Conversation, "event:") {
		src = sourceType(e.Conversation)
	}
	if e.Redelivery || e.Outcome == "" {
		return d.filters(e.Type, src)
	}
	return d.takes(e.Type, src, e.Outcome)
}

// sourceType returns the source type of a conversation key
// (line.Event.Conversation): "user", "group", "room", or "none".
func sourceType(conversation string) string {
	if t, _, ok := strings.Cut(conversation, ":"); ok {
		return t
	}
	return "none"
}

// Entry is one event queued for one destination.
type Entry struct {
	Seq          uint64 `json:"-"` // queue order, assigned by the store
	Destination  string `json:"-"`
	Conversation string `json:"-"` // entries of one conversation are delivered in Seq order
	Attempts     int    `json:"-"` // attempts made so far
	NextMs       int64  `json:"-"` // not to be tried before (unix ms)

	Channel    string   `json:"channel"`
	Record     uint64   `json:"record"` // the webhook record
	Index      int      `json:"index"`  // the event's position in it
	Key        string   `json:"key"`    // the event's dedup key
	Type       string   `json:"type"`
	Outcome    string   `json:"outcome,omitempty"` // the pipeline's (none for a replay's)
	Retention  string   `json:"retention,omitempty"`
	Subjects   []string `json:"subjects,omitempty"`
	ReceivedMs int64    `json:"received_ms"`
	// Redelivery: queued by a replay; delivered with
	// deliveryContext.isRedelivery true.
	Redelivery bool `json:"redelivery,omitempty"`
	// At is the index of the event's outcome record (0 for a replay's):
	// the event's place in the ledger-as-queue (see stream.go).
	At uint64 `json:"at,omitempty"`

	mem bool // held in memory, not in the table
}

// Enqueue is the effect that queues entries, in the transaction of the
// records that cause it (the events' outcomes, or a replay's admin
// record). The store assigns each entry its Seq.
type Enqueue struct {
	Entries []*Entry
}

// EffectName implements ledger.Effect.
func (Enqueue) EffectName() string { return "queue events for destinations" }

// Delivered is the effect of a delivery's record: the entries Seqs leave
// the queue, all or none. A store fails it with ledger.ErrConflict when
// one of them is no longer queued (nothing is written).
type Delivered struct {
	Seqs []uint64
}

// EffectName implements ledger.Effect.
func (Delivered) EffectName() string { return "dequeue a delivered event" }

// Retry is the effect of a failed attempt's record: the entry Seq has had
// Attempts attempts and waits until NextMs. A store fails it with
// ledger.ErrConflict when the entry is no longer queued.
type Retry struct {
	Seq      uint64
	Attempts int
	NextMs   int64
}

// EffectName implements ledger.Effect.
func (Retry) EffectName() string { return "schedule a retry" }

// Store is the durable queue of the destinations, in the ledger's
// database, so that queueing, dequeueing and the records that cause them
// commit together (the effects Enqueue, Delivered and Retry, applied by
// the store's Append). Declared here, by its consumer; the SQLite and
// PostgreSQL stores implement it and pass fanouttest.
//
// Every method is a read of its own, safe for concurrent use.
type Store interface {
	// Heads returns, in Seq order, the first perConversation queued
	// entries of each of up to conversations of destination's
	// conversations: those whose first entry is due at nowMs (NextMs <=
	// nowMs) first, in the order they came due: the ones never tried
	// (NextMs 0) first, the one queued first (lowest Seq) first, then
	// those due after a failure, the earliest NextMs first; then, if
	// fewer are due, those whose first entry waits for a retry, the one
	// due soonest first. So conversations a destination keeps refusing,
	// however many and however early queued, never keep the others out:
	// each time one fails it goes behind those that came due meanwhile.
	// The stores keep each conversation's first entry in a
	// table of its own, so that Heads reads what it returns and, at
	// most, the first entries of the conversations waiting for a retry:
	// a conversation with any number of entries queued, or any number
	// of conversations waiting, hides no other.
	Heads(ctx context.Context, destination string, nowMs int64, conversations, perConversation int) ([]*Entry, error)
	// QueueDepths returns the number of entries queued, by destination
	// (destinations with none are absent).
	QueueDepths(ctx context.Context) (map[string]int64, error)
	// Setting returns a stored setting, "" when unset (the pause
	// switches, the cursors).
	Setting(ctx context.Context, key string) (string, error)
	// QueuedConversations returns the conversations with entries queued
	// for destination, each with the largest At among them.
	QueuedConversations(ctx context.Context, destination string) (map[string]uint64, error)
}

// headsPicker picks, from entries read in Seq order, the first
// perConversation of each of up to conversations conversations: the held
// entries a round looks at, as Store.Heads picks them from the table.
type headsPicker struct {
	conversations, per int
	count              map[string]int
}

// newHeadsPicker returns a picker for these limits.
func newHeadsPicker(conversations, perConversation int) *headsPicker {
	return &headsPicker{conversations: conversations, per: perConversation, count: map[string]int{}}
}

// Want reports whether the next entry in Seq order, of conversation, is
// returned (only those are decoded).
func (p *headsPicker) Want(conversation string) bool {
	n, ok := p.count[conversation]
	if !ok && len(p.count) >= p.conversations || n >= p.per {
		return false
	}
	p.count[conversation] = n + 1
	return true
}

// Committer commits records with the effects that take effect with them
// (ledger.Ledger).
type Committer interface {
	Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error)
}

// Options configures a Fanout.
type Options struct {
	Destinations []*Destination // checked by CheckAll
	Store        Store
	Log          Committer
	// Ledger reads the webhook records the events are delivered from,
	// and replay's ranges.
	Ledger ledger.Store
	Sealer ledger.Sealer
	// BotUserIDs are the channels' bot user ids, used as the body's
	// destination when a record's own cannot be read.
	BotUserIDs map[string]string
	// Lease, if set, is held by the one process that delivers (replicas
	// on one database); the others only queue.
	Lease ledger.Lease
	// Retry policy: the first retry waits about BaseDelay (default 1s),
	// each next one twice as long, up to MaxDelay (default 5m), with
	// jitter.
	BaseDelay, MaxDelay time.Duration
	// Breaker: open after BreakerFailures consecutive failed attempts
	// (default 5); after BreakerCooldown (default 30s) one probe is let
	// through (half-open).
	BreakerFailures int
	BreakerCooldown time.Duration
	// BreakerMaxCooldown caps the cooldown, which doubles at each failed
	// probe since the last success (default 1h).
	BreakerMaxCooldown time.Duration
	// Concurrency is how many requests a destination's worker has in
	// flight at once (default 4); each conversation has one event in
	// flight at most.
	Concurrency int
	// Batch is how many events one request carries at most (default
	// 20), as LINE's webhooks carry several: the next ones of one
	// conversation, in order, or those of several.
	Batch int
	// Poll is how often a worker looks at its queue when nothing wakes
	// it (default 100ms).
	Poll time.Duration
	// Linger is how long a worker waits after a round that emptied what
	// was ready before it looks again (default 10ms), so that what
	// arrives meanwhile goes in fewer, fuller requests: fewer records,
	// reads and commits for the same events. A round that filled its
	// requests is followed at once.
	Linger time.Duration
	// Table queues every event in the store's table, in the commit of its
	// outcome (Follow), rather than reading it from the ledger after its
	// outcome commit (Completed): for replicas sharing a database, whose
	// one holder of Lease delivers what all of them complete.
	Table bool
	// Hold is how many events a destination holds in memory without
	// Table (default 4096); beyond it, it reads its backlog from the
	// ledger once it has room again.
	Hold   int
	Logger *slog.Logger
	Now    func() time.Time
}

// The defaults of Options.Batch and Options.Linger.
const (
	DefaultBatch  = 20
	DefaultLinger = 10 * time.Millisecond
)

// Fanout queues events for the destinations and delivers them.
type Fanout struct {
	o      Options
	log    *slog.Logger
	byName map[string]*worker
	order  []*worker
	owners map[string]string // channel -> destination owning the reply token
	m      *metrics
	hand   *handover
	initMu sync.Mutex
	inited bool // Init has run (initMu held)
}

// New returns a Fanout; Run delivers.
func New(o Options) (*Fanout, error) {
	if err := CheckAll(o.Destinations); err != nil {
		return nil, err
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = time.Second
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 5 * time.Minute
	}
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 30 * time.Second
	}
	if o.BreakerMaxCooldown <= 0 {
		o.BreakerMaxCooldown = time.Hour
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	if o.Linger < 0 {
		o.Linger = 0
	} else if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.Hold <= 0 {
		o.Hold = defaultHold
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := &Fanout{o: o, log: o.Logger, byName: map[string]*worker{}, owners: map[string]string{}, m: newMetrics(),
		hand: newHandover(o.Now)}
	for _, d := range o.Destinations {
		if len(d.Secret) == 0 {
			return nil, fmt.Errorf("destination %q: no signing secret: give one of secret, secret_env, secret_file (the destination's own, not the channel's)", d.Name)
		}
		w := newWorker(f, d)
		w.s.bound = o.Hold
		f.byName[d.Name] = w
		f.order = append(f.order, w)
		if d.OwnsReplyToken {
			f.owners[d.Channel] = d.Name
		}
	}
	return f, nil
}

// ReplyOwner returns the name of the destination that owns the reply
// tokens of channel's events, or "" when linegate's own rules do.
func (f *Fanout) ReplyOwner(channel string) string {
	if f == nil {
		return ""
	}
	return f.owners[channel]
}

// Destinations returns the names of the destinations, in config order.
func (f *Fanout) Destinations() []string {
	var names []string
	for _, w := range f.order {
		names = append(names, w.d.Name)
	}
	return names
}

// Follow returns, with Options.Table, the effect that queues the
// completed events items for the destinations whose filters take them,
// for the pipeline to commit with their outcome records; nil when none
// does, and always without Table (the outcome records are the queue:
// Completed).
//
// Queueing with the outcome, rather than with the webhook record at
// ingress, keeps the acknowledgement to LINE free of any fan-out work
// (no parsing, no extra rows in its commit), lets destinations filter on
// what linegate made of an event (its outcome), and queues each event
// exactly once: the outcome commit happens once per event (the pipeline
// dequeues the event in it), and a crash before it re-runs the event and
// queues it then. In both ways, Follow hands the events' content over to
// the workers (handover).
func (f *Fanout) Follow(items []*pipeline.Item) []ledger.Effect {
	if f == nil || len(f.order) == 0 {
		return nil
	}
	var entries []*Entry
	now := f.o.Now()
	for _, it := range items {
		if it.Index < 0 {
			continue // a body that was not JSON: no event to deliver
		}
		n := 0
		for _, w := range f.order {
			e := w.itemEntry(it)
			if e == nil {
				continue
			}
			if f.o.Table {
				entries = append(entries, e)
			}
			if w.takesSoon(now) {
				n++
			}
		}
		// it.Event is the event as the webhook record holds it (from the
		// request, or read back from the record after a restart). Kept
		// for the destinations that will take it within handoverAge: a
		// paused one, or one whose breaker is open, reads it from the
		// ledger when it goes on (it may still take it, if it goes on
		// first, and one counted then reads it instead).
		f.hand.put(it.Record, it.Index, it.Destination, it.Event, n, time.UnixMilli(it.ReceivedMs))
	}
	if len(entries) == 0 {
		return nil
	}
	return []ledger.Effect{Enqueue{Entries: entries}}
}

// conversationKey orders the events of one conversation; an event without
// a source is a conversation of its own.
func conversationKey(conv, key string) string {
	if conv != "" {
		return conv
	}
	return "event:" + key
}

// Action wraps the pipeline's action (linegate's rules) for the channels
// whose reply token a destination owns: the rules never see the reply
// token (neither the decoded field nor the raw event their forwards
// send), so that they never spend it nor pass it on. With push, their messages go by
// push; without, the rules do not run on those channels at all (the
// events are still recorded, and delivered to the destinations).
func (f *Fanout) Action(next pipeline.Action, push bool) pipeline.Action {
	if f == nil || len(f.owners) == 0 {
		return next
	}
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, e *line.Event) error {
		if f.owners[it.Channel] == "" || e.ReplyToken == "" {
			return next.Handle(ctx, it, e)
		}
		if !push {
			return nil
		}
		// The token goes from the raw event too: a rule's forward sends
		// the raw event, and its target is not the owner.
		c := *e
		c.ReplyToken = ""
		if len(e.Raw) > 0 {
			raw, err := buildEvent(e.Raw, false, false)
			if err != nil {
				return fmt.Errorf("fanout: remove the reply token: %w", err)
			}
			c.Raw = raw
		}
		return next.Handle(ctx, it, &c)
	})
}

// Run delivers until ctx ends: one worker per destination, each on its
// own, so that one slow or dead destination never delays another.
func (f *Fanout) Run(ctx context.Context) {
	for !f.o.Table {
		err := f.Init(ctx) // nothing when done already
		if err == nil {
			break
		}
		f.log.Error("fanout: start", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	var wg sync.WaitGroup
	for _, w := range f.order {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { f.depths(ctx) })
	wg.Wait()
}

// depths reads the queues' depths for the metric and Status once a
// second: one count of the whole queue for every destination, off the
// delivery path, whose cost grows with a dead destination's backlog.
func (f *Fanout) depths(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if !f.o.Table {
			count, cerr := f.o.Ledger.Count(ctx)
			for _, w := range f.order {
				if _, behind, next := w.s.held(); behind && cerr == nil && count > next {
					f.m.backlog.WithLabelValues(w.d.Name).Set(float64(count - next))
				} else {
					f.m.backlog.WithLabelValues(w.d.Name).Set(0)
				}
			}
		}
		if depths, err := f.o.Store.QueueDepths(ctx); err == nil {
			for _, w := range f.order {
				w.mu.Lock()
				n, _, _ := w.s.held()
				w.depth = depths[w.d.Name] + int64(n)
				w.mu.Unlock()
				f.m.depth.WithLabelValues(w.d.Name).Set(float64(depths[w.d.Name] + int64(n)))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collectors returns the package's metrics.
func (f *Fanout) Collectors() []prometheus.Collector {
	return f.m.collectors(f)
}

// BuildBody builds what a destination receives for events: a body shaped
// as LINE's, each replyToken removed unless the destination owns it, and
// deliveryContext.isRedelivery set for redeliveries.
func BuildBody(destination string, events []json.RawMessage, keepReplyToken, redelivery bool) ([]byte, error) {
	out := make([]json.RawMessage, len(events))
	for i, event := range events {
		e, err := buildEvent(event, keepReplyToken, redelivery)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	// Assembled rather than marshalled: json.Marshal would parse and
	// compact every event once more; each is a JSON object already.
	dest, err := json.Marshal(destination)
	if err != nil {
		return nil, err
	}
	n := len(`{"destination":,"events":[]}`) + len(dest) + len(out)
	for _, e := range out {
		n += len(e)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"destination":`...)
	b = append(b, dest...)
	b = append(b, `,"events":[`...)
	for i, e := range out {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, "]}"...), nil
}

func buildEvent(event json.RawMessage, keepReplyToken, redelivery bool) (json.RawMessage, error) {
	if !isObject(event) {
		// null, a number, a string, an array: LINE's events are objects;
		// the ledger keeps what came, and it is not delivered.
		return nil, errors.New("event not a JSON object")
	}
	if !redelivery {
		// The owner of the reply token gets the event as the ledger
		// holds it; the others get it without the members a JSON reader
		// could take for replyToken (isReplyTokenKey), the rest as it
		// is.
		if keepReplyToken {
			return event, nil
		}
		if !json.Valid(event) {
			return nil, errors.New("event not valid JSON")
		}
		return withoutMembers(event, isReplyTokenKey), nil
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(event, &ev); err != nil {
		return nil, fmt.Errorf("event not a JSON object: %w", err)
	}
	if !keepReplyToken {
		for k := range ev {
			if isReplyTokenKey([]byte(k)) {
				delete(ev, k)
			}
		}
	}
	dc := map[string]json.RawMessage{}
	if raw, ok := ev["deliveryContext"]; ok {
		json.Unmarshal(raw, &dc) // a malformed one is replaced
		if dc == nil {
			dc = map[string]json.RawMessage{}
		}
	}
	dc["isRedelivery"] = json.RawMessage("true")
	b, err := json.Marshal(dc)
	if err != nil {
		return nil, err
	}
	ev["deliveryContext"] = b
	return json.Marshal(ev)
}

// isReplyTokenKey reports whether a key of an event would be read as its
// replyToken: Go's encoding/json (LINE's Go SDK, and linegate's own
// reading) matches a field's name without regard to case, with Unicode
// folding ("REPLYTOKEN", "replyTo\u212Aen" with a Kelvin sign).
func isReplyTokenKey(k []byte) bool {
	return bytes.EqualFold(k, replyTokenKey)
}

var replyTokenKey = []byte("replyToken")

// isObject reports whether a valid JSON value is an object.
func isObject(v json.RawMessage) bool {
	v = bytes.TrimLeft(v, " \t\r\n")
	return len(v) > 0 && v[0] == '{'
}

// pauseKey is the setting that pauses a destination.
func pauseKey(name string) string { return "fanout.paused." + name }
