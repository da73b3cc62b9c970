package sim

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// EchoGroup is a group chat of a channel whose member writes back every
// text message the bot pushes to the group, as a message event that LINE
// delivers to the channel's webhook endpoint (set with PUT
// /v2/bot/channel/webhook/endpoint, or Channel.Endpoint), signed with the
// channel's secret: a canary group whose testers answer at once.
//
// LINE sends no webhook for the bot's own messages; the echo is a member's
// message, as a person in the group would write it.
type EchoGroup struct {
	Channel string // the channel's id
	GroupID string // "C" and 32 hex digits
	// Member is the user id of the member who echoes (default: one made
	// from the group id).
	Member string
	// Delay is how long the member takes to answer (default none).
	Delay time.Duration
	// Endpoint is where the echo goes while the channel has no webhook
	// URL set (default: nowhere).
	Endpoint string
}

// AddEchoGroups adds echo groups to those of Options.EchoGroups.
func (a *API) AddEchoGroups(gs ...EchoGroup) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.opts.EchoGroups = append(a.opts.EchoGroups, gs...)
}

// echo has the echo group that to names, if any, write back the text
// messages pushed to it, in the background.
func (a *API) echo(ch *channelState, to string, raw json.RawMessage) {
	var g *EchoGroup
	a.mu.Lock()
	for i := range a.opts.EchoGroups {
		if eg := a.opts.EchoGroups[i]; eg.Channel == ch.ID && eg.GroupID == to {
			g = &eg
		}
	}
	ep, secret := ch.Endpoint, ch.Secret
	a.mu.Unlock()
	if g == nil {
		return
	}
	if ep == "" {
		ep = g.Endpoint
	}
	var msgs []struct{ Type, Text string }
	json.Unmarshal(raw, &msgs)
	var texts []string
	for _, m := range msgs {
		if m.Type == "text" {
			texts = append(texts, m.Text)
		}
	}
	if len(texts) == 0 {
		return
	}
	if ep == "" || secret == "" {
		a.opts.Logger.Warn("sim: echo group has no webhook endpoint or secret to write back to", "channel", ch.ID, "group", g.GroupID)
		return
	}
	member := g.Member
	if member == "" {
		member = BotUserID("member:" + g.GroupID)
	}
	go func() {
		if g.Delay > 0 {
			time.Sleep(g.Delay)
		}
		for _, text := range texts {
			body := a.groupMessage(ch.ID, g.GroupID, member, text)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			status, err := PostWebhook(ctx, a.opts.Client, ep, []byte(secret), body)
			cancel()
			if err != nil || status != 200 {
				a.opts.Logger.Warn("sim: echo not delivered", "channel", ch.ID, "status", status, "err", err)
			}
		}
	}()
}

// groupMessage is the webhook body of a text message from a member of a
// group, as LINE sends it (webhook.yml: MessageEvent, GroupSource,
// TextMessageContent).
func (a *API) groupMessage(channel, group, member, text string) []byte {
	now := a.opts.Now()
	id := ulid.MustNew(ulid.Timestamp(now), rand.Reader)
	ev := map[string]any{
		"type": "message", "mode": "active", "timestamp": now.UnixMilli(),
		"webhookEventId":  id.String(),
		"deliveryContext": map[string]any{"isRedelivery": false},
		"source":          map[string]any{"type": "group", "groupId": group, "userId": member},
		"replyToken":      a.IssueReplyToken(channel),
		"message": map[string]any{"id": fmt.Sprint(a.msgID.Add(1)), "type": "text", "text": text,
			"quoteToken": newQuoteToken()},
	}
	b, _ := json.Marshal(map[string]any{"destination": BotUserID(channel), "events": []any{ev}})
	return b
}
