package corpus

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/oklog/ulid/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/webhooks from the definitions in webhooks_test.go")

// TestWebhooks checks that testdata/webhooks holds exactly the bodies
// defined below; with -update it writes them:
//
//	go test ./internal/corpus -run TestWebhooks -update
func TestWebhooks(t *testing.T) {
	want := webhookBodies()
	dir := filepath.Join("testdata", "webhooks")
	if *update {
		old, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		for name, body := range want {
			if err := os.WriteFile(filepath.Join(dir, name+".json"), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("%d files in %s, %d bodies defined (run with -update)", len(files), dir, len(want))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[name]) {
			t.Errorf("%s differs from its definition (run with -update)", f)
		}
	}
	if d := Webhooks(t); filepath.Base(d) != "webhooks" || !filepath.IsAbs(d) {
		t.Errorf("Webhooks() = %s", d)
	}
}

// The bodies are written as LINE sends them: compact JSON, keys in the
// order of LINE's own examples, characters outside ASCII escaped as \uXXXX
// (surrogate pairs for emoji), no trailing newline. Identifiers have LINE's
// shapes (U, C and R followed by 32 hex digits, ULID event ids, 18-digit
// message ids) and are derived from labels, so that they are stable.

const bot = "Ub7f3e1a9c2d4405f8e6a1b2c3d4e5f60" // the destination: the bot's user id

var base = time.Date(2026, 5, 12, 10, 30, 0, 0, time.UTC).UnixMilli()

// webhookBodies returns the bodies by file name (without .json).
func webhookBodies() map[string][]byte {
	somchai, naree, kenji, ploy := user("somchai"), user("naree"), user("kenji"), user("ploy")
	staff := group("shop-staff")
	trip := room("trip-planning")
	at := func(sec int) int64 { return base + int64(sec)*1000 + int64(sec*37%1000) }

	text := "Hi! Is the linen shirt still in stock in size M? ขอบคุณค่ะ (love)"
	mention := "@Linegate Shop @All the order for table 4 is ready 🍜"
	bodies := map[string][]any{
		"message-text": {event("message", at(1), source(somchai), true,
			kv("message", obj{
				{"type", "text"}, {"id", messageID("text")}, {"quoteToken", quoteToken("text")},
				{"markAsReadToken", readToken("text")}, {"text", text},
				{"emojis", []any{obj{{"index", utf16Index(text, "(love)")}, {"length", 6},
					{"productId", "5ac1bfd5040ab15980c9b435"}, {"emojiId", "001"}}}},
			}))},
		"message-text-mention": {event("message", at(2), groupSource(staff, naree), true,
			kv("message", obj{
				{"type", "text"}, {"id", messageID("mention")}, {"quoteToken", quoteToken("mention")},
				{"text", mention},
				{"mention", obj{{"mentionees", []any{
					obj{{"index", 0}, {"length", 14}, {"type", "user"}, {"userId", bot}, {"isSelf", true}},
					obj{{"index", 15}, {"length", 4}, {"type", "all"}},
				}}}},
				{"quotedMessageId", messageID("order-table-4")},
			}))},
		"message-image": {event("message", at(3), source(kenji), true,
			kv("message", obj{
				{"type", "image"}, {"id", messageID("image")}, {"quoteToken", quoteToken("image")},
				{"markAsReadToken", readToken("image")}, {"contentProvider", obj{{"type", "line"}}},
			}))},
		"message-video": {event("message", at(4), roomSource(trip, ploy), true,
			kv("message", obj{
				{"type", "video"}, {"id", messageID("video")}, {"quoteToken", quoteToken("video")},
				{"duration", 15234},
				{"contentProvider", obj{{"type", "external"},
					{"originalContentUrl", "https://media.example.com/trips/krabi-2026.mp4"},
					{"previewImageUrl", "https://media.example.com/trips/krabi-2026.jpg"}}},
			}))},
		"message-audio": {event("message", at(5), source(naree), true,
			kv("message", obj{
				{"type", "audio"}, {"id", messageID("audio")}, {"duration", 8120},
				{"contentProvider", obj{{"type", "line"}}},
			}))},
		"message-file": {event("message", at(6), groupSource(staff, kenji), true,
			kv("message", obj{
				{"type", "file"}, {"id", messageID("file")}, {"fileName", "invoice-2026-05.pdf"}, {"fileSize", 48213},
			}))},
		"message-location": {event("message", at(7), source(ploy), true,
			kv("message", obj{
				{"type", "location"}, {"id", messageID("location")}, {"title", "ร้านกาแฟริมน้ำ"},
				{"address", "99 ถนนเจริญกรุง บางรัก กรุงเทพมหานคร 10500"},
				{"latitude", 13.7248936}, {"longitude", 100.5139285},
			}))},
		"message-sticker": {event("message", at(8), source(somchai), true,
			kv("message", obj{
				{"type", "sticker"}, {"id", messageID("sticker")}, {"quoteToken", quoteToken("sticker")},
				{"stickerId", "738839"}, {"packageId", "12287"}, {"stickerResourceType", "MESSAGE"},
				{"keywords", []any{"thanks", "Thank you", "grateful", "happy"}}, {"text", "ขอบคุณมากค่ะ"},
			}))},
		"message-edited": {event("messageEdited", at(9), groupSource(staff, naree), true,
			kv("message", obj{
				{"type", "text"}, {"id", messageID("order-table-4")}, {"quoteToken", quoteToken("order-table-4")},
				{"text", "The order for table 4 is ready (2 bowls)"},
			}))},
		"unsend": {event("unsend", at(10), groupSource(staff, kenji), false,
			kv("unsend", obj{{"messageId", messageID("file")}}))},
		"follow":   {event("follow", at(11), source(ploy), true, kv("follow", obj{{"isUnblocked", false}}))},
		"unfollow": {event("unfollow", at(12), source(kenji), false)},
		"join":     {event("join", at(13), groupSource(staff, ""), true)},
		"leave":    {event("leave", at(14), roomSource(trip, ""), false)},
		"member-joined": {event("memberJoined", at(15), groupSource(staff, ""), true,
			kv("joined", obj{{"members", []any{source(ploy), source(somchai)}}}))},
		"member-left": {event("memberLeft", at(16), roomSource(trip, ""), false,
			kv("left", obj{{"members", []any{source(kenji)}}}))},
		"postback": {event("postback", at(17), source(naree), true,
			kv("postback", obj{{"data", "action=reserve&table=4&party=2"}, {"params", obj{{"datetime", "2026-05-15T19:30"}}}}))},
		"video-play-complete": {event("videoPlayComplete", at(18), source(somchai), true,
			kv("videoPlayComplete", obj{{"trackingId", "spring-menu-2026"}}))},
		"beacon": {event("beacon", at(19), source(kenji), true,
			kv("beacon", obj{{"hwid", "d41d8cd98f"}, {"type", "enter"}, {"dm", "1f2e3d4c5b"}}))},
		"account-link": {event("accountLink", at(20), source(naree), true,
			kv("link", obj{{"result", "ok"}, {"nonce", "8f3b0c5d2a9e4f1b"}}))},
		"membership": {event("membership", at(21), source(ploy), true,
			kv("membership", obj{{"type", "joined"}, {"membershipId", 3189}}))},
		"module": {event("module", at(22), source(somchai), false,
			kv("module", obj{{"type", "attached"}, {"botId", bot}, {"scopes", []any{"message:send", "message:receive"}}}))},
		"activated": {event("activated", at(23), source(naree), false,
			kv("chatControl", obj{{"expireAt", at(23) + 3_600_000}}))},
		"deactivated":   {event("deactivated", at(24), source(naree), false)},
		"bot-suspended": {event("botSuspended", at(25), nil, false)},
		"bot-resumed":   {event("botResumed", at(26), nil, false)},
		"delivery": {event("delivery", at(27), source(somchai), false,
			kv("delivery", obj{{"data", hexOf("phone:+66812345678", 64)}}))},

		// Batches. A user sends three photos and a line of text at once:
		// one request, an image set and a text.
		"batch-image-set": {
			imageInSet(at(30), kenji, 1), imageInSet(at(30), kenji, 2), imageInSet(at(30), kenji, 3),
			event("message", at(31), source(kenji), true, kv("message", obj{
				{"type", "text"}, {"id", messageID("after-set")}, {"quoteToken", quoteToken("after-set")},
				{"text", "Which of these colours do you have?"}})),
		},
		// A busy group: a member joins, two people talk, one unsends.
		"batch-group": {
			event("memberJoined", at(40), groupSource(staff, ""), true,
				kv("joined", obj{{"members", []any{source(naree)}}})),
			event("message", at(41), groupSource(staff, naree), true, kv("message", obj{
				{"type", "text"}, {"id", messageID("g1")}, {"quoteToken", quoteToken("g1")}, {"text", "Morning! Who opens today?"}})),
			event("message", at(42), groupSource(staff, kenji), true, kv("message", obj{
				{"type", "sticker"}, {"id", messageID("g2")}, {"quoteToken", quoteToken("g2")},
				{"stickerId", "52002734"}, {"packageId", "11537"}, {"stickerResourceType", "ANIMATION"}})),
			event("unsend", at(43), groupSource(staff, kenji), false, kv("unsend", obj{{"messageId", messageID("g2")}})),
		},
		// A module channel holds the chat: the primary channel receives
		// events in standby mode, then the module is detached.
		"batch-standby": {
			standby(event("message", at(50), source(ploy), false, kv("message", obj{
				{"type", "text"}, {"id", messageID("standby")}, {"quoteToken", quoteToken("standby")}, {"text", "Is anyone there?"}}))),
			standby(event("postback", at(51), source(ploy), false,
				kv("postback", obj{{"data", "action=call-staff"}}))),
			event("module", at(52), source(somchai), false,
				kv("module", obj{{"type", "detached"}, {"botId", bot}, {"reason", "bot_deleted"}})),
		},
		// The event of message-text, delivered again: same webhookEventId,
		// same timestamp, isRedelivery true.
		"redelivery": {redelivered(event("message", at(1), source(somchai), true,
			kv("message", obj{
				{"type", "text"}, {"id", messageID("text")}, {"quoteToken", quoteToken("text")},
				{"markAsReadToken", readToken("text")}, {"text", text},
				{"emojis", []any{obj{{"index", utf16Index(text, "(love)")}, {"length", 6},
					{"productId", "5ac1bfd5040ab15980c9b435"}, {"emojiId", "001"}}}},
			})))},
		// Kinds newer than the specification, in a batch with a known
		// event: an event type, and a message type from an unknown source
		// type. Hypothetical names; LINE has neither.
		"unknown": {
			event("follow", at(60), source(naree), true, kv("follow", obj{{"isUnblocked", true}})),
			event("reactionAdded", at(61), source(naree), false,
				kv("reaction", obj{{"messageId", messageID("text")}, {"emoji", "👍"}})),
			event("message", at(62), obj{{"type", "square"}, {"squareChatId", "S" + hexOf("square:fans", 32)}}, true,
				kv("message", obj{{"type", "hologram"}, {"id", messageID("hologram")}, {"duration", 3000}})),
		},
	}
	out := make(map[string][]byte, len(bodies))
	for name, events := range bodies {
		var b bytes.Buffer
		encode(&b, obj{{"destination", bot}, {"events", events}})
		out[name] = b.Bytes()
	}
	return out
}

// obj is a JSON object whose keys keep their order.
type obj []field

type field struct {
	k string
	v any
}

func kv(k string, v any) field { return field{k, v} }

// event builds an event as LINE orders its keys: type, its content,
// webhookEventId, deliveryContext, timestamp, source, replyToken, mode.
// src may be nil (no source).
func event(typ string, ts int64, src obj, replyable bool, content ...field) obj {
	label := fmt.Sprintf("%s@%d", typ, ts)
	e := obj{{"type", typ}}
	e = append(e, content...)
	e = append(e, field{"webhookEventId", eventID(ts, label)},
		field{"deliveryContext", obj{{"isRedelivery", false}}}, field{"timestamp", ts})
	if src != nil {
		e = append(e, field{"source", src})
	}
	if replyable {
		e = append(e, field{"replyToken", hexOf("reply:"+label, 32)})
	}
	return append(e, field{"mode", "active"})
}

func set(e obj, key string, v any) obj {
	i := slices.IndexFunc(e, func(f field) bool { return f.k == key })
	e[i].v = v
	return e
}

func standby(e obj) obj     { return set(e, "mode", "standby") }
func redelivered(e obj) obj { return set(e, "deliveryContext", obj{{"isRedelivery", true}}) }

func imageInSet(ts int64, from string, index int) obj {
	label := fmt.Sprintf("set@%d/%d", ts, index)
	e := event("message", ts, source(from), true, kv("message", obj{
		{"type", "image"}, {"id", messageID(label)}, {"quoteToken", quoteToken(label)},
		{"contentProvider", obj{{"type", "line"}}},
		{"imageSet", obj{{"id", strings.ToUpper(hexOf(fmt.Sprintf("set@%d", ts), 32))}, {"index", index}, {"total", 3}}},
	}))
	// The events of one set differ in their ids and reply tokens.
	set(e, "webhookEventId", eventID(ts, label))
	return set(e, "replyToken", hexOf("reply:"+label, 32))
}

func user(name string) string  { return "U" + hexOf("user:"+name, 32) }
func group(name string) string { return "C" + hexOf("group:"+name, 32) }
func room(name string) string  { return "R" + hexOf("room:"+name, 32) }

func source(userID string) obj { return obj{{"type", "user"}, {"userId", userID}} }

// groupSource and roomSource carry the user only when userID is set: LINE
// names the user on message events only.
func groupSource(groupID, userID string) obj {
	s := obj{{"type", "group"}, {"groupId", groupID}}
	if userID != "" {
		s = append(s, field{"userId", userID})
	}
	return s
}

func roomSource(roomID, userID string) obj {
	s := obj{{"type", "room"}, {"roomId", roomID}}
	if userID != "" {
		s = append(s, field{"userId", userID})
	}
	return s
}

func digest(label string) []byte {
	sum := sha256.Sum256([]byte(label))
	return sum[:]
}

// hexOf returns n lowercase hex digits derived from label.
func hexOf(label string, n int) string {
	return (hex.EncodeToString(digest(label)) + hex.EncodeToString(digest(label+"+")))[:n]
}

// eventID returns a ULID with the event's time.
func eventID(ms int64, label string) string {
	id, err := ulid.New(uint64(ms), bytes.NewReader(digest(label)))
	if err != nil {
		panic(err)
	}
	return id.String()
}

// messageID returns an 18-digit message id.
func messageID(label string) string {
	n := new(big.Int).SetBytes(digest("message:" + label))
	n.Mod(n, big.NewInt(9e17))
	return strconv.FormatInt(n.Int64()+1e17, 10)
}

func quoteToken(label string) string {
	d := append(digest("quote:"+label), digest("quote+"+label)...)
	return base64.RawURLEncoding.EncodeToString(d)[:86]
}

func readToken(label string) string {
	return base64.RawURLEncoding.EncodeToString(digest("read:" + label))
}

// utf16Index returns the index of sub in s in UTF-16 code units, as LINE
// counts emoji positions.
func utf16Index(s, sub string) int {
	return len(utf16.Encode([]rune(s[:strings.Index(s, sub)])))
}

// encode writes v as LINE writes JSON.
func encode(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case obj:
		b.WriteByte('{')
		for i, f := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encode(b, f.k)
			b.WriteByte(':')
			encode(b, f.v)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encode(b, e)
		}
		b.WriteByte(']')
	case string:
		b.WriteByte('"')
		for _, r := range v {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < 0x20 || r > 0x7e:
				for _, u := range utf16.Encode([]rune{r}) {
					fmt.Fprintf(b, `\u%04X`, u)
				}
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('"')
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	default:
		panic(fmt.Sprintf("encode: %T", v))
	}
}
