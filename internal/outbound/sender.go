package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// Class is a message's consent class.
type Class string

// The classes: transactional messages answer the user; promotional ones go
// only to users who opted in.
const (
	Transactional Class = "transactional"
	Promotional   Class = "promotional"
)

// Request is a send that an event caused.
type Request struct {
	Channel   string
	Retention string
	// Subjects are the users, groups and rooms whose data the send holds
	// (ledger.Entry.Subjects): the event's, which include the recipient.
	Subjects []string
	// EventKey links the send to its event (the dedup key); Record is the
	// ledger index of the webhook that carried it.
	EventKey string
	Record   uint64
	Rule     string
	// To is the user, group or room to push to; UserID the user, for
	// consent.
	To, UserID string
	// ReplyToken, with ReceivedMs, allows a reply within its lifetime.
	ReplyToken string
	ReceivedMs int64
	ForcePush  bool
	Messages   []json.RawMessage
	Class      Class
	// DryRun asks for a dry run of this request alone (the channel allows
	// the X-Line-Dry-Run header).
	DryRun bool
	// Seq tells apart several sends of one event (for the retry key).
	Seq int
	// Canary marks the runbook's canary, pushed to the channel's canary
	// group alone: the one send that the kill switch and dry-run let
	// through, recorded as such (internal/canary sets it).
	Canary bool
	// Agent names the person who sends (a human reply): the record names
	// them. Extra is added to the record's extra fields.
	Agent string
	Extra map[string]string
}

// Outcome is what became of a request.
type Outcome string

// The outcomes recorded.
const (
	Sent       Outcome = "sent"
	Failed     Outcome = "failed"
	Suppressed Outcome = "suppressed" // kill switch
	DryRun     Outcome = "dry_run"
	Blocked    Outcome = "blocked" // consent
	Held       Outcome = "held"    // quota budget reached (promotional pushes)
)

// State is the switches and consent the Sender obeys, durable and shared by
// all replicas. Declared here, by its consumer.
type State interface {
	// Setting returns a stored setting, "" when unset.
	Setting(ctx context.Context, key string) (string, error)
	// OptedIn reports whether the user's latest consent record is an opt-in.
	OptedIn(ctx context.Context, channel, user string) (bool, error)
}

// SetSetting is the effect of an admin record that changes a switch: the
// setting Key is stored as Value, in the transaction that records who
// changed it and why.
type SetSetting struct {
	Key, Value string
}

// EffectName implements ledger.Effect.
func (SetSetting) EffectName() string { return "change a setting" }

// SetConsent is the effect of a consent record: the user's consent on the
// channel becomes OptIn, unless a consent record of a later time At is
// stored already.
type SetConsent struct {
	Channel, User string
	OptIn         bool
	At            time.Time
	Source        string
}

// EffectName implements ledger.Effect.
func (SetConsent) EffectName() string { return "change a user's consent" }

// Committer appends records with the effects that commit with them
// (ledger.Ledger, ledger.Writer).
type Committer interface {
	Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error)
}

// Appender records in the ledger; *ledger.Ledger implements it.
type Appender interface {
	Append(ctx context.Context, e ledger.Entry) (uint64, error)
}

// SenderOptions configures a Sender.
type SenderOptions struct {
	Clients map[string]*Client // by channel
	Ledger  Appender
	State   State
	// EnvKillSwitch is true when REPLY_ENABLE=false: it stops all sends
	// whatever the stored setting says.
	EnvKillSwitch bool
	// DryRunChannels are dry-run by configuration; DryRunAll makes every
	// channel dry-run.
	DryRunChannels map[string]bool
	DryRunAll      bool
	// RateLimit is each channel's limit in requests per second, all
	// endpoints together (default 2000: LINE's default limit is 2,000
	// requests a second per endpoint, so that the sum of the channel's
	// calls never passes it on any one); RateLimits overrides it by
	// channel.
	RateLimit  float64
	RateLimits map[string]float64
	// ReplyWindow is how long after receipt a reply token is used; later,
	// the send is a push (default 50s: LINE's tokens live about a minute).
	ReplyWindow time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
	// QuotaBudgets, by channel, is the share of the monthly quota past
	// which promotional pushes are held back (see UpdateQuota).
	QuotaBudgets map[string]float64
	// Annotate, if set, is given each request body before it is sent (or
	// held back), and what it returns is recorded in the outbound
	// record's Extra: the SHA-256 of the images a send shows, fetched at
	// send time (media.SentImages). It must bound its own time.
	Annotate func(ctx context.Context, channel string, body []byte) map[string]string
	// ReplyTokens is the registry every sender of the process claims reply
	// tokens from (the proxy shares it); default, one of the Sender's own.
	ReplyTokens *ReplyTokens
}

