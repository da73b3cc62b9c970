package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// Sender sends what the rules decide. *outbound.Sender implements it.
type Sender interface {
	Send(ctx context.Context, r outbound.Request) (outbound.Outcome, error)
}

// Cooldowns keeps when rules may fire again for a user, in the database,
// so that a restart or another replica knows. The stores implement it.
type Cooldowns interface {
	// Cooldown reports whether key may fire now for event, and if so
	// holds it until until: it may when it is not held, or held by this
	// same event (a retry of it).
	Cooldown(ctx context.Context, key, event string, now, until time.Time) (bool, error)
}

// ChannelInfo is what the engine needs of a channel.
type ChannelInfo struct {
	Retention string
	// AllowDryRunHeader lets a webhook's X-Line-Dry-Run: true make its
	// events dry-run (for staging channels).
	AllowDryRunHeader bool
}

// EngineOptions configures an Engine.
type EngineOptions struct {
	Sender Sender
	// Consent records consent keywords: a consent record, sealed under
	// the user's key, that changes the user's consent in the same commit
	// (nil: keywords change nothing).
	Consent  outbound.Committer
	Ledger   outbound.Appender
	Channels map[string]ChannelInfo
	// LookupHosts is the allow-list of hosts ("host" or "host:port") that
	// lookups may call; a lookup elsewhere fails (and the fallback is
	// sent). Host and port are compared exactly; an entry without a port
	// means the scheme's default port (443 for https, 80 for http).
	// Entries that are not a host or host:port (CheckLookupHosts) allow
	// nothing.
	LookupHosts []string
	Logger      *slog.Logger
	Now         func() time.Time
	// Cooldowns, if set, keeps rule cooldowns durably and shared; without
	// it they are kept in this process's memory.
	Cooldowns Cooldowns
	// Handoffs hands conversations to people for the rules' handoff
	// action (nil: such a rule fails).
	Handoffs Handoffs
}

// Handoffs hands a conversation ("user:U…", "group:C…", "room:R…") to a
// person for a rule, recording it. *handoff.Service implements it.
type Handoffs interface {
	HandOff(ctx context.Context, channel, conversation, rule string) error
}

// Delivery is what the engine knows of an event besides the event itself:
// how it came and what its records are to carry. The pipeline's queue item
// gives it.
type Delivery struct {
	// Key is the event's dedup key (its webhookEventId): a retry of the
	// same event has the same key.
	Key     string
	Channel string
	// Destination is the bot's user id, from the request.
	Destination string
	// Retention is the retention class of the records about the event.
	Retention string
	// Subjects are whose data the event holds: the records about it are
	// sealed under their keys.
	Subjects []string
	// Record is the ledger record of the webhook request.
	Record     uint64
	ReceivedMs int64
	// Header carries request headers the rules may need (such as
	// X-Line-Dry-Run), never secrets.
	Header map[string]string
}

// Engine runs the rules on events: it is the pipeline's action.
type Engine struct {
	o     EngineOptions
	set   atomic.Pointer[Set]
	hosts []hostEntry
	fails *oplog.Limiter // lookups and forwards that failed, by class and channel, rate limited
	// http calls lookups and forwards: it dials only the address its
	// request's fence names and follows no redirect.
	http *http.Client

	mu       sync.Mutex
	cooldown map[string]cooldown // in memory, without Cooldowns
}

// NewEngine returns an engine running set.
func NewEngine(set *Set, o EngineOptions) *Engine {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Engine{o: o, cooldown: map[string]cooldown{}, http: fencedClient(), fails: oplog.NewLimiter(o.Logger, oplog.Every)}
	for _, h := range o.LookupHosts {
		if he, err := parseHostEntry(h); err == nil {
			e.hosts = append(e.hosts, he)
		}
	}
	e.set.Store(set)
	return e
}

// SetHandoffs gives the engine its handoff action's service; call it
// before the engine handles events.
func (e *Engine) SetHandoffs(h Handoffs) { e.o.Handoffs = h }

