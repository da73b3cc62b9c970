// Package review writes the records of an evidence bundle in the formats
// that review platforms read: RSMF (Relativity Short Message Format 2.0),
// EML (one RFC 5322 message per LINE message or send) and JSON lines.
//
// It reads the bundle, never the database: every exported file is made
// from records the bundle proves, and is listed in the bundle's
// exports.json with its SHA-256 and those records, so that verify-bundle
// checks the export with the records.
package review

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
)

// Item is one thing that happened in a conversation: a message a user
// sent, another event (follow, postback, ...), or a send of the bot.
type Item struct {
	Kind         string    `json:"kind"` // message, event, send
	Record       uint64    `json:"record"`
	Index        int       `json:"index"`
	Time         time.Time `json:"time"`
	Channel      string    `json:"channel"`
	Conversation string    `json:"conversation"` // user:U..., group:C..., room:R...
	From         string    `json:"from"`         // a LINE user id, or the bot: "bot:<channel>"
	Direction    string    `json:"direction"`    // incoming, outgoing
	Type         string    `json:"type"`         // the event type, or the message type
	MessageID    string    `json:"message_id,omitempty"`
	Text         string    `json:"text,omitempty"`
	// Unsent: the user unsent the message (an unsend event), at UnsentAt,
	// recorded in UnsentRecord.
	Unsent       bool       `json:"unsent,omitempty"`
	UnsentAt     *time.Time `json:"unsent_at,omitempty"`
	UnsentRecord uint64     `json:"unsent_record,omitempty"`
	// Media describes a message's content, when linegate kept it or tried.
	Media      []Attachment `json:"media,omitempty"`
	Outcome    string       `json:"outcome,omitempty"` // a send's: sent, failed, blocked, ...
	Rule       string       `json:"rule,omitempty"`
	RequestIDs []string     `json:"x_line_request_ids,omitempty"`
	EventKey   string       `json:"event_key,omitempty"`
	// Raw is the event as LINE sent it (events), or the message as sent
	// (sends).
	Raw json.RawMessage `json:"raw,omitempty"`
}

// Records are the bundle records an item shows.
func (it *Item) Records() []uint64 {
	rs := []uint64{it.Record}
	if it.Unsent {
		rs = append(rs, it.UnsentRecord)
	}
	for _, a := range it.Media {
		rs = append(rs, a.Record)
	}
	slices.Sort(rs)
	return slices.Compact(rs)
}

