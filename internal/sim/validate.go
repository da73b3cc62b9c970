package sim

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrorDetail is one entry of an error response's details, as in the
// Messaging API's ErrorResponse.
type ErrorDetail struct {
	Message  string `json:"message"`
	Property string `json:"property,omitempty"`
}

// messageRules are the required fields of each message type in
// messaging-api.yml (components/schemas/*Message), with the length limits
// of the reference.
var messageRules = map[string][]fieldRule{
	"text":     {{"text", kindString, 5000}},
	"textV2":   {{"text", kindString, 5000}},
	"sticker":  {{"packageId", kindString, 0}, {"stickerId", kindString, 0}},
	"image":    {{"originalContentUrl", kindURL, 2000}, {"previewImageUrl", kindURL, 2000}},
	"video":    {{"originalContentUrl", kindURL, 2000}, {"previewImageUrl", kindURL, 2000}},
	"audio":    {{"originalContentUrl", kindURL, 2000}, {"duration", kindNumber, 0}},
	"location": {{"title", kindString, 100}, {"address", kindString, 100}, {"latitude", kindNumber, 0}, {"longitude", kindNumber, 0}},
	"imagemap": {{"baseUrl", kindURL, 2000}, {"altText", kindString, 1500}, {"baseSize", kindObject, 0}, {"actions", kindArray, 0}},
	"template": {{"altText", kindString, 1500}, {"template", kindObject, 0}},
	"flex":     {{"altText", kindString, 1500}, {"contents", kindObject, 0}},
	"coupon":   {{"couponId", kindString, 0}},
}

type fieldKind int

const (
	kindString fieldKind = iota
	kindURL
	kindNumber
	kindObject
	kindArray
)

type fieldRule struct {
	name string
	kind fieldKind
	max  int // characters, for strings; 0 for no limit
}

// ValidateMessages checks the messages of a send request against the
// specification: 1 to 5 message objects, each of a known type with its
// required fields of the right types and lengths, and at most 13 quick
// reply items. It returns nil when they are valid.
func ValidateMessages(raw json.RawMessage) []ErrorDetail {
	var msgs []map[string]json.RawMessage
	if len(raw) == 0 || string(raw) == "null" {
		return []ErrorDetail{{"must be specified", "messages"}}
	}
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return []ErrorDetail{{"must be an array of message objects", "messages"}}
	}
	if len(msgs) < 1 || len(msgs) > 5 {
		return []ErrorDetail{{"size must be between 1 and 5", "messages"}}
	}
	var out []ErrorDetail
	for i, m := range msgs {
		prop := fmt.Sprintf("messages[%d]", i)
		var typ string
		if err := json.Unmarshal(m["type"], &typ); err != nil || typ == "" {
			out = append(out, ErrorDetail{"must be specified", prop + ".type"})
			continue
		}
		rules, ok := messageRules[typ]
		if !ok {
			out = append(out, ErrorDetail{fmt.Sprintf("invalid message type %q", typ), prop + ".type"})
			continue
		}
		for _, r := range rules {
			if d := r.check(m[r.name]); d != "" {
				out = append(out, ErrorDetail{d, prop + "." + r.name})
			}
		}
		if q, ok := m["quickReply"]; ok {
			var qr struct {
				Items []json.RawMessage `json:"items"`
			}
			if json.Unmarshal(q, &qr) != nil {
				out = append(out, ErrorDetail{"must be an object", prop + ".quickReply"})
			} else if len(qr.Items) > 13 {
				out = append(out, ErrorDetail{"size must be between 0 and 13", prop + ".quickReply.items"})
			}
		}
	}
	return out
}

func (r fieldRule) check(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return "must be specified"
	}
	switch r.kind {
	case kindString, kindURL:
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "must be a string"
		}
		if s == "" {
			return "must not be empty"
		}
		if r.max > 0 && utf8.RuneCountInString(s) > r.max {
			return fmt.Sprintf("length must be at most %d", r.max)
		}
		if r.kind == kindURL && !strings.HasPrefix(s, "https://") {
			return "must be an HTTPS URL"
		}
	case kindNumber:
		var f float64
		if json.Unmarshal(v, &f) != nil {
			return "must be a number"
		}
	case kindObject:
		var o map[string]json.RawMessage
		if json.Unmarshal(v, &o) != nil {
			return "must be an object"
		}
		if _, ok := o["type"]; !ok && r.name != "baseSize" {
			return "type must be specified"
		}
	case kindArray:
		var a []json.RawMessage
		if json.Unmarshal(v, &a) != nil {
			return "must be an array"
		}
	}
	return ""
}
