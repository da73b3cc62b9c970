// Package handoff hands conversations between the bot and people. A
// conversation (a user's one-on-one chat, a group or a room of a channel)
// is owned by the bot, by a person (human), or resolved; while a person
// owns it the rules never answer it: each of its events is recorded as
// held for a human, and people answer through the same outbound path as
// the bot (the kill switch, dry-run and consent rules hold for them too).
//
// Every change of state is an admin record of the conversation's subject,
// naming the person or the rule, committed with the change itself (the
// SetState effect, applied by the store in the same transaction): a
// conversation is in the state its latest record says, and no other.
// Notifications that a conversation waits for a person are queued in the
// store in that same commit (QueueNotification), and each delivery
// attempt is an outbound record that moves the queue on
// (NotificationAttempt).
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/retention"
	"github.com/prometheus/client_golang/prometheus"
)

// State is who owns a conversation.
type State string

// The states. A conversation with no stored state is the bot's.
const (
	StateBot      State = "bot"
	StateHuman    State = "human"
	StateResolved State = "resolved"
)

func (s State) valid() bool { return s == StateBot || s == StateHuman || s == StateResolved }

// Conversation is a conversation's state. ID is "user:U…", "group:C…" or
// "room:R…" (the subject names the ledger already uses).
type Conversation struct {
	Channel string `json:"channel"`
	ID      string `json:"id"`
	State   State  `json:"state"`
	// Agent is the person who holds it; "" while it waits for one.
	Agent string `json:"agent,omitempty"`
	// Reason is why it was handed off (a rule's name as "rule:NAME",
	// "console", "admin", "idle", …).
	Reason string `json:"reason,omitempty"`
	// Since is when the state last changed.
	Since     time.Time `json:"since"`
	LastEvent time.Time `json:"last_event,omitzero"`
	// Waiting is the number of events held for a human since the last
	// human reply.
	Waiting int `json:"waiting"`
	// LastAgent is when a person last replied or acted on it.
	LastAgent time.Time `json:"last_agent,omitzero"`
}

// Active is the conversation's last activity: its last change of state,
// event or human reply. Its idle time is measured from it.
func (c Conversation) Active() time.Time {
	t := c.Since
	if c.LastEvent.After(t) {
		t = c.LastEvent
	}
	if c.LastAgent.After(t) {
		t = c.LastAgent
	}
	return t
}

// Message is one line of a conversation's history, decrypted.
type Message struct {
	Record uint64    `json:"record"`
	At     time.Time `json:"at"`
	// From is "user", "bot", "agent:NAME", or "tool:NAME".
	From string `json:"from"`
	// Type is the LINE message or event type (or the endpoint of a chat
	// call: markAsRead, loading).
	Type string `json:"type"`
	// Text is the text, or a short description of a non-text message.
	Text string `json:"text"`
	// JSON is the event, or the messages sent.
	JSON json.RawMessage `json:"json,omitempty"`
	// Held is set for an event held for a human (not answered by a rule)
	// and for a send held back (kill switch, dry-run, consent).
	Held bool `json:"held,omitempty"`
	// Outcome is, for sends, what became of them (sent, suppressed,
	// dry_run, failed, …), and for events the pipeline's outcome.
	Outcome string `json:"outcome,omitempty"`
}

// Actor is a person acting on a conversation, and their role.
type Actor struct{ Name, Role string }

// ReplyResult is what became of a human reply.
type ReplyResult struct {
	Outcome   string `json:"outcome"`
	Record    uint64 `json:"record"`
	RequestID string `json:"request_id,omitempty"`
	Via       string `json:"via"` // "reply" or "push"
}