// Attachment is a message's content as the bundle holds it.
type Attachment struct {
	Record      uint64 `json:"record"`
	Name        string `json:"name"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
	Outcome     string `json:"outcome"` // record.Media's
	Reason      string `json:"reason,omitempty"`
	URL         string `json:"original_content_url,omitempty"`
	// Content is in the bundle (records/N/content); nil when not kept.
	Content []byte `json:"-"`
}

// Bundle is a bundle's conversations, read from its records.
type Bundle struct {
	Dir   string
	Items []*Item // in time order
	// Undecodable are the records the bundle holds and proves, but whose
	// body does not decode (JSON nested too deep, say): every export lists
	// them, by record and hash, rather than leave them out or fail.
	Undecodable []Undecodable
}

// Undecodable is a record of the bundle whose body could not be decoded.
type Undecodable struct {
	Record     uint64 `json:"record"`
	Kind       string `json:"kind"`
	Commitment string `json:"commitment"`  // the leaf's, as record.json shows it
	BodySHA256 string `json:"body_sha256"` // of records/N/body
	Reason     string `json:"reason"`
}

// Load reads the records of the bundle in dir, which must have been
// checked (evidence.Verify) by the caller.
func Load(dir string) (*Bundle, error) {
	b := &Bundle{Dir: dir}
	ents, err := os.ReadDir(filepath.Join(dir, "records"))
	if err != nil {
		return nil, err
	}
	byMessage := map[string]*Item{} // channel + message id
	byKey := map[string]*Item{}     // event key
	type unsend struct {
		rec uint64
		at  time.Time
		key string
	}
	var unsends []unsend
	var medias []struct {
		rec uint64
		ch  string
		m   *record.Media
		c   []byte
	}
	var sends []struct {
		rec  uint64
		ch   string
		at   time.Time
		body *record.Outbound
	}
	for _, e := range ents {
		rd := filepath.Join(dir, "records", e.Name())
		var s evidence.Summary
		if err := readJSON(filepath.Join(rd, "record.json"), &s); err != nil {
			return nil, err
		}
		at, _ := time.Parse(time.RFC3339Nano, s.Time)
		body, err := os.ReadFile(filepath.Join(rd, "body"))
		if err != nil {
			return nil, err
		}
		undecodable := func(err error) {
			sum := sha256.Sum256(body)
			b.Undecodable = append(b.Undecodable, Undecodable{Record: s.Index, Kind: s.Kind, Commitment: s.Commitment,
				BodySHA256: hex.EncodeToString(sum[:]), Reason: reason(err)})
		}
		switch s.Kind {
		case record.KindWebhook.String():
			cb, err := line.ParseCallback(body)
			if err != nil {
				undecodable(err)
				continue
			}
			for i, raw := range cb.Events {
				ev := line.DecodeEvent(raw)
				it := &Item{Kind: "event", Record: s.Index, Index: i, Time: eventTime(ev, at), Channel: s.Channel, Type: ev.Type,
					Direction: "incoming", EventKey: ev.DedupKey(), Raw: raw}
				it.Conversation, it.From = conversation(ev.Source)
				if it.From == "" {
					it.From = "line:" + s.Channel
				}
				switch {
				case ev.Type == "message" && ev.Message != nil:
					it.Kind, it.Type, it.MessageID, it.Text = "message", ev.Message.Type, ev.Message.ID, messageText(ev.Message)
					if byMessage[s.Channel+"/"+it.MessageID] != nil {
						continue // a redelivery
					}
					byMessage[s.Channel+"/"+it.MessageID] = it
				case ev.Type == "unsend" && ev.Unsend != nil:
					unsends = append(unsends, unsend{s.Index, eventTime(ev, at), s.Channel + "/" + ev.Unsend.MessageID})
				}
				byKey[it.EventKey] = it
				b.Items = append(b.Items, it)
			}
		case record.KindMedia.String():
			var m record.Media
			if err := json.Unmarshal(body, &m); err != nil {
				undecodable(err)
				continue
			}
			content, _ := os.ReadFile(filepath.Join(rd, "content"))
			medias = append(medias, struct {
				rec uint64
				ch  string
				m   *record.Media
				c   []byte
			}{s.Index, s.Channel, &m, content})
		case record.KindOutbound.String():
			var o record.Outbound
			if err := json.Unmarshal(body, &o); err != nil {
				undecodable(err)
				continue
			}
			if len(o.Request) > 0 && !json.Valid(o.Request) {
				undecodable(errors.New("the request sent is not JSON that decodes"))
				continue
			}
			sends = append(sends, struct {
				rec  uint64
				ch   string
				at   time.Time
				body *record.Outbound
			}{s.Index, s.Channel, at, &o})
		}
	}
	for _, u := range unsends {
		if it := byMessage[u.key]; it != nil {
			at := u.at
			it.Unsent, it.UnsentAt, it.UnsentRecord = true, &at, u.rec
		}
	}
	for _, m := range medias {
		it := byMessage[m.ch+"/"+m.m.MessageID]
		if it == nil {
			continue
		}
		a := Attachment{Record: m.rec, Name: attachmentName(m.m), ContentType: m.m.ContentType, Size: m.m.Size, SHA256: m.m.SHA256,
			Outcome: m.m.Outcome, Reason: m.m.Reason, URL: m.m.OriginalContentURL}
		if len(m.c) > 0 { // checked against the record's hash by evidence.Verify
			a.Content = m.c
		}
		it.Media = append(it.Media, a)
	}
	for _, s := range sends {
		b.Items = append(b.Items, sendItems(s.rec, s.ch, s.at, s.body, byKey)...)
	}
	slices.SortStableFunc(b.Items, func(x, y *Item) int {
		if c := x.Time.Compare(y.Time); c != 0 {
			return c
		}
		if x.Record != y.Record {
			return int(x.Record) - int(y.Record)
		}
		return x.Index - y.Index
	})
	return b, nil
}

// reason says why a record did not decode, without its content: the
// JSON error's kind alone (a syntax error quotes no payload; a type error
// names a field).
func reason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON that decodes, at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return "a field of another type: " + typ.Field
	case errors.Is(err, line.ErrNotCallback):
		return "not a LINE webhook callback that decodes"
	}
	return "does not decode"
}

// undecodableList is exports/undecodable.txt: one line per record that
// could not be decoded, so that a review sees it is there.
func undecodableList(b *Bundle) (outFile, bool) {
	if len(b.Undecodable) == 0 {
		return outFile{}, false
	}
	var buf strings.Builder
	var recs []uint64
	for _, u := range b.Undecodable {
		fmt.Fprintf(&buf, "record %d could not be decoded (%s record; leaf commitment %s; records/%012d/body SHA-256 %s): %s\n",
			u.Record, u.Kind, u.Commitment, u.Record, u.BodySHA256, u.Reason)
		recs = append(recs, u.Record)
	}
	return outFile{path: "exports/undecodable.txt", data: []byte(buf.String()), records: sortedUnique(recs)}, true
}

// sendItems returns the messages of an outbound record, one item each, in
// the conversation of the event it answered (a reply) or the one it was
// pushed to.
func sendItems(rec uint64, ch string, at time.Time, o *record.Outbound, byKey map[string]*Item) []*Item {
	var req struct {
		To       string            `json:"to"`
		Messages []json.RawMessage `json:"messages"`
	}
	if json.Unmarshal(o.Request, &req) != nil || len(req.Messages) == 0 {
		return nil
	}
	conv := ""
	if ev := byKey[o.EventKey]; ev != nil {
		conv = ev.Conversation
	}
	if conv == "" && req.To != "" {
		conv = subjectOf(req.To)
	}
	if conv == "" {
		return nil
	}
	var out []*Item
	for i, raw := range req.Messages {
		var m struct {
			Type               string `json:"type"`
			Text               string `json:"text"`
			AltText            string `json:"altText"`
			OriginalContentURL string `json:"originalContentUrl"`
			PackageID          string `json:"packageId"`
			StickerID          string `json:"stickerId"`
		}
		json.Unmarshal(raw, &m)
		text := m.Text
		switch {
		case text == "" && m.AltText != "":
			text = "[" + m.Type + "] " + m.AltText
		case text == "" && m.OriginalContentURL != "":
			text = "[" + m.Type + "] " + m.OriginalContentURL
		case text == "" && m.Type == "sticker":
			text = "[sticker " + m.PackageID + "/" + m.StickerID + "]"
		case text == "":
			text = "[" + m.Type + "]"
		}
		it := &Item{Kind: "send", Record: rec, Index: i, Time: at, Channel: ch, Conversation: conv, From: "bot:" + ch,
			Direction: "outgoing", Type: m.Type, Text: text, Outcome: o.Outcome, Rule: o.Rule, RequestIDs: o.RequestIDs(),
			EventKey: o.EventKey, Raw: raw}
		if hash := o.Extra["image_sha256:"+strconv.Itoa(i)]; hash != "" {
			it.Media = append(it.Media, Attachment{Record: rec, Name: m.OriginalContentURL, SHA256: hash, Outcome: "hashed_at_send"})
		}
		out = append(out, it)
	}
	return out
}

// conversation returns the conversation of an event's source and who
// spoke in it.
func conversation(src *line.Source) (conv, from string) {
	if src == nil {
		return "", ""
	}
	switch {
	case src.GroupID != "":
		return "group:" + src.GroupID, src.UserID
	case src.RoomID != "":
		return "room:" + src.RoomID, src.UserID
	case src.UserID != "":
		return "user:" + src.UserID, src.UserID
	}
	return "", ""
}

// subjectOf names the conversation of a push's "to".
func subjectOf(to string) string {
	switch {
	case strings.HasPrefix(to, "C"):
		return "group:" + to
	case strings.HasPrefix(to, "R"):
		return "room:" + to
	}
	return "user:" + to
}

// eventTime is the event's timestamp, or the receipt when it has none.
func eventTime(ev *line.Event, received time.Time) time.Time {
	if ev.Timestamp > 0 {
		return time.UnixMilli(ev.Timestamp).UTC()
	}
	return received.UTC()
}

// messageText is what a message says, in words for those without text.
func messageText(m *line.Message) string {
	switch m.Type {
	case "text":
		return m.Text
	case "file":
		return "[file] " + m.FileName
	case "location":
		return fmt.Sprintf("[location] %s %s (%g, %g)", m.Title, m.Address, m.Latitude, m.Longitude)
	case "sticker":
		s := "[sticker " + m.PackageID + "/" + m.StickerID + "]"
		if m.Text != "" {
			s += " " + m.Text
		}
		return s
	}
	return "[" + m.Type + "]"
}

// attachmentName is a file name for a message's content: its file name
// for a file, its message id and an extension for the rest.
func attachmentName(m *record.Media) string {
	if m.FileName != "" {
		return m.FileName
	}
	ext := map[string]string{"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "video/mp4": ".mp4",
		"audio/x-m4a": ".m4a", "audio/mp4": ".m4a", "audio/mpeg": ".mp3"}[strings.ToLower(strings.TrimSpace(strings.Split(m.ContentType, ";")[0]))]
	if ext == "" {
		ext = map[string]string{"image": ".jpg", "video": ".mp4", "audio": ".m4a"}[m.Type]
	}
	if ext == "" {
		ext = ".bin"
	}
	return m.MessageID + ext
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