// Sender sends what the rules decide, through the kill switch, dry-run,
// consent and rate limit, and records every request and response.
type Sender struct {
	o        SenderOptions
	limiters map[string]*rate.Limiter
	fails    *oplog.Limiter // failed sends, by class and channel, rate limited

	kill     atomic.Bool // the stored kill switch
	dryAll   atomic.Bool
	dryMu    sync.RWMutex
	dryChans map[string]bool // stored per-channel dry-run

	inspect func(r Request, body []byte) // InspectSends

	sends      *prometheus.CounterVec
	apiLatency *prometheus.HistogramVec
	apiStatus  *prometheus.CounterVec
	killGauge  prometheus.GaugeFunc
	replyLag   prometheus.Histogram
	quota      *quotaGate
}

// Settings keys.
const (
	SettingKillSwitch = "kill_switch"      // "on" stops all sends
	SettingDryRunAll  = "dry_run"          // "on": every channel
	settingDryRunPref = "dry_run:channel:" // + channel id
)

// NewSender returns a Sender. Call Refresh to load the stored switches.
func NewSender(o SenderOptions) *Sender {
	if o.RateLimit <= 0 {
		o.RateLimit = 2000
	}
	if o.ReplyWindow <= 0 {
		o.ReplyWindow = 50 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReplyTokens == nil {
		o.ReplyTokens = NewReplyTokens(0)
	}
	s := &Sender{o: o, limiters: map[string]*rate.Limiter{}, dryChans: map[string]bool{}, fails: oplog.NewLimiter(o.Logger, oplog.Every)}
	s.quota = newQuotaGate(o.QuotaBudgets)
	for ch := range o.Clients {
		r := o.RateLimit
		if v := o.RateLimits[ch]; v > 0 {
			r = v
		}
		s.limiters[ch] = rate.NewLimiter(rate.Limit(r), max(1, int(r/10)))
	}
	s.sends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "outbound_sends_total",
		Help: "Sends by channel, endpoint (reply, push) and outcome (sent, failed, suppressed, dry_run, blocked).",
	}, []string{"channel", "endpoint", "outcome"})
	s.apiLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricPrefix + "line_api_seconds",
		Help:    "Messaging API call latency, by endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"endpoint"})
	s.apiStatus = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "line_api_responses_total",
		Help: "Messaging API responses by endpoint and status code (0: no response); 429s are rate limiting.",
	}, []string{"endpoint", "code"})
	s.replyLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricPrefix + "reply_latency_seconds",
		Help:    "Time from the receipt of a webhook to LINE accepting a send it caused (reply or push).",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	s.killGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "kill_switch",
		Help: "1 while the kill switch stops every outbound send.",
	}, func() float64 {
		if s.KillSwitch() {
			return 1
		}
		return 0
	})
	for _, c := range o.Clients {
		c.Observe = func(endpoint string, a Attempt) {
			s.apiStatus.WithLabelValues(endpoint, fmt.Sprint(a.Status)).Inc()
			s.apiLatency.WithLabelValues(endpoint).Observe(a.LatencyMs / 1000)
		}
	}
	return s
}

// Collectors returns the Sender's metrics.
func (s *Sender) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{s.sends, s.apiLatency, s.apiStatus, s.killGauge, s.replyLag}, s.quota.collectors()...)
}

// KillSwitch reports whether sends are stopped.
func (s *Sender) KillSwitch() bool { return s.o.EnvKillSwitch || s.kill.Load() }