// The errors callers branch on.
var (
	// ErrNotFound: no such channel, or a conversation id that is not one.
	ErrNotFound = errors.New("handoff: no such conversation")
	// ErrNotHeld: a human reply to a conversation that no person owns
	// (take it over first).
	ErrNotHeld = errors.New("handoff: the conversation is not held by a person: take it over first")
	// ErrInvalid: bad messages or arguments.
	ErrInvalid = errors.New("handoff: invalid request")
	// ErrConflict: the conversation's state changed meanwhile; nothing
	// was applied or recorded.
	ErrConflict = fmt.Errorf("handoff: the conversation's state changed meanwhile: %w", ledger.ErrConflict)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// SetState is the effect of a handoff record: the conversation's state
// becomes State, held by Agent, for Reason, since At. The store refuses
// it with ErrConflict, applying nothing, when From is set and the
// current state (StateBot when none is stored) is not in it, or when
// IdleSince is set and the conversation was active after it (an idle
// return that came too late). Leaving StateHuman resets Waiting.
type SetState struct {
	Channel, ID   string
	State         State
	Agent, Reason string
	At            time.Time
	From          []State
	IdleSince     time.Time
}

// EffectName implements ledger.Effect.
func (SetState) EffectName() string { return "change a conversation's state" }

// Allows reports whether the effect applies to the stored state cur (ok:
// whether one is stored).
func (e SetState) Allows(cur Conversation, ok bool) bool {
	st := StateBot
	if ok {
		st = cur.State
	}
	if len(e.From) > 0 && !slices.Contains(e.From, st) {
		return false
	}
	if !e.IdleSince.IsZero() && ok && cur.Active().After(e.IdleSince) {
		return false
	}
	return true
}

// QueueNotification is the effect that queues a notification, durable in
// the commit of the change it tells of.
type QueueNotification struct {
	Channel string
	Target  string // the target's name in the config
	Body    []byte // the request body, JSON
	At      time.Time
}

// EffectName implements ledger.Effect.
func (QueueNotification) EffectName() string { return "queue a notification" }

// NotificationAttempt is the effect of a notification attempt's outbound
// record: the notification is done (delivered, or given up), or tried
// again at Next.
type NotificationAttempt struct {
	ID       int64
	Attempts int
	Next     time.Time
	Done     bool
}

// EffectName implements ledger.Effect.
func (NotificationAttempt) EffectName() string { return "note a notification attempt" }

// Notification is a queued notification.
type Notification struct {
	ID       int64
	Channel  string
	Target   string
	Body     []byte
	Attempts int
	Next     time.Time
	Created  time.Time
}

// ConversationColumns are the columns of the stores' conversations table
// that ScanConversation reads, in its order.
const ConversationColumns = "channel, id, state, agent, reason, since_ms, last_event_ms, last_agent_ms, waiting"

// ScanConversation reads a conversation from a row of ConversationColumns
// (scan is a row's Scan): times are milliseconds, 0 for none.
func ScanConversation(scan func(dest ...any) error) (Conversation, error) {
	var c Conversation
	var since, last, agent int64
	err := scan(&c.Channel, &c.ID, &c.State, &c.Agent, &c.Reason, &since, &last, &agent, &c.Waiting)
	c.Since, c.LastEvent, c.LastAgent = msOrZero(since), msOrZero(last), msOrZero(agent)
	return c, err
}

func msOrZero(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Store is the state the service keeps. Declared here, by its consumer;
// both stores implement it. Changes of state are effects (SetState,
// QueueNotification, NotificationAttempt) committed with their records;
// the Note methods keep counters that are not audited (the records they
// count are).
type Store interface {
	// Conversation returns a conversation's stored state, ErrNotFound
	// when none is stored.
	Conversation(ctx context.Context, channel, id string) (Conversation, error)
	// Conversations returns the stored conversations of the channels (all
	// when channels is nil) in the states (all when none), the latest
	// active first.
	Conversations(ctx context.Context, channels []string, states []State) ([]Conversation, error)
	// NoteEvent notes an event of a stored conversation at at, and one
	// more waiting when held; a conversation with no stored state is left
	// so (nothing is stored for every conversation the bot answers).
	NoteEvent(ctx context.Context, channel, id string, at time.Time, held bool) error
	// NoteAgent notes a person's reply at at: Waiting goes back to 0.
	NoteAgent(ctx context.Context, channel, id string, at time.Time) error
	// DueNotifications returns up to limit queued notifications due at
	// now, oldest first.
	DueNotifications(ctx context.Context, now time.Time, limit int) ([]Notification, error)
	// ClaimNotification moves a due notification's next time from next
	// to until, and reports whether this call did (another replica may
	// have claimed it).
	ClaimNotification(ctx context.Context, id int64, next, until time.Time) (bool, error)
	// SubjectRecords and Records read the conversation's history.
	SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]retention.Candidate, error)
	Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error]
}

// Sender is the outbound path human replies and chat calls take.
// *outbound.Sender implements it.
type Sender interface {
	SendRecorded(ctx context.Context, r outbound.Request) (outbound.Outcome, *outbound.Recorded, error)
	Chat(ctx context.Context, r outbound.ChatRequest) (outbound.Outcome, *outbound.Recorded, error)
	ReplyWindow() time.Duration
}

