package sim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	mrand "math/rand/v2"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
)

// Conversation generates synthetic webhook bodies: users who follow,
// write text (in English, Japanese and Thai, with emoji escaped the way
// LINE escapes them), send stickers and tap postback buttons; one event per
// body, each with a unique webhookEventId (a ULID, as LINE's). Optionally a
// share of events is sent again later as a redelivery (same
// webhookEventId, deliveryContext.isRedelivery true) or as an exact
// duplicate of the body.
type Conversation struct {
	// Destination is the bot's user id (default BotUserID("demo")).
	Destination string
	// Users is the number of distinct users (default 100).
	Users int
	// ReplyToken returns a reply token for a replyable event (default: a
	// random token no API will accept).
	ReplyToken func() string
	// Redeliveries and Duplicates are the shares of events resent.
	Redeliveries, Duplicates float64
	// EventsPerBody batches events in one body (default 1).
	EventsPerBody int
	// Now gives event timestamps (default time.Now).
	Now func() time.Time

	users   []string
	resend  [][]byte
	msgID   int64
	entropy *ulid.MonotonicEntropy
}

var sampleTexts = []string{
	"track", "Track my order please", "where is my parcel #A1042?", "opening hours?",
	"営業時間は？", "注文の配送状況を教えてください", "ありがとう！",
	"สวัสดีครับ", "ขอบคุณค่ะ", "สินค้าถึงเมื่อไหร่",
	"Hello \U0001F600", "STOP", "配信停止", "Do you have size M in stock?",
}

func (c *Conversation) init() {
	if c.users != nil {
		return
	}
	if c.Destination == "" {
		c.Destination = BotUserID("demo")
	}
	if c.Users <= 0 {
		c.Users = 100
	}
	if c.EventsPerBody <= 0 {
		c.EventsPerBody = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ReplyToken == nil {
		c.ReplyToken = func() string { return randomHex(16) }
	}
	for range c.Users {
		c.users = append(c.users, "U"+randomHex(16))
	}
	c.msgID = 600000000000000000
	c.entropy = ulid.Monotonic(rand.Reader, 0)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Next implements Source.
func (c *Conversation) Next() []byte {
	c.init()
	if len(c.resend) > 0 && mrand.IntN(4) == 0 {
		b := c.resend[0]
		c.resend = c.resend[1:]
		return b
	}
	events := make([]map[string]any, c.EventsPerBody)
	for i := range events {
		events[i] = c.event()
	}
	body := c.body(events)
	if r := mrand.Float64(); r < c.Duplicates {
		c.resend = append(c.resend, body)
	} else if r < c.Duplicates+c.Redeliveries {
		for _, e := range events {
			e["deliveryContext"] = map[string]any{"isRedelivery": true}
		}
		c.resend = append(c.resend, c.body(events))
	}
	return body
}

func (c *Conversation) body(events []map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"destination": c.Destination, "events": events})
	return escapeNonASCII(b)
}

// escapeNonASCII rewrites non-ASCII characters as \uXXXX escapes (with
// surrogate pairs), as LINE's webhook bodies have them.
func escapeNonASCII(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for _, r := range string(b) {
		switch {
		case r < 0x80:
			out = append(out, byte(r))
		case r > 0xFFFF:
			r -= 0x10000
			out = appendU(appendU(out, 0xD800+(r>>10)), 0xDC00+(r&0x3FF))
		default:
			out = appendU(out, r)
		}
	}
	return out
}

func appendU(b []byte, r rune) []byte {
	const hexd = "0123456789ABCDEF"
	return append(b, '\\', 'u', hexd[r>>12&0xF], hexd[r>>8&0xF], hexd[r>>4&0xF], hexd[r&0xF])
}

func (c *Conversation) event() map[string]any {
	user := c.users[mrand.IntN(len(c.users))]
	now := c.Now().UnixMilli()
	e := map[string]any{
		"webhookEventId":  ulid.MustNew(uint64(now), c.entropy).String(),
		"deliveryContext": map[string]any{"isRedelivery": false},
		"timestamp":       now,
		"mode":            "active",
		"source":          map[string]any{"type": "user", "userId": user},
	}
	c.msgID++
	switch r := mrand.IntN(100); {
	case r < 8:
		e["type"] = "follow"
		e["replyToken"] = c.ReplyToken()
		e["follow"] = map[string]any{"isUnblocked": mrand.IntN(4) == 0}
	case r < 10:
		e["type"] = "unfollow"
	case r < 22:
		e["type"] = "postback"
		e["replyToken"] = c.ReplyToken()
		e["postback"] = map[string]any{"data": "action=receive&order=A" + strconv.Itoa(1000+mrand.IntN(9000))}
	case r < 37:
		e["type"] = "message"
		e["replyToken"] = c.ReplyToken()
		e["message"] = map[string]any{
			"type": "sticker", "id": strconv.FormatInt(c.msgID, 10), "quoteToken": randomHex(24),
			"packageId": "446", "stickerId": strconv.Itoa(1988 + mrand.IntN(40)), "stickerResourceType": "STATIC",
		}
	default:
		e["type"] = "message"
		e["replyToken"] = c.ReplyToken()
		e["message"] = map[string]any{
			"type": "text", "id": strconv.FormatInt(c.msgID, 10), "quoteToken": randomHex(24),
			"text": sampleTexts[mrand.IntN(len(sampleTexts))],
		}
	}
	return e
}

// TextEvent returns a body with one text message event from user, as
// `sim chat` sends when a line is typed.
func TextEvent(destination, user, text, replyToken string, msgID int64, now time.Time) []byte {
	return TextEventRead(destination, user, text, replyToken, "", msgID, now)
}

// TextEventRead is TextEvent whose message carries a markAsReadToken
// (none when readToken is "").
func TextEventRead(destination, user, text, replyToken, readToken string, msgID int64, now time.Time) []byte {
	msg := map[string]any{
		"type": "text", "id": strconv.FormatInt(msgID, 10), "quoteToken": randomHex(24), "text": text,
	}
	if readToken != "" {
		msg["markAsReadToken"] = readToken
	}
	e := map[string]any{
		"type":            "message",
		"webhookEventId":  ulid.MustNew(uint64(now.UnixMilli()), rand.Reader).String(),
		"deliveryContext": map[string]any{"isRedelivery": false},
		"timestamp":       now.UnixMilli(),
		"mode":            "active",
		"source":          map[string]any{"type": "user", "userId": user},
		"replyToken":      replyToken,
		"message":         msg,
	}
	b, _ := json.Marshal(map[string]any{"destination": destination, "events": []any{e}})
	return escapeNonASCII(b)
}