// DryRun reports whether a channel is in dry-run.
func (s *Sender) DryRun(channel string) bool {
	if s.o.DryRunAll || s.o.DryRunChannels[channel] || s.dryAll.Load() {
		return true
	}
	s.dryMu.RLock()
	defer s.dryMu.RUnlock()
	return s.dryChans[channel]
}

// DryRunStatus reports, by channel, whether it is in dry-run.
func (s *Sender) DryRunStatus() map[string]bool {
	m := make(map[string]bool, len(s.o.Clients))
	for ch := range s.o.Clients {
		m[ch] = s.DryRun(ch)
	}
	return m
}

// Refresh reloads the stored switches, so that a change made through
// another replica takes effect here.
func (s *Sender) Refresh(ctx context.Context) error {
	v, err := s.o.State.Setting(ctx, SettingKillSwitch)
	if err != nil {
		return err
	}
	s.kill.Store(v == "on")
	v, err = s.o.State.Setting(ctx, SettingDryRunAll)
	if err != nil {
		return err
	}
	s.dryAll.Store(v == "on")
	m := map[string]bool{}
	for ch := range s.o.Clients {
		v, err := s.o.State.Setting(ctx, settingDryRunPref+ch)
		if err != nil {
			return err
		}
		m[ch] = v == "on"
	}
	s.dryMu.Lock()
	s.dryChans = m
	s.dryMu.Unlock()
	return nil
}

// RefreshLoop refreshes the switches every interval until ctx ends.
func (s *Sender) RefreshLoop(ctx context.Context, every time.Duration) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.o.Logger.Error("outbound: refresh switches", "err", err)
		}
	})
}

// SetKillSwitch turns the stored kill switch on or off, in the commit of
// the admin record that says so (detail: who asked, and why).
func (s *Sender) SetKillSwitch(ctx context.Context, c Committer, on bool, detail map[string]any) error {
	detail["on"] = on
	if _, err := RecordAdmin(ctx, c, "kill_switch", detail, nil, time.Now(), SetSetting{SettingKillSwitch, onOff(on)}); err != nil {
		return err
	}
	s.kill.Store(on)
	return nil
}

