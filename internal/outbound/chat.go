package outbound

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// The chat endpoints: LINE's calls that change what the user sees of the
// chat without sending a message.
const (
	EndpointMarkAsRead = "markAsRead" // POST /v2/bot/chat/markAsRead
	EndpointLoading    = "loading"    // POST /v2/bot/chat/loading/start
	pathMarkAsRead     = "/v2/bot/chat/markAsRead"
	pathLoading        = "/v2/bot/chat/loading/start"
	minLoadingSeconds  = 5
	maxLoadingSeconds  = 60
)

// MarkAsRead marks the messages of a chat read, up to the one whose
// markAsReadToken (from its webhook event) is given.
func (c *Client) MarkAsRead(ctx context.Context, body []byte) *Call {
	return c.do(ctx, EndpointMarkAsRead, pathMarkAsRead, body, "")
}

// Loading shows the loading animation in a one-on-one chat.
func (c *Client) Loading(ctx context.Context, body []byte) *Call {
	return c.do(ctx, EndpointLoading, pathLoading, body, "")
}

// ChatRequest is a chat call: mark a chat read (Token set) or show the
// loading animation to a user (UserID set, for Seconds).
type ChatRequest struct {
	Channel   string
	Retention string
	Subjects  []string
	Endpoint  string // EndpointMarkAsRead or EndpointLoading
	// Token is the markAsReadToken; UserID the chat of the loading
	// animation (users only: LINE shows it in one-on-one chats alone),
	// Seconds its length (5 to 60, a multiple of 5; 0: 5).
	Token   string
	UserID  string
	Seconds int
	// EventKey and Record link the call to what caused it (an event, or
	// an agent's action); Agent names the person it was made for.
	EventKey string
	Record   uint64
	Agent    string
	Extra    map[string]string
}

// Chat makes a chat call through the same switches as a send (the kill
// switch and dry-run hold it back) and records it, whatever became of it,
// as an outbound record. The error says what failed, never a token.
func (s *Sender) Chat(ctx context.Context, r ChatRequest) (Outcome, *Recorded, error) {
	var body []byte
	switch r.Endpoint {
	case EndpointMarkAsRead:
		if r.Token == "" {
			return "", nil, fmt.Errorf("markAsRead: no markAsReadToken")
		}
		body, _ = json.Marshal(map[string]string{"markAsReadToken": r.Token})
	case EndpointLoading:
		if r.UserID == "" {
			return "", nil, fmt.Errorf("loading: the animation is shown in a user's chat alone")
		}
		if r.Seconds == 0 {
			r.Seconds = minLoadingSeconds
		}
		if r.Seconds < minLoadingSeconds || r.Seconds > maxLoadingSeconds || r.Seconds%5 != 0 {
			return "", nil, fmt.Errorf("loading: %d seconds: want 5 to 60, a multiple of 5", r.Seconds)
		}
		body, _ = json.Marshal(map[string]any{"chatId": r.UserID, "loadingSeconds": r.Seconds})
	default:
		return "", nil, fmt.Errorf("chat endpoint %q: want %s or %s", r.Endpoint, EndpointMarkAsRead, EndpointLoading)
	}
	now := s.o.Now()
	rec := &record.Outbound{EventKey: r.EventKey, Record: r.Record, Endpoint: r.Endpoint, Request: body,
		Agent: r.Agent, Subj: r.Subjects, Extra: r.Extra}
	switch {
	case s.KillSwitch():
		rec.Outcome, rec.Reason = string(Suppressed), "kill switch on"
	case s.DryRun(r.Channel):
		rec.Outcome, rec.Reason = string(DryRun), "dry-run: not sent"
	}
	if rec.Outcome == "" {
		c := s.o.Clients[r.Channel]
		switch {
		case c == nil || !c.hasToken():
			rec.Outcome, rec.Reason = string(Failed), "no access token for the channel"
		default:
			if err := s.limiters[r.Channel].Wait(ctx); err != nil {
				rec.Outcome, rec.Reason = string(Failed), "rate limit wait: "+err.Error()
				break
			}
			var call *Call
			if r.Endpoint == EndpointMarkAsRead {
				call = c.MarkAsRead(ctx, body)
			} else {
				call = c.Loading(ctx, body)
			}
			rec.Attempts = call.Attempts
			if call.OK() {
				rec.Outcome = string(Sent)
			} else {
				rec.Outcome, rec.Reason = string(Failed), call.String()
			}
		}
	}
	s.sends.WithLabelValues(r.Channel, r.Endpoint, rec.Outcome).Inc()
	rd := &Recorded{Outbound: rec}
	payload, err := record.Encode(&record.Meta{Channel: r.Channel, ReceivedMs: now.UnixMilli()}, rec)
	if err == nil {
		rd.Index, err = appendRetrying(s.o.Ledger, ledger.Entry{Kind: ledger.KindOutbound, Time: now, Channel: r.Channel,
			Retention: r.Retention, Payload: payload, Subjects: rec.Subjects()})
	}
	if err != nil {
		return Outcome(rec.Outcome), rd, fmt.Errorf("record %s %s: %w", r.Endpoint, rec.Outcome, err)
	}
	if rec.Outcome == string(Failed) {
		return Failed, rd, &FailedError{Endpoint: r.Endpoint, Reason: rec.Reason}
	}
	return Outcome(rec.Outcome), rd, nil
}

// ReplyWindow is how long after receipt a reply token is used.
func (s *Sender) ReplyWindow() time.Duration { return s.o.ReplyWindow }
