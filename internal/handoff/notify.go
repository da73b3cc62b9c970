package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
)

// Target is where notifications go: a Slack-compatible incoming webhook
// (Kind "slack": {"text": ...}) or a generic JSON webhook (Kind "json":
// the fields of the notification). Its URL may hold a secret (Slack's
// do): records name the target, never the URL.
type Target struct {
	Name string
	Kind string // "slack" or "json"
	URL  string
}

// Notification delivery: attempts back off from notifyBase, doubling, to
// notifyMax; after notifyAttempts a notification is given up (recorded).
const (
	notifyBase     = time.Second
	notifyMax      = 5 * time.Minute
	notifyAttempts = 12
	notifyTimeout  = 10 * time.Second
)

// notice is the generic JSON notification: no message text, the
// conversation by pseudonym unless the channel names ids.
type notice struct {
	Event        string    `json:"event"` // "handoff"
	Channel      string    `json:"channel"`
	Conversation string    `json:"conversation"`
	Reason       string    `json:"reason"`
	At           time.Time `json:"at"`
	Console      string    `json:"console,omitempty"`
}

// notifications returns the effects that queue the notifications of a
// conversation that now waits for a person.
func (s *Service) notifications(e SetState) []ledger.Effect {
	o := s.o.Channels[e.Channel]
	n := notice{Event: "handoff", Channel: e.Channel, Conversation: record.Pseudonym(e.ID), Reason: e.Reason, At: e.At}
	if o.NotifyIDs {
		n.Conversation = e.ID
	}
	if o.ConsoleURL != "" {
		n.Console = o.ConsoleURL
		if o.NotifyIDs {
			n.Console += "?channel=" + url.QueryEscape(e.Channel) + "&conversation=" + url.QueryEscape(e.ID)
		}
	}
	var effects []ledger.Effect
	for _, t := range o.Notify {
		var body []byte
		if t.Kind == "slack" {
			text := fmt.Sprintf("A conversation on channel %s waits for a person (%s): %s", n.Channel, n.Reason, n.Conversation)
			if n.Console != "" {
				text += " " + n.Console
			}
			body, _ = json.Marshal(map[string]string{"text": text})
		} else {
			body, _ = json.Marshal(n)
		}
		effects = append(effects, QueueNotification{Channel: e.Channel, Target: t.Name, Body: body, At: e.At})
	}
	return effects
}

// targetOf finds a channel's notification target by name.
func (s *Service) targetOf(channel, name string) (Target, bool) {
	for _, t := range s.o.Channels[channel].Notify {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// RunNotifications delivers the queued notifications every interval until
// ctx ends.
func (s *Service) RunNotifications(ctx context.Context, every time.Duration, client *http.Client) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		if _, err := s.Deliver(ctx, client); err != nil && ctx.Err() == nil {
			s.log.Error("handoff: deliver notifications", "err", err)
		}
	})
}

// Deliver makes one attempt at each due notification, and returns how
// many it attempted. Each attempt is an outbound record (endpoint
// "notify"), committed with its effect on the queue: done, or tried again
// later with backoff, or given up after notifyAttempts.
func (s *Service) Deliver(ctx context.Context, client *http.Client) (int, error) {
	if client == nil {
		client = &http.Client{Timeout: notifyTimeout}
	}
	now := s.o.Now()
	due, err := s.o.Store.DueNotifications(ctx, now, 32)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, nt := range due {
		// Claimed for the length of an attempt: another replica leaves it.
		ok, err := s.o.Store.ClaimNotification(ctx, nt.ID, nt.Next, now.Add(2*notifyTimeout))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		n++
		if err := s.attempt(ctx, client, nt); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

func (s *Service) attempt(ctx context.Context, client *http.Client, nt Notification) error {
	start := s.o.Now()
	rec := &record.Outbound{EventKey: fmt.Sprintf("notify:%d", nt.ID), Endpoint: "notify", Request: json.RawMessage(nt.Body),
		Extra: map[string]string{"target": nt.Target, "attempt": fmt.Sprint(nt.Attempts + 1)}}
	t, ok := s.targetOf(nt.Channel, nt.Target)
	status, errText := 0, ""
	if !ok {
		errText = "target no longer configured"
	} else {
		cctx, cancel := context.WithTimeout(ctx, notifyTimeout)
		req, err := http.NewRequestWithContext(cctx, "POST", t.URL, bytes.NewReader(nt.Body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "linegate-notify")
			var resp *http.Response
			resp, err = client.Do(req)
			if err == nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				status = resp.StatusCode
			}
		}
		cancel()
		if err != nil {
			errText = "no answer"
			if cctx.Err() != nil {
				errText = fmt.Sprintf("timed out after %v", notifyTimeout)
			}
		} else if status/100 != 2 {
			errText = fmt.Sprintf("answered %d", status)
		}
	}
	eff := NotificationAttempt{ID: nt.ID, Attempts: nt.Attempts + 1}
	outcome := "sent"
	switch {
	case errText == "":
		eff.Done = true
	case !ok || eff.Attempts >= notifyAttempts:
		eff.Done, outcome = true, "gave_up"
		rec.Reason = "given up after " + fmt.Sprint(eff.Attempts) + " attempts"
	default:
		outcome = "failed"
		eff.Next = start.Add(min(notifyBase<<(eff.Attempts-1), notifyMax))
	}
	rec.Outcome, rec.Status, rec.Error = outcome, status, errText
	rec.LatencyMs = float64(s.o.Now().Sub(start)) / float64(time.Millisecond)
	s.notifies.WithLabelValues(nt.Channel, outcome).Inc()
	payload, err := record.Encode(&record.Meta{Channel: nt.Channel, ReceivedMs: start.UnixMilli()}, rec)
	if err != nil {
		return err
	}
	_, err = s.o.Ledger.Commit(ctx, []ledger.Entry{{Kind: ledger.KindOutbound, Time: start, Channel: nt.Channel,
		Retention: s.o.Channels[nt.Channel].Retention, Payload: payload}}, eff)
	if err != nil {
		return fmt.Errorf("record notification attempt: %w", err)
	}
	if outcome != "sent" {
		s.log.Warn("handoff: notification not delivered", "channel", nt.Channel, "target", nt.Target, "attempt", eff.Attempts, "err", errText)
	}
	return nil
}
