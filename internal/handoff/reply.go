package handoff

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/outbound"
)

// maxMessages is how many message objects one reply or push takes.
const maxMessages = 5

// Reply sends a person's messages to a conversation they own (ErrNotHeld
// when no person does, ErrNotYours when another does; one waiting for a
// person becomes theirs, recorded first).
// It goes through the outbound sender like the bot's sends: the kill
// switch, dry-run and consent hold it back and it is recorded all the
// same, naming the person. It replies with the latest event's reply token
// while it is valid and unused, else pushes with a retry key.
func (s *Service) Reply(ctx context.Context, a Actor, channel, id string, messages []json.RawMessage) (ReplyResult, error) {
	if err := s.check(channel, id); err != nil {
		return ReplyResult{}, err
	}
	if a.Name == "" {
		return ReplyResult{}, invalid("an agent needs a name")
	}
	if err := checkMessages(messages); err != nil {
		return ReplyResult{}, err
	}
	cur, err := s.state(ctx, channel, id)
	if err != nil {
		return ReplyResult{}, err
	}
	if cur.State != StateHuman {
		return ReplyResult{}, ErrNotHeld
	}
	if cur.Agent != "" && cur.Agent != a.Name {
		return ReplyResult{}, ErrNotYours
	}
	if cur.Agent == "" {
		err := s.change(ctx, "agent:"+a.Name, SetState{Channel: channel, ID: id, State: StateHuman, Agent: a.Name, Reason: cur.Reason,
			From: []State{StateHuman}}, map[string]any{"role": a.Role, "from": string(cur.State), "on": "reply"})
		if err != nil && !errors.Is(err, ErrConflict) {
			return ReplyResult{}, err
		}
	}
	_, lt, err := s.scan(ctx, channel, id, 20)
	if err != nil {
		return ReplyResult{}, err
	}
	opts := s.o.Channels[channel]
	req := outbound.Request{
		Channel: channel, Retention: opts.Retention, Subjects: append(subjectsOf(id), lt.eventSubj...),
		EventKey: "agent-reply:" + randomID(), Record: lt.record, Rule: "", To: target(id),
		Messages: messages, Class: outbound.Transactional, Agent: a.Name,
		Extra: map[string]string{"conversation": id},
	}
	if strings.HasPrefix(id, "user:") {
		req.UserID = target(id)
	}
	// The Sender claims the token before the call, from the registry
	// that linegate's rules and the proxy's tools claim from too: a
	// reply that does not get it pushes.
	req.ReplyToken, req.ReceivedMs = lt.replyToken, lt.replyMs
	if lt.spentBy != 0 {
		// The latest event's token was spent by a reply on record (a
		// tool's, another process's): a push, and its record says why.
		req.Extra["reply_token"] = fmt.Sprintf("used by record %d: pushed", lt.spentBy)
	}
	outcome, rec, err := s.o.Sender.SendRecorded(ctx, req)
	res := ReplyResult{Outcome: string(outcome)}
	if rec != nil {
		res.Via, res.Record = rec.Endpoint, rec.Index
		if ids := rec.RequestIDs(); len(ids) > 0 {
			res.RequestID = ids[len(ids)-1]
		}
	}
	if err != nil {
		return res, lineError(err, rec)
	}
	if nerr := s.o.Store.NoteAgent(ctx, channel, id, s.o.Now()); nerr != nil {
		s.log.Warn("handoff: note a reply", "channel", channel, "err", nerr)
	}
	return res, nil
}

// checkMessages checks the shape of a reply's message objects: 1 to 5
// JSON objects with a type; a text message needs its text. LINE judges
// the rest.
func checkMessages(ms []json.RawMessage) error {
	if len(ms) == 0 || len(ms) > maxMessages {
		return invalid("%d messages: want 1 to %d", len(ms), maxMessages)
	}
	for i, m := range ms {
		if d := jsonDepth(m); d > maxMessageDepth {
			return invalid("message %d nests %d levels deep: at most %d", i+1, d, maxMessageDepth)
		}
		var v map[string]any
		if json.Unmarshal(m, &v) != nil {
			return invalid("message %d is not a JSON object", i+1)
		}
		typ, _ := v["type"].(string)
		if typ == "" {
			return invalid("message %d has no type", i+1)
		}
		if typ == "text" {
			if t, _ := v["text"].(string); strings.TrimSpace(t) == "" {
				return invalid("message %d: a text message needs text", i+1)
			}
		}
	}
	return nil
}

// MarkRead marks the conversation read up to its latest message, with
// that message's markAsReadToken (LINE's markAsRead), for the actor.
func (s *Service) MarkRead(ctx context.Context, a Actor, channel, id string) error {
	if err := s.check(channel, id); err != nil {
		return err
	}
	_, lt, err := s.scan(ctx, channel, id, 20)
	if err != nil {
		return err
	}
	if lt.readToken == "" {
		return invalid("no message of the conversation carries a markAsReadToken")
	}
	_, rec, err := s.o.Sender.Chat(ctx, outbound.ChatRequest{
		Channel: channel, Retention: s.o.Channels[channel].Retention, Subjects: append(subjectsOf(id), lt.eventSubj...),
		Endpoint: outbound.EndpointMarkAsRead, Token: lt.readToken, EventKey: lt.eventKey, Record: lt.record,
		Agent: a.Name, Extra: map[string]string{"conversation": id},
	})
	return lineError(err, rec)
}

// Typing shows the loading animation in a user's one-on-one chat while
// the actor, who holds it, types (LINE shows it nowhere else): for
// TypingEvery, started at most once per TypingEvery in a conversation
// (ErrTypingTooSoon: no call, no record).
func (s *Service) Typing(ctx context.Context, a Actor, channel, id string) error {
	if err := s.check(channel, id); err != nil {
		return err
	}
	if !strings.HasPrefix(id, "user:") {
		return invalid("the loading animation is shown in one-on-one chats only")
	}
	cur, err := s.state(ctx, channel, id)
	if err != nil {
		return err
	}
	if err := a.holds(cur); err != nil {
		return err
	}
	if !s.typing.take(channel, id, s.o.Now()) {
		return ErrTypingTooSoon
	}
	_, rec, err := s.o.Sender.Chat(ctx, outbound.ChatRequest{
		Channel: channel, Retention: s.o.Channels[channel].Retention, Subjects: subjectsOf(id),
		Endpoint: outbound.EndpointLoading, UserID: target(id), Seconds: int(TypingEvery / time.Second),
		EventKey: "agent-typing:" + randomID(), Agent: a.Name, Extra: map[string]string{"conversation": id},
	})
	return lineError(err, rec)
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