// Swap replaces the rule set (a reload) and returns the old one.
func (e *Engine) Swap(set *Set) *Set { return e.set.Swap(set) }

// Rules returns the active rule set.
func (e *Engine) Rules() *Set { return e.set.Load() }

// Handle runs the rules on an event. Actions run at least once per event:
// a retry of the same delivery may fire them again.
func (e *Engine) Handle(ctx context.Context, dv Delivery, ev *line.Event) error {
	set := e.set.Load()
	now := e.o.Now()
	in := Input{Channel: dv.Channel, Type: ev.Type, Time: now}
	d := &Data{Channel: dv.Channel, Type: ev.Type, Now: now}
	if ev.Source != nil {
		in.SourceType = ev.Source.Type
		d.UserID, d.GroupID, d.RoomID = ev.Source.UserID, ev.Source.GroupID, ev.Source.RoomID
	}
	if ev.Message != nil && ev.Message.Type == "text" && ev.Type == "message" {
		in.Text, in.HasText, d.Text = ev.Message.Text, true, ev.Message.Text
	}
	if ev.Postback != nil {
		in.Postback, in.HasPost, d.Postback = ev.Postback.Data, true, ev.Postback.Data
	}

	if in.HasText && d.UserID != "" {
		if err := e.consentKeywords(ctx, set, dv, d.UserID, in.Text, now); err != nil {
			return err
		}
	}
	var errs []error
	for seq, r := range set.Match(in) {
		ok, err := e.cool(ctx, dv, r, d.UserID, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %s: cooldown: %w", r.Name, err))
			continue
		}
		if !ok {
			continue
		}
		if err := e.fire(ctx, r, seq, dv, ev, d); err != nil {
			errs = append(errs, fmt.Errorf("rule %s: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}

// cool reports whether a rule may fire for the user, and notes that it
// does. A retry of the same event may fire again (actions run at least
// once per event).
func (e *Engine) cool(ctx context.Context, dv Delivery, r *Rule, user string, now time.Time) (bool, error) {
	if r.Cooldown <= 0 || user == "" {
		return true, nil
	}
	key := CooldownKey(dv.Channel, r.Name, user)
	if e.o.Cooldowns != nil {
		return e.o.Cooldowns.Cooldown(ctx, key, dv.Key, now, now.Add(r.Cooldown))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.cooldown[key]; ok && now.Before(c.until) && c.event != dv.Key {
		return false, nil
	}
	e.cooldown[key] = cooldown{until: now.Add(r.Cooldown), event: dv.Key}
	return true, nil
}

type cooldown struct {
	until time.Time
	event string
}

// CooldownKey names a rule's cooldown for a user: a hash, so that the
// stored cooldowns hold no LINE user id.
func CooldownKey(channel, rule, user string) string {
	sum := sha256.Sum256([]byte(channel + "\x00" + rule + "\x00" + user))
	return hex.EncodeToString(sum[:16])
}

// Consent applies the consent keywords alone to an event (the opt-out
// and opt-in keywords): what still applies while a person owns the
// conversation and no rule answers it.
func (e *Engine) Consent(ctx context.Context, dv Delivery, ev *line.Event) error {
	if ev.Type != "message" || ev.Message == nil || ev.Message.Type != "text" || ev.Source == nil || ev.Source.UserID == "" {
		return nil
	}
	return e.consentKeywords(ctx, e.set.Load(), dv, ev.Source.UserID, ev.Message.Text, e.o.Now())
}

func (e *Engine) consentKeywords(ctx context.Context, set *Set, dv Delivery, user, text string, now time.Time) error {
	n := Normalize(text)
	var optIn *bool
	for _, k := range set.Consent.OptOut {
		if n == Normalize(k) {
			optIn = new(bool)
		}
	}
	for _, k := range set.Consent.OptIn {
		if n == Normalize(k) {
			v := true
			optIn = &v
		}
	}
	if optIn == nil || e.o.Consent == nil {
		return nil
	}
	if _, err := outbound.RecordAdmin(ctx, e.o.Consent, "consent", map[string]any{
		"channel": dv.Channel, "user": user, "opt_in": *optIn, "source": "keyword", "event_key": dv.Key,
	}, []string{"user:" + user}, now, outbound.SetConsent{Channel: dv.Channel, User: user, OptIn: *optIn, At: now, Source: "keyword"}); err != nil {
		return fmt.Errorf("record consent: %w", err)
	}
	return nil
}

func (e *Engine) fire(ctx context.Context, r *Rule, seq int, dv Delivery, ev *line.Event, d *Data) error {
	ch := e.o.Channels[dv.Channel]
	if d.Event == nil {
		json.Unmarshal(ev.Raw, &d.Event) // for templates; only when a rule fires
	}
	if r.Forward != nil {
		if err := e.forward(ctx, r, dv, ev); err != nil {
			return err
		}
	}
	if r.Handoff != nil {
		// Handed off before the message is sent: no rule answers the
		// conversation's next events, even while the message goes out.
		conv := ev.Conversation()
		if e.o.Handoffs == nil || conv == "" {
			return fmt.Errorf("handoff: no handoff service, or an event of no conversation")
		}
		if err := e.o.Handoffs.HandOff(ctx, dv.Channel, conv, r.Name); err != nil {
			return fmt.Errorf("handoff: %w", err)
		}
	}
	msgs := r.messages
	if r.Lookup != nil {
		e.loading(ctx, r, dv, ev, d)
		res, err := e.lookup(ctx, r.Lookup, d)
		if err != nil {
			e.fails.Log(slog.LevelWarn, oplog.Key{Class: "lookup_failed", Channel: dv.Channel}, "lookup failed: sending the rule's fallback",
				"rule", r.Name, "event", dv.Key, "err", oplog.Truncate(err.Error(), 300))
			msgs = r.Lookup.Fallback
		} else {
			d.Lookup = res
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	rendered, err := renderMessages(msgs, d)
	if err != nil {
		return err
	}
	to := d.UserID
	if d.GroupID != "" {
		to = d.GroupID
	} else if d.RoomID != "" {
		to = d.RoomID
	}
	class := outbound.Transactional
	if r.Class == "promotional" {
		class = outbound.Promotional
	}
	_, err = e.o.Sender.Send(ctx, outbound.Request{
		Channel: dv.Channel, Retention: dv.Retention, Subjects: dv.Subjects, EventKey: dv.Key, Record: dv.Record, Rule: r.Name,
		To: to, UserID: d.UserID, ReplyToken: ev.ReplyToken, ReceivedMs: dv.ReceivedMs, ForcePush: r.Push,
		Messages: rendered, Class: class, Seq: seq,
		DryRun: ch.AllowDryRunHeader && strings.EqualFold(dv.Header["X-Line-Dry-Run"], "true"),
	})
	return err
}

// Chatter makes LINE's chat calls; *outbound.Sender implements it.
type Chatter interface {
	Chat(ctx context.Context, r outbound.ChatRequest) (outbound.Outcome, *outbound.Recorded, error)
}

// loading shows the loading animation in a user's one-on-one chat while
// a lookup runs, if the rule asks for it and the sender makes chat calls.
// It never fails the rule: the answer matters more than the animation.
func (e *Engine) loading(ctx context.Context, r *Rule, dv Delivery, ev *line.Event, d *Data) {
	c, ok := e.o.Sender.(Chatter)
	if !ok || r.Lookup.Loading == 0 || ev.Source == nil || ev.Source.Type != "user" || d.UserID == "" {
		return
	}
	if _, _, err := c.Chat(ctx, outbound.ChatRequest{Channel: dv.Channel, Retention: dv.Retention, Subjects: dv.Subjects,
		Endpoint: outbound.EndpointLoading, UserID: d.UserID, Seconds: r.Lookup.Loading, EventKey: dv.Key, Record: dv.Record,
		Extra: map[string]string{"rule": r.Name}}); err != nil {
		e.fails.Log(slog.LevelWarn, oplog.Key{Class: "loading_failed", Channel: dv.Channel}, "loading animation not shown",
			"rule", r.Name, "event", dv.Key, "err", oplog.Truncate(err.Error(), 300))
	}
}

// lookup calls the data service and decodes its JSON.
func (e *Engine) lookup(ctx context.Context, l *Lookup, d *Data) (any, error) {
	u, err := renderURL(l.URL, d)
	if err != nil {
		return nil, err
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
		return nil, fmt.Errorf("lookup url is not http(s)")
	}
	if !allowedHost(e.hosts, pu) {
		return nil, fmt.Errorf("lookup host %s is not in lookup_hosts", pu.Host)
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(withFence(ctx, pu, false), timeout)
	defer cancel()
	method := strings.ToUpper(l.Method)
	if method == "" {
		method = "GET"
	}
	var body io.Reader
	if method == "POST" {
		v, err := renderValue(map[string]any(l.Body), d)
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(v)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, pu.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lookup timed out after %v", timeout)
		}
		return nil, fmt.Errorf("lookup: %w", errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("lookup answered %d", resp.StatusCode)
	}
	var v any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
		return nil, fmt.Errorf("lookup: not JSON")
	}
	return v, nil
}

// forward sends the event to the upstream bot as LINE would have: a
// callback body with this one event, signed with the upstream's own
// secret, to its URL alone (no redirects). The call and its answer are
// recorded, with the id of the secret that signed.
func (e *Engine) forward(ctx context.Context, r *Rule, dv Delivery, ev *line.Event) error {
	f := r.Forward
	fu, err := url.Parse(f.URL)
	if err != nil || len(f.secret) == 0 {
		return fmt.Errorf("forward: not loaded") // Load checks both
	}
	body, _ := json.Marshal(struct {
		Destination string            `json:"destination"`
		Events      []json.RawMessage `json:"events"`
	}{dv.Destination, []json.RawMessage{ev.Raw}})
	timeout := r.Forward.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	fctx, cancel := context.WithTimeout(withFence(ctx, fu, f.loopback), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(fctx, "POST", f.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "linegate-forward")
	req.Header.Set(line.SignatureHeader, line.Sign(f.secret, body))
	start := e.o.Now()
	status, errText := 0, ""
	resp, err := e.http.Do(req)
	if err != nil {
		errText = "forward failed: no answer"
		if errors.Is(err, errOutsideFence) {
			errText = "forward failed: " + errOutsideFence.Error()
		}
		if fctx.Err() != nil {
			errText = fmt.Sprintf("forward timed out after %v", timeout)
		}
	} else {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		status = resp.StatusCode
	}
	payload, _ := record.Encode(&record.Meta{Channel: dv.Channel, ReceivedMs: start.UnixMilli()}, &record.Outbound{
		EventKey: dv.Key, Record: dv.Record, Rule: r.Name, Endpoint: "forward",
		URL: f.URL, SecretID: f.SecretID, Status: status, Error: errText, Request: json.RawMessage(body),
		LatencyMs: float64(e.o.Now().Sub(start)) / float64(time.Millisecond),
	})
	if err := outbound.AppendRetrying(e.o.Ledger, ledger.Entry{Kind: ledger.KindOutbound, Time: start, Channel: dv.Channel, Retention: dv.Retention, Payload: payload, Subjects: dv.Subjects}); err != nil {
		return fmt.Errorf("record forward: %w", err)
	}
	if errText == "" && status/100 != 2 {
		errText = fmt.Sprintf("forward answered %d", status)
	}
	if errText != "" {
		e.fails.Log(slog.LevelError, oplog.Key{Class: "forward_failed", Channel: dv.Channel}, "forward to the bot failed",
			"rule", r.Name, "event", dv.Key, "host", fu.Host, "status", status, "err", errText)
		return errors.New(errText)
	}
	return nil
}
