// Package line is the LINE protocol as linegate meets it: the typed model of
// every webhook event and message type of the specification (plus
// messageEdited), an explicit unknown form that keeps the raw JSON of what
// the specification does not have yet, and validation of each event on its
// own; the signature of webhook requests (Sign, Check, Verifier); and the
// subjects whose personal data an event holds (user:, group: and room:
// ids).
//
// It is a leaf: it imports nothing of linegate's, so that every other
// package may speak the protocol.
package line

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
)

// Callback is a webhook request body.
type Callback struct {
	// Destination is the bot's user id; "" when the body has none (old
	// Verify requests) or a malformed one.
	Destination string
	Events      []json.RawMessage
	// Problems is what is wrong with the destination: Legacy when it is
	// missing, Malformed when it is not a bot user id. It is judged apart
	// from the events, which it never makes malformed.
	Problems []Problem
}

// ErrNotCallback means a body is not a webhook body at all.
var ErrNotCallback = errors.New("line: not a webhook body: want a JSON object with an events array")

// ParseCallback splits a webhook body into its events, undecoded: each is
// decoded and judged on its own, so that one bad event never costs the
// others.
func ParseCallback(body []byte) (*Callback, error) {
	var c struct {
		Destination json.RawMessage   `json:"destination"`
		Events      []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Events == nil {
		return nil, ErrNotCallback
	}
	cb := &Callback{Events: c.Events}
	var d string
	switch {
	case c.Destination == nil || string(c.Destination) == "null":
		cb.Problems = append(cb.Problems, Problem{Legacy, "destination", "missing (older webhook)"})
	case json.Unmarshal(c.Destination, &d) != nil:
		cb.Problems = append(cb.Problems, Problem{Malformed, "destination", "not a string"})
	case !ValidDestination(d):
		cb.Problems = append(cb.Problems, Problem{Malformed, "destination", "not a bot user id (U and 32 hex digits)"})
	default:
		cb.Destination = d
	}
	return cb, nil
}

// ValidDestination reports whether d has the shape of a bot user id.
func ValidDestination(d string) bool { return destinationPattern.MatchString(d) }

// Event is one webhook event. Exactly one of the content fields (Message,
// Unsend, ...) is set for types that have one; for an event of an unknown
// type, only the common fields that decoded are, and Raw keeps it all.
type Event struct {
	Type            string           `json:"type"`
	Mode            string           `json:"mode"`
	Timestamp       int64            `json:"timestamp"`
	WebhookEventID  string           `json:"webhookEventId"`
	DeliveryContext *DeliveryContext `json:"deliveryContext"`
	Source          *Source          `json:"source"`
	ReplyToken      string           `json:"replyToken"`

	Message           *Message           `json:"message"`           // message, messageEdited
	Unsend            *Unsend            `json:"unsend"`            // unsend
	Follow            *Follow            `json:"follow"`            // follow
	Joined            *Members           `json:"joined"`            // memberJoined
	Left              *Members           `json:"left"`              // memberLeft
	Postback          *Postback          `json:"postback"`          // postback
	VideoPlayComplete *VideoPlayComplete `json:"videoPlayComplete"` // videoPlayComplete
	Beacon            *Beacon            `json:"beacon"`            // beacon
	Link              *Link              `json:"link"`              // accountLink
	Membership        *Membership        `json:"membership"`        // membership
	Module            *Module            `json:"module"`            // module
	ChatControl       *ChatControl       `json:"chatControl"`       // activated
	Delivery          *Delivery          `json:"delivery"`          // delivery

	// Raw is the event exactly as received.
	Raw json.RawMessage `json:"-"`
	// Problems is what validation found; see Malformed, Unknown, Drift.
	Problems []Problem `json:"-"`
}

// DeliveryContext says whether LINE is redelivering the event.
type DeliveryContext struct {
	IsRedelivery bool `json:"isRedelivery"`
}

// Source is the user, group chat or multi-person chat an event came from.
type Source struct {
	Type    string `json:"type"` // user, group, room, or unknown
	UserID  string `json:"userId"`
	GroupID string `json:"groupId"`
	RoomID  string `json:"roomId"`
}

// Message is the content of a message event: one struct for all message
// types, with the fields of its Type set.
type Message struct {
	ID              string `json:"id"`
	Type            string `json:"type"` // text, image, video, audio, file, location, sticker, or unknown
	MarkAsReadToken string `json:"markAsReadToken"`
	QuoteToken      string `json:"quoteToken"`      // text, image, video, sticker
	QuotedMessageID string `json:"quotedMessageId"` // text, sticker
	// text
	Text    string   `json:"text"` // also the text of some stickers
	Emojis  []Emoji  `json:"emojis"`
	Mention *Mention `json:"mention"`
	// image, video, audio
	ContentProvider *ContentProvider `json:"contentProvider"`
	ImageSet        *ImageSet        `json:"imageSet"`
	Duration        int64            `json:"duration"`
	// file
	FileName string `json:"fileName"`
	FileSize int64  `json:"fileSize"`
	// location
	Title     string  `json:"title"`
	Address   string  `json:"address"`
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	// sticker
	PackageID           string   `json:"packageId"`
	StickerID           string   `json:"stickerId"`
	StickerResourceType string   `json:"stickerResourceType"`
	Keywords            []string `json:"keywords"`
}

// Emoji is a LINE emoji inside a text message.
type Emoji struct {
	Index     int    `json:"index"`
	Length    int    `json:"length"`
	ProductID string `json:"productId"`
	EmojiID   string `json:"emojiId"`
}

// Mention lists who a text message mentions.
type Mention struct {
	Mentionees []Mentionee `json:"mentionees"`
}

// Mentionee is a mentioned user ("user") or everyone ("all").
type Mentionee struct {
	Type   string `json:"type"`
	Index  int    `json:"index"`
	Length int    `json:"length"`
	UserID string `json:"userId"`
	IsSelf bool   `json:"isSelf"`
}

// ContentProvider says where image, video or audio content is.
type ContentProvider struct {
	Type               string `json:"type"` // line, external
	OriginalContentURL string `json:"originalContentUrl"`
	PreviewImageURL    string `json:"previewImageUrl"`
}

// ImageSet groups images sent together.
type ImageSet struct {
	ID    string `json:"id"`
	Index int    `json:"index"`
	Total int    `json:"total"`
}

// Unsend names the message the user unsent.
type Unsend struct {
	MessageID string `json:"messageId"`
}

// Follow says whether a follow is an unblock.
type Follow struct {
	IsUnblocked bool `json:"isUnblocked"`
}

// Members lists users who joined or left a group chat.
type Members struct {
	Members []Source `json:"members"`
}

// Postback is the data of a postback action.
type Postback struct {
	Data   string          `json:"data"`
	Params json.RawMessage `json:"params"`
}

// VideoPlayComplete names the video watched to the end.
type VideoPlayComplete struct {
	TrackingID string `json:"trackingId"`
}

// Beacon is a LINE Beacon event's content.
type Beacon struct {
	HWID string `json:"hwid"`
	Type string `json:"type"` // enter, banner, stay
	DM   string `json:"dm"`
}

// Link is an account link result.
type Link struct {
	Result string `json:"result"` // ok, failed
	Nonce  string `json:"nonce"`
}

// Membership is a membership event's content.
type Membership struct {
	Type         string `json:"type"` // joined, left, renewed
	MembershipID int64  `json:"membershipId"`
}

// Module is a module channel attach or detach.
type Module struct {
	Type   string   `json:"type"` // attached, detached
	BotID  string   `json:"botId"`
	Scopes []string `json:"scopes"`
	Reason string   `json:"reason"`
}

// ChatControl is an activated event's content.
type ChatControl struct {
	ExpireAt int64 `json:"expireAt"`
}

// Delivery is a delivery completion event's content.
type Delivery struct {
	Data string `json:"data"`
}

// DecodeEvent decodes and validates one event. It never fails: an event
// that does not decode carries a Malformed problem and its Raw bytes.
func DecodeEvent(raw json.RawMessage) *Event {
	e := &Event{}
	var probs []Problem
	if v, err := decodeGeneric(raw); err != nil {
		probs = append(probs, Problem{Malformed, "(event)", "not JSON"})
	} else {
		validate(v, eventSchema, "", &probs)
	}
	if err := json.Unmarshal(raw, e); err != nil {
		// Wrong types are reported by validate; decode what the common
		// fields allow.
		*e = Event{}
		var common struct {
			Type           string `json:"type"`
			WebhookEventID string `json:"webhookEventId"`
		}
		json.Unmarshal(raw, &common)
		e.Type, e.WebhookEventID = common.Type, common.WebhookEventID
		if !hasKind(probs, Malformed) {
			probs = append(probs, Problem{Malformed, "(event)", "does not decode"})
		}
	}
	e.Raw = raw
	e.Problems = probs
	return e
}

// Decode decodes an event that was validated before, without validating it
// again (Problems stays empty).
func Decode(raw json.RawMessage) (*Event, error) {
	e := &Event{}
	if err := json.Unmarshal(raw, e); err != nil {
		return nil, errors.New("line: event does not decode")
	}
	e.Raw = raw
	return e, nil
}

func hasKind(ps []Problem, k ProblemKind) bool {
	for _, p := range ps {
		if p.Kind == k {
			return true
		}
	}
	return false
}

// Malformed reports whether validation found the event malformed.
func (e *Event) Malformed() bool { return hasKind(e.Problems, Malformed) }

// Unknown reports whether the event, its message or its source is of a
// type the specification does not have.
func (e *Event) Unknown() bool { return hasKind(e.Problems, Unknown) }

// Drift reports whether the event has fields or enum values the
// specification does not have.
func (e *Event) Drift() bool { return hasKind(e.Problems, Drift) }

// Legacy reports whether the event lacks fields the way older webhooks do.
func (e *Event) Legacy() bool { return hasKind(e.Problems, Legacy) }

// Redelivery reports whether LINE marked the event as redelivered.
func (e *Event) Redelivery() bool { return e.DeliveryContext != nil && e.DeliveryContext.IsRedelivery }

// Standby reports whether the channel is in standby for this event: the
// bot must not answer it.
func (e *Event) Standby() bool { return e.Mode == "standby" }

// Active reports whether the channel is active for this event: only then
// may the bot answer it. A mode the specification does not have is not.
func (e *Event) Active() bool { return e.Mode == "active" }

// VerifyDummy reports whether the event is one of the dummy events of the
// console's old Verify requests (reply token of all 0s or all fs).
func (e *Event) VerifyDummy() bool {
	t := e.ReplyToken
	return len(t) >= 16 && (strings.Trim(t, "0") == "" || strings.Trim(t, "f") == "")
}

// Conversation names the chat the event belongs to ("user:U...",
// "group:C...", "room:R..."), or "" when it has none.
func (e *Event) Conversation() string {
	s := e.Source
	switch {
	case s == nil:
		return ""
	case s.Type == "group" && s.GroupID != "":
		return "group:" + s.GroupID
	case s.Type == "room" && s.RoomID != "":
		return "room:" + s.RoomID
	case s.UserID != "":
		return "user:" + s.UserID
	}
	return ""
}

// DedupKey identifies the event across deliveries: its webhookEventId, or
// for older events without one, a hash of its content without the
// delivery context.
func (e *Event) DedupKey() string {
	if e.WebhookEventID != "" {
		return "id:" + e.WebhookEventID
	}
	var m map[string]any
	if json.Unmarshal(e.Raw, &m) != nil {
		sum := sha256.Sum256(e.Raw)
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	delete(m, "deliveryContext")
	canon, _ := json.Marshal(m) // map keys sorted: one encoding per content
	sum := sha256.Sum256(canon)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Reasons joins the event's problems of the given kinds, for the record.
func (e *Event) Reasons(kinds ...ProblemKind) string {
	var rs []string
	for _, p := range e.Problems {
		for _, k := range kinds {
			if p.Kind == k {
				rs = append(rs, p.String())
			}
		}
	}
	return strings.Join(rs, "; ")
}
