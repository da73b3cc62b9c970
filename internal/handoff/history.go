package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// latest is what the history says of a conversation's latest events: the
// tokens a person's reply and mark-as-read use.
type latest struct {
	replyToken  string // of the latest event that had one, "" once used
	replyMs     int64  // its receipt
	readToken   string // the latest message's markAsReadToken
	record      uint64 // the latest webhook record of the conversation
	eventKey    string // its event's dedup key
	eventSubj   []string
	userID      string            // the latest event's user (for consent)
	usedReplies map[string]uint64 // reply token -> the record of the reply that spent it
	spentBy     uint64            // the record that spent the latest event's token, if it was
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// History returns up to limit of the latest lines of a conversation's
// history, oldest first, decrypted: the user's events, the bot's and the
// people's sends, chat calls and changes of state. Records whose payload
// was deleted (retention, shredding) are not in it.
func (s *Service) History(ctx context.Context, channel, id string, limit int) ([]Message, error) {
	if err := s.check(channel, id); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	msgs, _, err := s.scan(ctx, channel, id, limit)
	if err != nil {
		return nil, err
	}
	if len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	return msgs, nil
}

// scan reads the records of a conversation: the latest ones, enough for
// limit lines (each event has a webhook, an outcome and perhaps sends).
func (s *Service) scan(ctx context.Context, channel, id string, limit int) ([]Message, *latest, error) {
	const page = 1000
	keep := limit*4 + 16
	var idx []uint64
	for from := uint64(0); ; {
		cs, err := s.o.Store.SubjectRecords(ctx, id, from, page)
		if err != nil {
			return nil, nil, fmt.Errorf("handoff: records of the conversation: %w", err)
		}
		for _, c := range cs {
			if c.Channel == channel || c.Channel == "" {
				idx = append(idx, c.Index)
			}
			from = c.Index + 1
		}
		if len(idx) > keep {
			idx = append(idx[:0], idx[len(idx)-keep:]...)
		}
		if len(cs) < page {
			break
		}
	}
	lt := &latest{usedReplies: map[string]uint64{}}
	var msgs []Message
	eventMsg := map[string]int{} // "record/index" -> position in msgs
	convKeys := map[string]bool{}
	for _, i := range idx {
		for rec, err := range s.o.Store.Records(ctx, i, i+1) {
			if err != nil {
				return nil, nil, fmt.Errorf("handoff: read record %d: %w", i, err)
			}
			if rec.Payload == nil {
				continue
			}
			var leaf ledger.Leaf
			if leaf.UnmarshalBinary(rec.Leaf) != nil {
				continue
			}
			payload, err := ledger.OpenPayload(ctx, s.o.Sealer, rec)
			if err != nil {
				continue // shredded or unreadable: not in the history
			}
			meta, body, err := record.Decode(leaf.Kind, payload)
			if err != nil {
				continue
			}
			if meta.Channel != "" && meta.Channel != channel {
				continue
			}
			at := leaf.Time.UTC()
			switch b := body.(type) {
			case *record.Webhook:
				cb, err := line.ParseCallback(b.Raw)
				if err != nil {
					continue
				}
				for n, raw := range cb.Events {
					e := line.DecodeEvent(raw)
					if e.Conversation() != id {
						continue
					}
					typ, text := describeEvent(e)
					eventMsg[fmt.Sprintf("%d/%d", rec.Index, n)] = len(msgs)
					msgs = append(msgs, Message{Record: rec.Index, At: at, From: "user", Type: typ, Text: text, JSON: raw})
					key := e.DedupKey()
					convKeys[key] = true
					lt.record, lt.eventKey, lt.eventSubj = rec.Index, key, e.Subjects()
					if e.Source != nil && e.Source.UserID != "" {
						lt.userID = e.Source.UserID
					}
					if e.ReplyToken != "" {
						lt.replyToken, lt.replyMs = e.ReplyToken, meta.ReceivedMs
					}
					if e.Message != nil && e.Message.MarkAsReadToken != "" {
						lt.readToken = e.Message.MarkAsReadToken
					}
				}
			case *record.Outcome:
				if p, ok := eventMsg[fmt.Sprintf("%d/%d", b.Record, b.Index)]; ok {
					msgs[p].Outcome = b.Outcome
					msgs[p].Held = b.Outcome == "held_for_human"
				}
			case *record.Outbound:
				if b.Extra["conversation"] != id && !convKeys[b.EventKey] && !toolSendTo(b, id) {
					continue
				}
				m, ok := describeOutbound(b)
				if !ok {
					continue
				}
				m.Record, m.At = rec.Index, at
				var req struct {
					ReplyToken string `json:"replyToken"`
				}
				// A reply spends its token if LINE may have taken it: one
				// held back, that never left, or that LINE refused for
				// itself (429) leaves it good.
				if json.Unmarshal(b.Request, &req) == nil && req.ReplyToken != "" && outbound.MayHaveTaken(b.Attempts) {
					lt.usedReplies[req.ReplyToken] = rec.Index
				}
				msgs = append(msgs, m)
			case *record.Admin:
				if b.Action != "handoff" || b.Detail["channel"] != channel || b.Detail["conversation"] != id {
					continue
				}
				by, _ := b.Detail["by"].(string)
				st, _ := b.Detail["state"].(string)
				reason, _ := b.Detail["reason"].(string)
				text := "state " + st + " (" + by
				if reason != "" && reason != by {
					text += ", " + reason
				}
				text += ")"
				j, _ := json.Marshal(b.Detail)
				msgs = append(msgs, Message{Record: rec.Index, At: at, From: "tool:handoff", Type: "handoff", Text: text, JSON: j})
			}
		}
	}
	if i, ok := lt.usedReplies[lt.replyToken]; ok {
		lt.replyToken, lt.spentBy = "", i
	}
	return msgs, lt, nil
}

// toolEndpoints are the proxy's paths of the sends a conversation's history
// shows, by the Sender's names for them.
var toolEndpoints = map[string]string{"/v2/bot/message/reply": "reply", "/v2/bot/message/push": "push"}

// toolSendTo reports whether b is a tool's push to the conversation id
// ("user:U…", "group:C…", "room:R…"), through the proxy. A tool's reply
// is the conversation's by its event (the proxy links it when linegate
// saw the event).
func toolSendTo(b *record.Outbound, id string) bool {
	if b.Tool == "" || b.Endpoint != "/v2/bot/message/push" {
		return false
	}
	var req struct {
		To string `json:"to"`
	}
	if json.Unmarshal(b.Request, &req) != nil {
		return false
	}
	s, ok := line.ParseSubject(req.To)
	return ok && s == id
}

// describeEvent returns an event's type and its text, or a short
// description of what it is.
func describeEvent(e *line.Event) (typ, text string) {
	if e.Type != "message" || e.Message == nil {
		if e.Postback != nil {
			return e.Type, "[postback] " + e.Postback.Data
		}
		return e.Type, "[" + e.Type + "]"
	}
	switch e.Message.Type {
	case "text":
		return "text", e.Message.Text
	default:
		return e.Message.Type, "[" + e.Message.Type + "]"
	}
}

// describeOutbound makes a history line of a send or chat call; ok is
// false for records that are no line of the chat (a forward to a bot, a
// notification).
func describeOutbound(b *record.Outbound) (Message, bool) {
	from := "bot"
	if b.Agent != "" {
		from = "agent:" + b.Agent
	}
	endpoint := b.Endpoint
	if b.Tool != "" {
		// A tool's call through the proxy: its path.
		from = "tool:" + b.Tool
		endpoint = toolEndpoints[b.Endpoint]
	}
	held := b.Outcome != "sent" && b.Outcome != "failed" && b.Outcome != ""
	switch endpoint {
	case "reply", "push":
		var req struct {
			Messages []json.RawMessage `json:"messages"`
		}
		json.Unmarshal(b.Request, &req)
		var texts []string
		typ := ""
		for _, m := range req.Messages {
			t, s := describeMessage(m)
			if typ == "" {
				typ = t
			}
			texts = append(texts, s)
		}
		j, _ := json.Marshal(req.Messages)
		return Message{From: from, Type: typ, Text: strings.Join(texts, "\n"), JSON: j, Held: held, Outcome: b.Outcome}, true
	case "markAsRead":
		return Message{From: from, Type: b.Endpoint, Text: "[marked read]", Held: held, Outcome: b.Outcome}, true
	case "loading":
		return Message{From: from, Type: b.Endpoint, Text: "[typing]", Held: held, Outcome: b.Outcome}, true
	}
	return Message{}, false
}

// describeMessage returns a message object's type and its text, or a
// short description.
func describeMessage(raw json.RawMessage) (typ, text string) {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return "", "[message]"
	}
	str := func(k string) string { v, _ := m[k].(string); return v }
	typ = str("type")
	switch typ {
	case "text", "textV2":
		return typ, str("text")
	case "sticker":
		return typ, fmt.Sprintf("[sticker %s/%s]", str("packageId"), str("stickerId"))
	case "flex", "template", "imagemap":
		return typ, "[" + typ + "] " + str("altText")
	}
	return typ, "[" + typ + "]"
}