// ChannelOptions are a channel's handoff settings.
type ChannelOptions struct {
	// Retention is the channel's retention class.
	Retention string
	// Idle is how long a human conversation may stay without activity
	// before it returns to the bot (0: never).
	Idle time.Duration
	// Notify are where a conversation waiting for a person is told.
	Notify []Target
	// ConsoleURL, if set, is linked from notifications.
	ConsoleURL string
	// NotifyIDs puts the conversation's id in notifications; by default
	// they name its pseudonym (record.Pseudonym) alone.
	NotifyIDs bool
}

// Options configures a Service.
type Options struct {
	Store  Store
	Ledger outbound.Committer
	Sealer ledger.Sealer
	Sender Sender
	// Channels are the configured channels: a conversation of another is
	// not found.
	Channels map[string]ChannelOptions
	Logger   *slog.Logger
	Now      func() time.Time
}

// Service is the handoff engine: state, history, human replies, chat
// calls, idle returns and notifications.
type Service struct {
	o   Options
	log *slog.Logger

	typing typingLimit

	held     *prometheus.CounterVec
	changes  *prometheus.CounterVec
	notifies *prometheus.CounterVec
}

// New returns a Service.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{o: o, log: o.Logger}
	s.held = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linegate_handoff_held_events_total",
		Help: "Events held for a human (not answered by a rule: a person owns the conversation), by channel.",
	}, []string{"channel"})
	s.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linegate_handoff_changes_total",
		Help: "Conversation state changes recorded, by channel and new state.",
	}, []string{"channel", "state"})
	s.notifies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linegate_handoff_notifications_total",
		Help: "Notification attempts, by channel and outcome (sent, failed, gave_up).",
	}, []string{"channel", "outcome"})
	for ch := range o.Channels {
		s.held.WithLabelValues(ch)
	}
	return s
}

// Collectors returns the service's metrics.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.held, s.changes, s.notifies}
}

// check validates a channel and conversation id.
func (s *Service) check(channel, id string) error {
	if _, ok := s.o.Channels[channel]; !ok {
		return ErrNotFound
	}
	kind, rest, ok := strings.Cut(id, ":")
	if !ok || rest == "" || (kind != "user" && kind != "group" && kind != "room") || strings.ContainsAny(rest, ":/ \n") {
		return ErrNotFound
	}
	return nil
}

// List returns the conversations of the channels (all configured when
// nil) in the states (all when none), the latest active first. Only
// conversations that were ever handed off have a stored state.
func (s *Service) List(ctx context.Context, channels []string, states ...State) ([]Conversation, error) {
	if channels == nil {
		for ch := range s.o.Channels {
			channels = append(channels, ch)
		}
	}
	return s.o.Store.Conversations(ctx, channels, states)
}

// Get returns a conversation's state: the bot's when none is stored but
// the ledger has records of it; ErrNotFound when it has none.
func (s *Service) Get(ctx context.Context, channel, id string) (Conversation, error) {
	if err := s.check(channel, id); err != nil {
		return Conversation{}, err
	}
	c, err := s.o.Store.Conversation(ctx, channel, id)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Conversation{}, err
	}
	cs, err := s.o.Store.SubjectRecords(ctx, id, 0, 1)
	if err != nil {
		return Conversation{}, err
	}
	if len(cs) == 0 {
		return Conversation{}, ErrNotFound
	}
	return Conversation{Channel: channel, ID: id, State: StateBot}, nil
}

// state returns the stored state, or the bot's.
func (s *Service) state(ctx context.Context, channel, id string) (Conversation, error) {
	c, err := s.o.Store.Conversation(ctx, channel, id)
	if errors.Is(err, ErrNotFound) {
		return Conversation{Channel: channel, ID: id, State: StateBot}, nil
	}
	return c, err
}

// change records a change of state with the effect that applies it, in
// one commit (with the notifications it queues).
func (s *Service) change(ctx context.Context, by string, e SetState, detail map[string]any) error {
	e.At = s.o.Now()
	if detail == nil {
		detail = map[string]any{}
	}
	detail["channel"], detail["conversation"], detail["state"], detail["by"] = e.Channel, e.ID, string(e.State), by
	if e.Agent != "" {
		detail["agent"] = e.Agent
	}
	if e.Reason != "" {
		detail["reason"] = e.Reason
	}
	effects := []ledger.Effect{e}
	if e.State == StateHuman && e.Agent == "" {
		effects = append(effects, s.notifications(e)...)
	}
	if _, err := outbound.RecordAdmin(ctx, s.o.Ledger, "handoff", detail, []string{e.ID}, e.At, effects...); err != nil {
		if errors.Is(err, ledger.ErrConflict) {
			return ErrConflict
		}
		return err
	}
	s.changes.WithLabelValues(e.Channel, string(e.State)).Inc()
	return nil
}