// SetDryRun turns dry-run on or off for a channel, or for all (""), in
// the commit of the admin record that says so.
func (s *Sender) SetDryRun(ctx context.Context, c Committer, channel string, on bool, detail map[string]any) error {
	key := SettingDryRunAll
	if channel != "" {
		key = settingDryRunPref + channel
	}
	detail["channel"], detail["on"] = channel, on
	if _, err := RecordAdmin(ctx, c, "dry_run", detail, nil, time.Now(), SetSetting{key, onOff(on)}); err != nil {
		return err
	}
	return s.Refresh(ctx)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Send carries out a request and records it. The error is for the
// pipeline's outcome: it says what failed, never with message text.
func (s *Sender) Send(ctx context.Context, r Request) (Outcome, error) {
	o, _, err := s.SendRecorded(ctx, r)
	return o, err
}

// Recorded is the outbound record a send or chat call wrote, and its
// index in the ledger.
type Recorded struct {
	*record.Outbound
	Index uint64
}

// SendRecorded is Send that also returns the record it wrote (nil when it
// wrote none): its endpoint, request ids and index.
func (s *Sender) SendRecorded(ctx context.Context, r Request) (Outcome, *Recorded, error) {
	if r.Class == "" {
		r.Class = Transactional
	}
	now := s.o.Now()
	// The reply token is claimed before the call: a token another send
	// of this process holds (a rule's, a person's, a tool's through the
	// proxy) would be refused by LINE, so this send pushes instead.
	claim, taken := "", ""
	if s.canReply(r, now) {
		holder := "rule " + r.Rule
		if r.Agent != "" {
			holder = "agent " + r.Agent
		}
		id := fmt.Sprintf("send:%s/%s/%d", r.EventKey, r.Rule, r.Seq)
		if ok, by := s.o.ReplyTokens.Claim(r.Channel, r.ReplyToken, holder, id); ok {
			claim = id
		} else {
			r.ForcePush, taken = true, by
		}
	}
	endpoint, body, retryKey := s.plan(r, now)
	rec := &record.Outbound{EventKey: r.EventKey, Record: r.Record, Rule: r.Rule, Endpoint: endpoint, Class: string(r.Class),
		Request: body, RetryKey: retryKey, Subj: r.Subjects, Agent: r.Agent}
	if len(r.Extra) > 0 {
		rec.Extra = maps.Clone(r.Extra)
	}
	if taken != "" {
		if rec.Extra == nil {
			rec.Extra = map[string]string{}
		}
		rec.Extra["reply_token"] = "used by " + taken + ": pushed"
	}
	var call *Call
	if claim != "" {
		// A send that LINE cannot have taken (held back, never sent,
		// refused for itself) leaves the token good for the next.
		defer func() {
			if call == nil || !call.MayHaveTaken() {
				s.o.ReplyTokens.Release(r.Channel, r.ReplyToken, claim)
			}
		}()
	}
	switch {
	case r.Class == Promotional && r.UserID == "":
		rec.Outcome, rec.Reason = string(Blocked), "promotional message without a user to have consent from"
	case r.Class == Promotional:
		ok, err := s.o.State.OptedIn(ctx, r.Channel, r.UserID)
		if err != nil {
			return Failed, nil, fmt.Errorf("consent lookup: %w", err)
		}
		if !ok {
			rec.Outcome, rec.Reason = string(Blocked), "promotional message to a user with no opt-in on record"
		}
	}
	if rec.Outcome == "" && s.KillSwitch() {
		rec.Outcome, rec.Reason = string(Suppressed), "kill switch on"
		if s.o.EnvKillSwitch {
			rec.Reason = "kill switch on (REPLY_ENABLE=false)"
		}
	}
	if rec.Outcome == "" && r.Class == Promotional && endpoint != "reply" {
		if why := s.quotaHeld(ctx, r.Channel); why != "" {
			rec.Outcome, rec.Reason = string(Held), why
		}
	}
	if rec.Outcome == "" && (r.DryRun || s.DryRun(r.Channel)) {
		rec.Outcome, rec.Reason = string(DryRun), "dry-run: not sent"
		if r.DryRun {
			rec.Reason = "dry-run (X-Line-Dry-Run header): not sent"
		}
	}
	if s.inspect != nil {
		s.inspect(r, body)
	}
	if s.o.Annotate != nil {
		for k, v := range s.o.Annotate(ctx, r.Channel, body) {
			if rec.Extra == nil {
				rec.Extra = map[string]string{}
			}
			rec.Extra[k] = v
		}
	}
	if r.Canary {
		// The canary goes to the canary group alone, whatever the
		// switches say: it tests the path before they are lifted.
		if rec.Extra == nil {
			rec.Extra = map[string]string{}
		}
		rec.Extra["canary"] = "to the canary group alone: the kill switch and dry-run let it through"
		if rec.Outcome == string(Suppressed) || rec.Outcome == string(DryRun) {
			rec.Outcome, rec.Reason = "", ""
		}
	}
	failure := "" // the class of a failed send, for the log
	var failArgs []any
	if rec.Outcome == "" {
		c := s.o.Clients[r.Channel]
		if c == nil || !c.hasToken() {
			rec.Outcome, rec.Reason = string(Failed), "no access token for the channel"
			failure = "no_access_token"
			failArgs = []any{"hint", "give the channel access_token_file or access_token_env (LINE Developers Console, Messaging API tab), or its channel_id for tokens linegate issues"}
		} else {
			if err := s.limiters[r.Channel].Wait(ctx); err != nil {
				rec.Outcome, rec.Reason = string(Failed), "rate limit wait: "+err.Error()
				failure, failArgs = "rate_limit_wait", []any{"err", err.Error()}
			} else {
				if endpoint == "reply" {
					call = c.Reply(ctx, body)
				} else {
					call = c.Push(ctx, body, retryKey)
				}
				rec.Attempts = call.Attempts
				if call.OK() {
					rec.Outcome = string(Sent)
					if r.ReceivedMs > 0 {
						s.replyLag.Observe(float64(s.o.Now().UnixMilli()-r.ReceivedMs) / 1000)
					}
					if endpoint != "reply" {
						s.quota.counted(r.Channel, 1)
					}
				} else {
					rec.Outcome, rec.Reason = string(Failed), call.String()
					failure, failArgs = call.failure()
				}
			}
		}
	}
	outcome := Outcome(rec.Outcome)
	s.sends.WithLabelValues(r.Channel, endpoint, rec.Outcome).Inc()
	if failure != "" {
		// Identifiers only: never the token, the request body or the
		// message text.
		s.fails.Log(slog.LevelError, oplog.Key{Class: failure, Channel: r.Channel}, "send failed: the user got no answer",
			append([]any{"endpoint", endpoint, "rule", r.Rule, "event", r.EventKey, "record", r.Record}, failArgs...)...)
	}
	rd := &Recorded{Outbound: rec}
	payload, err := record.Encode(&record.Meta{Channel: r.Channel, ReceivedMs: now.UnixMilli()}, rec)
	if err == nil {
		rd.Index, err = appendRetrying(s.o.Ledger, ledger.Entry{Kind: ledger.KindOutbound, Time: now, Channel: r.Channel, Retention: r.Retention, Payload: payload, Subjects: rec.Subjects()})
	}
	if err != nil {
		return outcome, rd, fmt.Errorf("record %s %s: %w", endpoint, outcome, err)
	}
	if outcome == Failed {
		return Failed, rd, &FailedError{Endpoint: endpoint, Reason: rec.Reason}
	}
	return outcome, rd, nil
}

// AppendRetrying records an entry, waiting out the ledger's pushback: a
// send that happened must not go unrecorded because the queue was full
// for a moment.
func AppendRetrying(l Appender, e ledger.Entry) error {
	_, err := appendRetrying(l, e)
	return err
}

// appendRetrying is AppendRetrying that returns the record's index.
func appendRetrying(l Appender, e ledger.Entry) (uint64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		i, err := l.Append(context.Background(), e)
		if !errors.Is(err, ledger.ErrPushback) || time.Now().After(deadline) {
			return i, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// canReply reports whether r may use its reply token: it has one, within
// its lifetime, and is not to push anyway.
func (s *Sender) canReply(r Request, now time.Time) bool {
	return r.ReplyToken != "" && !r.ForcePush && now.Sub(time.UnixMilli(r.ReceivedMs)) < s.o.ReplyWindow
}

// ReplyTokens returns the registry the Sender claims reply tokens from.
func (s *Sender) ReplyTokens() *ReplyTokens { return s.o.ReplyTokens }

// plan chooses reply or push and builds the exact request body.
func (s *Sender) plan(r Request, now time.Time) (endpoint string, body []byte, retryKey string) {
	if s.canReply(r, now) {
		body, _ = json.Marshal(map[string]any{"replyToken": r.ReplyToken, "messages": r.Messages})
		return "reply", body, ""
	}
	body, _ = json.Marshal(map[string]any{"to": r.To, "messages": r.Messages})
	return "push", body, RetryKeyFor(fmt.Sprintf("%s/%s/%s/%d", r.Channel, r.EventKey, r.Rule, r.Seq))
}

// RecordAdmin records an operator's action in the ledger, sealed under the
// keys of the subjects it concerns (none: the system's), and applies its
// effects in the same commit: the action takes effect if and only if it
// is recorded. It returns the record's index.
func RecordAdmin(ctx context.Context, c Committer, action string, detail map[string]any, subjects []string,
	now time.Time, effects ...ledger.Effect) (uint64, error) {
	body := &record.Admin{Action: action, Detail: detail}
	if len(subjects) == 1 {
		body.Subject = subjects[0]
	} else if len(subjects) > 1 {
		return 0, fmt.Errorf("outbound: an admin record concerns one subject at most, not %d", len(subjects))
	}
	payload, err := record.Encode(&record.Meta{ReceivedMs: now.UnixMilli()}, body)
	if err != nil {
		return 0, err
	}
	return c.Commit(ctx, []ledger.Entry{{Kind: ledger.KindAdmin, Time: now, Payload: payload, Subjects: body.Subjects()}}, effects...)
}