// HandOff moves a conversation to a person, waiting for one, for a rule
// (the handoff: action): recorded as the rule's doing. A conversation a
// person holds already stays theirs.
func (s *Service) HandOff(ctx context.Context, channel, id, rule string) error {
	err := s.change(ctx, "rule:"+rule, SetState{Channel: channel, ID: id, State: StateHuman, Reason: "rule:" + rule,
		From: []State{StateBot, StateResolved}}, nil)
	if errors.Is(err, ErrConflict) {
		return nil // a person has it already
	}
	return err
}

// TakeOver gives a conversation to the actor, whoever held it (one the
// actor holds already stays so, and nothing is recorded).
func (s *Service) TakeOver(ctx context.Context, a Actor, channel, id, reason string) error {
	if err := s.check(channel, id); err != nil {
		return err
	}
	if a.Name == "" {
		return invalid("an agent needs a name")
	}
	if reason == "" {
		reason = "takeover"
	}
	cur, err := s.state(ctx, channel, id)
	if err != nil {
		return err
	}
	if cur.State == StateHuman && cur.Agent == a.Name {
		return nil // theirs already: nothing changes, nothing is recorded
	}
	return s.change(ctx, "agent:"+a.Name, SetState{Channel: channel, ID: id, State: StateHuman, Agent: a.Name, Reason: reason,
		From: []State{cur.State}}, map[string]any{"role": a.Role, "from": string(cur.State), "from_agent": cur.Agent})
}

// HandBack returns a conversation to the bot: one another person holds
// only for an admin (ErrNotYours).
func (s *Service) HandBack(ctx context.Context, a Actor, channel, id string) error {
	return s.release(ctx, a, channel, id, StateBot, "handback")
}

// Resolve marks a conversation resolved: the bot answers its next events.
func (s *Service) Resolve(ctx context.Context, a Actor, channel, id string) error {
	return s.release(ctx, a, channel, id, StateResolved, "resolved")
}

func (s *Service) release(ctx context.Context, a Actor, channel, id string, to State, reason string) error {
	if err := s.check(channel, id); err != nil {
		return err
	}
	if a.Name == "" {
		return invalid("an agent needs a name")
	}
	cur, err := s.state(ctx, channel, id)
	if err != nil {
		return err
	}
	if cur.State != StateHuman {
		return ErrNotHeld
	}
	if cur.Agent != "" && cur.Agent != a.Name && !a.overrides() {
		return ErrNotYours
	}
	return s.change(ctx, "agent:"+a.Name, SetState{Channel: channel, ID: id, State: to, Reason: reason, From: []State{StateHuman}},
		map[string]any{"role": a.Role, "from": string(cur.State), "from_agent": cur.Agent})
}

// ReturnIdle returns to the bot the human conversations idle for longer
// than their channel's idle time, each in a record of its own ("idle"),
// and returns how many it returned.
func (s *Service) ReturnIdle(ctx context.Context) (int, error) {
	var chans []string
	for ch, o := range s.o.Channels {
		if o.Idle > 0 {
			chans = append(chans, ch)
		}
	}
	if len(chans) == 0 {
		return 0, nil
	}
	cs, err := s.o.Store.Conversations(ctx, chans, []State{StateHuman})
	if err != nil {
		return 0, err
	}
	now, n := s.o.Now(), 0
	var errs []error
	for _, c := range cs {
		idle := s.o.Channels[c.Channel].Idle
		active := c.Active()
		if now.Sub(active) < idle {
			continue
		}
		err := s.change(ctx, "idle", SetState{Channel: c.Channel, ID: c.ID, State: StateBot, Reason: "idle",
			From: []State{StateHuman}, IdleSince: active}, map[string]any{"idle": idle.String(), "from_agent": c.Agent})
		switch {
		case errors.Is(err, ErrConflict): // active again meanwhile
		case err != nil:
			errs = append(errs, err)
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// RunIdle returns idle conversations to the bot every interval until ctx
// ends.
func (s *Service) RunIdle(ctx context.Context, every time.Duration) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		if n, err := s.ReturnIdle(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("handoff: return idle conversations", "err", err)
		} else if n > 0 {
			s.log.Info("handoff: idle conversations returned to the bot", "conversations", n)
		}
	})
}

// subjectsOf are the subjects a conversation's records are sealed under.
func subjectsOf(id string) []string { return []string{id} }

// target is the LINE id a push goes to.
func target(id string) string {
	_, rest, _ := strings.Cut(id, ":")
	return rest
}
