package line_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/line"
)

// TestFixtures decodes the module's own webhook bodies: each event gets its
// type, without a single problem (the bodies follow the specification),
// except the unknown ones, which get the unknown form; together they cover
// every event and message type of the specification.
func TestFixtures(t *testing.T) {
	want := map[string]string{ // file -> event types (message type)
		"message-text": "message/text", "message-text-mention": "message/text", "message-image": "message/image",
		"message-video": "message/video", "message-audio": "message/audio", "message-file": "message/file",
		"message-location": "message/location", "message-sticker": "message/sticker", "message-edited": "messageEdited/text",
		"unsend": "unsend", "follow": "follow", "unfollow": "unfollow", "join": "join", "leave": "leave",
		"member-joined": "memberJoined", "member-left": "memberLeft", "postback": "postback",
		"video-play-complete": "videoPlayComplete", "beacon": "beacon", "account-link": "accountLink",
		"membership": "membership", "module": "module", "activated": "activated", "deactivated": "deactivated",
		"bot-suspended": "botSuspended", "bot-resumed": "botResumed", "delivery": "delivery",
		"batch-image-set": "message/image,message/image,message/image,message/text",
		"batch-group":     "memberJoined,message/text,message/sticker,unsend",
		"batch-standby":   "message/text,postback,module",
		"redelivery":      "message/text",
		"unknown":         "follow,unknown,unknown",
	}
	seen := map[string]bool{}
	decodeAll(t, corpus.Webhooks(t), want, func(t *testing.T, e *line.Event) {
		if !e.Unknown() && len(e.Problems) != 0 {
			t.Errorf("%s: %v", e.Type, e.Problems)
		}
		if e.Message != nil {
			seen["message/"+e.Message.Type] = true
		}
		seen[e.Type] = true
	})
	for _, typ := range line.EventTypes() {
		if !seen[typ] {
			t.Errorf("no body with a %s event", typ)
		}
	}
	for _, mt := range line.MessageTypes() {
		if !seen["message/"+mt] {
			t.Errorf("no body with a %s message", mt)
		}
	}
}

// TestSDKFixtures decodes every fixture of LINE's Java SDK (in the shared
// corpus): each event gets its type, and the unknown ones the unknown form.
func TestSDKFixtures(t *testing.T) {
	want := map[string]string{ // file -> event type (message type)
		"account_link": "accountLink", "beacon": "beacon", "beacon_with_dm": "beacon",
		"file": "message/file", "follow": "follow", "image": "message/image", "join": "join", "leave": "leave",
		"location": "message/location", "member_joined": "memberJoined", "member_left": "memberLeft",
		"message-edited": "messageEdited/text", "postback": "postback",
		"sticker-keywords-array": "message/sticker", "sticker-keywords-remove": "message/sticker",
		"sticker-with-text": "message/sticker", "sticker": "message/sticker",
		"text-emojis": "message/text", "text-group": "message/text", "text-mention": "message/text",
		"text-user": "message/text", "unfollow": "unfollow", "unsend": "unsend",
		"video-play-complete": "videoPlayComplete", "video": "message/video", "webhook-redelivery": "message/text",
		"unknown": "unknown,unknown",
	}
	decodeAll(t, corpus.Shared(t, corpus.SDKJava), want, func(*testing.T, *line.Event) {})
}

// decodeAll decodes every *.json body of dir, one subtest each, and checks
// the types of its events against want (by file name without .json): a
// message as "message/text", an unknown event as "unknown". check sees every
// event.
func decodeAll(t *testing.T, dir string, want map[string]string, check func(*testing.T, *line.Event)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Fatalf("%d bodies in %s, %d expectations", len(files), dir, len(want))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cb, err := line.ParseCallback(b)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, raw := range cb.Events {
				e := line.DecodeEvent(raw)
				if e.Malformed() {
					t.Errorf("malformed: %s", e.Reasons(line.Malformed))
				}
				check(t, e)
				switch {
				case e.Unknown():
					got = append(got, "unknown")
					if string(e.Raw) != string(raw) {
						t.Error("the unknown form lost the raw JSON")
					}
				case e.Message != nil:
					got = append(got, e.Type+"/"+e.Message.Type)
				default:
					got = append(got, e.Type)
				}
			}
			if strings.Join(got, ",") != want[name] {
				t.Errorf("decoded as %v, want %s", got, want[name])
			}
		})
	}
}

func ev(typ, extra string) string {
	return `{"type":"` + typ + `","mode":"active","timestamp":1700000000000,"webhookEventId":"01HZZZZZZZZZZZZZZZZZZZZZZZ","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"}` + extra + `}`
}

// TestEveryType covers every event and message type of the specification
// with a valid example, decoded to its typed content.
func TestEveryType(t *testing.T) {
	rt := `,"replyToken":"r"`
	msg := func(m string) string { return rt + `,"message":{"id":"1",` + m + `}` }
	cases := map[string]struct {
		body  string
		check func(*line.Event) bool
	}{
		"message/text": {ev("message", msg(`"type":"text","text":"hi","quoteToken":"q","emojis":[{"index":0,"length":6,"productId":"p","emojiId":"e"}],"mention":{"mentionees":[{"type":"user","index":0,"length":3,"userId":"U2"},{"type":"all","index":4,"length":4}]}`)),
			func(e *line.Event) bool {
				return e.Message.Text == "hi" && len(e.Message.Emojis) == 1 && len(e.Message.Mention.Mentionees) == 2
			}},
		"message/image": {ev("message", msg(`"type":"image","quoteToken":"q","contentProvider":{"type":"line"},"imageSet":{"id":"s","index":1,"total":2}`)),
			func(e *line.Event) bool {
				return e.Message.ContentProvider.Type == "line" && e.Message.ImageSet.Total == 2
			}},
		"message/video": {ev("message", msg(`"type":"video","quoteToken":"q","duration":6000,"contentProvider":{"type":"external","originalContentUrl":"https://x/v.mp4","previewImageUrl":"https://x/p.jpg"}`)),
			func(e *line.Event) bool { return e.Message.Duration == 6000 }},
		"message/audio": {ev("message", msg(`"type":"audio","duration":100,"contentProvider":{"type":"line"}`)),
			func(e *line.Event) bool { return e.Message.Duration == 100 }},
		"message/file": {ev("message", msg(`"type":"file","fileName":"a.pdf","fileSize":42`)),
			func(e *line.Event) bool { return e.Message.FileSize == 42 }},
		"message/location": {ev("message", msg(`"type":"location","title":"Shop","address":"Bangkok","latitude":13.7,"longitude":100.5`)),
			func(e *line.Event) bool { return e.Message.Longitude == 100.5 }},
		"message/sticker": {ev("message", msg(`"type":"sticker","packageId":"446","stickerId":"1988","stickerResourceType":"STATIC","quoteToken":"q","keywords":["a"]`)),
			func(e *line.Event) bool { return e.Message.StickerID == "1988" }},
		"messageEdited": {ev("messageEdited", msg(`"type":"text","text":"edited","quoteToken":"q"`)),
			func(e *line.Event) bool { return e.Message.Text == "edited" }},
		"unsend":   {ev("unsend", `,"unsend":{"messageId":"9"}`), func(e *line.Event) bool { return e.Unsend.MessageID == "9" }},
		"follow":   {ev("follow", rt+`,"follow":{"isUnblocked":true}`), func(e *line.Event) bool { return e.Follow.IsUnblocked }},
		"unfollow": {ev("unfollow", ``), func(e *line.Event) bool { return true }},
		"join":     {ev("join", rt), func(e *line.Event) bool { return e.ReplyToken == "r" }},
		"leave":    {ev("leave", ``), func(e *line.Event) bool { return true }},
		"memberJoined": {ev("memberJoined", rt+`,"joined":{"members":[{"type":"user","userId":"U3"}]}`),
			func(e *line.Event) bool { return e.Joined.Members[0].UserID == "U3" }},
		"memberLeft": {ev("memberLeft", `,"left":{"members":[{"type":"user","userId":"U3"}]}`),
			func(e *line.Event) bool { return len(e.Left.Members) == 1 }},
		"postback": {ev("postback", rt+`,"postback":{"data":"a=1","params":{"date":"2026-01-01"}}`),
			func(e *line.Event) bool { return e.Postback.Data == "a=1" }},
		"videoPlayComplete": {ev("videoPlayComplete", rt+`,"videoPlayComplete":{"trackingId":"t"}`),
			func(e *line.Event) bool { return e.VideoPlayComplete.TrackingID == "t" }},
		"beacon": {ev("beacon", rt+`,"beacon":{"hwid":"d41d8cd98f","type":"enter","dm":"x"}`),
			func(e *line.Event) bool { return e.Beacon.Type == "enter" }},
		"accountLink": {ev("accountLink", rt+`,"link":{"result":"ok","nonce":"n"}`),
			func(e *line.Event) bool { return e.Link.Result == "ok" }},
		"membership": {ev("membership", rt+`,"membership":{"type":"joined","membershipId":3}`),
			func(e *line.Event) bool { return e.Membership.MembershipID == 3 }},
		"module": {ev("module", `,"module":{"type":"attached","botId":"U4","scopes":["message:send"]}`),
			func(e *line.Event) bool { return e.Module.BotID == "U4" }},
		"activated": {ev("activated", `,"chatControl":{"expireAt":1700000000000}`),
			func(e *line.Event) bool { return e.ChatControl.ExpireAt > 0 }},
		"deactivated":  {ev("deactivated", ``), func(e *line.Event) bool { return true }},
		"botSuspended": {ev("botSuspended", ``), func(e *line.Event) bool { return true }},
		"botResumed":   {ev("botResumed", ``), func(e *line.Event) bool { return true }},
		"delivery":     {ev("delivery", `,"delivery":{"data":"d"}`), func(e *line.Event) bool { return e.Delivery.Data == "d" }},
	}
	// The table must cover the specification.
	for _, typ := range line.EventTypes() {
		if _, ok := cases[typ]; !ok && typ != "message" {
			t.Errorf("no case for event type %s", typ)
		}
	}
	for _, mt := range line.MessageTypes() {
		if _, ok := cases["message/"+mt]; !ok {
			t.Errorf("no case for message type %s", mt)
		}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !json.Valid([]byte(tc.body)) {
				t.Fatalf("bad test JSON %s", tc.body)
			}
			e := line.DecodeEvent([]byte(tc.body))
			if len(e.Problems) != 0 {
				t.Fatalf("problems: %v", e.Problems)
			}
			if !tc.check(e) {
				t.Errorf("decoded %+v", e)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		body string
		kind line.ProblemKind
		path string
	}{
		{"missing required", ev("postback", `,"replyToken":"r","postback":{}`), line.Malformed, "postback.data"},
		{"wrong type", ev("message", `,"message":{"id":1,"type":"text","text":"x","quoteToken":"q"}`), line.Malformed, "message.id"},
		{"float timestamp", strings.Replace(ev("leave", ``), "1700000000000", "1.5", 1), line.Malformed, "timestamp"},
		{"missing timestamp", strings.Replace(ev("leave", ``), `"timestamp":1700000000000,`, "", 1), line.Malformed, "timestamp"},
		{"not an object", `[1,2]`, line.Malformed, "(event)"},
		{"group without id", ev("join", `,"replyToken":"r"`)[:0] + `{"type":"join","mode":"active","timestamp":1,"replyToken":"r","source":{"type":"group"}}`, line.Malformed, "source.groupId"},
		{"unknown event type", ev("greatNewFeature", ``), line.Unknown, "type"},
		{"unknown message type", ev("message", `,"message":{"id":"1","type":"hologram"}`), line.Unknown, "message.type"},
		{"unknown source type", `{"type":"leave","mode":"active","timestamp":1,"source":{"type":"space"}}`, line.Unknown, "source.type"},
		{"new field", ev("leave", `,"shinyNewField":1`), line.Drift, "shinyNewField"},
		{"new enum value", ev("message", `,"replyToken":"r","message":{"id":"1","type":"sticker","packageId":"1","stickerId":"2","stickerResourceType":"HOLOGRAM","quoteToken":"q"}`), line.Drift, "message.stickerResourceType"},
		{"new mode", strings.Replace(ev("leave", ``), `"active"`, `"paused"`, 1), line.Drift, "mode"},
		{"legacy: no webhookEventId", `{"type":"leave","mode":"active","timestamp":1,"source":{"type":"user","userId":"U1"}}`, line.Legacy, "webhookEventId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := line.DecodeEvent([]byte(tt.body))
			if !slices.ContainsFunc(e.Problems, func(p line.Problem) bool { return p.Kind == tt.kind && p.Path == tt.path }) {
				t.Errorf("problems %v, want %s at %s", e.Problems, tt.kind, tt.path)
			}
		})
	}
}

func TestDedupKey(t *testing.T) {
	a := line.DecodeEvent([]byte(ev("leave", ``)))
	b := line.DecodeEvent([]byte(strings.Replace(ev("leave", ``), `"isRedelivery":false`, `"isRedelivery":true`, 1)))
	if a.DedupKey() != b.DedupKey() || !strings.HasPrefix(a.DedupKey(), "id:") {
		t.Errorf("redelivery changed the key: %s, %s", a.DedupKey(), b.DedupKey())
	}
	legacy := `{"type":"leave","mode":"active","timestamp":1,"source":{"type":"user","userId":"U1"}}`
	c := line.DecodeEvent([]byte(legacy))
	d := line.DecodeEvent([]byte(`{"source":{"userId":"U1","type":"user"}, "timestamp":1,"mode":"active","type":"leave","deliveryContext":{"isRedelivery":true}}`))
	e := line.DecodeEvent([]byte(strings.Replace(legacy, "U1", "U2", 1)))
	if c.DedupKey() != d.DedupKey() || c.DedupKey() == e.DedupKey() {
		t.Errorf("content keys: %s %s %s", c.DedupKey(), d.DedupKey(), e.DedupKey())
	}
}

func TestVerifyDummy(t *testing.T) {
	for tok, want := range map[string]bool{
		"00000000000000000000000000000000": true, "ffffffffffffffffffffffffffffffff": true, "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA": false,
	} {
		e := line.DecodeEvent([]byte(ev("message", `,"replyToken":"`+tok+`","message":{"id":"1","type":"text","text":"x","quoteToken":"q"}`)))
		if e.VerifyDummy() != want {
			t.Errorf("VerifyDummy(%s) = %v", tok, !want)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(corpus.Webhooks(f), "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if cb, err := line.ParseCallback(b); err == nil {
			for _, e := range cb.Events {
				f.Add([]byte(e))
			}
		}
	}
	f.Add([]byte(ev("postback", `,"postback":{"data":1}`)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e := line.DecodeEvent(raw)
		if e.Raw == nil && raw != nil {
			t.Fatal("raw lost")
		}
		if !json.Valid(raw) && !e.Malformed() {
			t.Fatalf("invalid JSON not malformed: %q", raw)
		}
		e.DedupKey()
		e.Conversation()
	})
}

func FuzzParseCallback(f *testing.F) {
	f.Add([]byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`))
	f.Add([]byte(`{"events":[{"type":"x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cb, err := line.ParseCallback(b)
		if err == nil {
			for _, e := range cb.Events {
				line.DecodeEvent(e)
			}
		}
	})
}

// TestValidationEdges: what each kind of odd event is judged as, and what
// it must not be judged as.
func TestValidationEdges(t *testing.T) {
	msg := func(m string) string { return ev("message", `,"replyToken":"r","message":{"id":"1",`+m+`}`) }
	mention := func(typ string) string {
		return msg(`"type":"text","text":"@a","quoteToken":"q","mention":{"mentionees":[{"type":"` + typ + `","index":0,"length":2}]}`)
	}
	type at struct {
		kind line.ProblemKind
		path string
	}
	tests := []struct {
		name string
		body string
		want []at // problems that must be found
		not  []at // problems that must not be
		// the event as a whole
		malformed, unknown bool
	}{
		{name: "empty event type", body: ev("", ``), want: []at{{line.Malformed, "type"}}, malformed: true},
		{name: "empty message type", body: msg(`"type":"","text":"hi"`),
			want: []at{{line.Malformed, "message.type"}}, not: []at{{line.Drift, "message.text"}}, malformed: true},
		{name: "empty source type", body: `{"type":"leave","mode":"active","timestamp":1,"source":{"type":"","userId":"U1"}}`,
			want: []at{{line.Malformed, "source.type"}}, not: []at{{line.Drift, "source.userId"}}, malformed: true},
		{name: "empty mode", body: strings.Replace(ev("leave", ``), `"active"`, `""`, 1), want: []at{{line.Malformed, "mode"}}, malformed: true},
		{name: "empty enum value", body: msg(`"type":"sticker","packageId":"1","stickerId":"2","stickerResourceType":"","quoteToken":"q"`),
			want: []at{{line.Malformed, "message.stickerResourceType"}}, malformed: true},
		{name: "unknown mentionee type", body: mention("group"),
			want: []at{{line.Drift, "message.mention.mentionees[0].type"}}, not: []at{{line.Unknown, "message.mention.mentionees[0].type"}}},
		{name: "known mentionee types", body: mention("all"), not: []at{{line.Drift, "message.mention.mentionees[0].type"}}},
		{name: "unknown membership type", body: ev("membership", `,"replyToken":"r","membership":{"type":"upgraded","membershipId":3}`),
			want: []at{{line.Drift, "membership.type"}}, not: []at{{line.Drift, "membership.membershipId"}}},
		{name: "unknown module type", body: ev("module", `,"module":{"type":"paused","botId":"U4"}`),
			want: []at{{line.Drift, "module.type"}}, not: []at{{line.Drift, "module.botId"}}},
		{name: "unknown message type", body: msg(`"type":"hologram"`), want: []at{{line.Unknown, "message.type"}}, unknown: true},
		{name: "unknown source type", body: `{"type":"leave","mode":"active","timestamp":1,"source":{"type":"space"}}`,
			want: []at{{line.Unknown, "source.type"}}, unknown: true},
		{name: "message without type", body: msg(`"text":"hi","quoteToken":"q"`),
			want: []at{{line.Malformed, "message.type"}}, not: []at{{line.Drift, "message.text"}, {line.Drift, "message.quoteToken"}}, malformed: true},
		{name: "message type not a string", body: msg(`"type":7,"text":"hi"`),
			want: []at{{line.Malformed, "message.type"}}, not: []at{{line.Drift, "message.text"}}, malformed: true},
		{name: "event without type", body: `{"mode":"active","timestamp":1,"source":{"type":"user","userId":"U1"},"replyToken":"r","message":{"id":"1","type":"text","text":"x"}}`,
			want: []at{{line.Malformed, "type"}}, not: []at{{line.Drift, "message"}, {line.Drift, "replyToken"}}, malformed: true},
		{name: "a field the spec lacks, with a type", body: msg(`"type":"text","text":"hi","quoteToken":"q","foo":1`),
			want: []at{{line.Drift, "message.foo"}}},
		{name: "unknown mode", body: strings.Replace(ev("leave", ``), `"active"`, `"paused"`, 1), want: []at{{line.Drift, "mode"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !json.Valid([]byte(tt.body)) {
				t.Fatalf("bad test JSON %s", tt.body)
			}
			e := line.DecodeEvent([]byte(tt.body))
			has := func(a at) bool {
				return slices.ContainsFunc(e.Problems, func(p line.Problem) bool { return p.Kind == a.kind && p.Path == a.path })
			}
			for _, a := range tt.want {
				if !has(a) {
					t.Errorf("problems %v, want %s at %s", e.Problems, a.kind, a.path)
				}
			}
			for _, a := range tt.not {
				if has(a) {
					t.Errorf("problems %v, want no %s at %s", e.Problems, a.kind, a.path)
				}
			}
			if e.Malformed() != tt.malformed || e.Unknown() != tt.unknown {
				t.Errorf("malformed %v, unknown %v; want %v, %v (%v)", e.Malformed(), e.Unknown(), tt.malformed, tt.unknown, e.Problems)
			}
		})
	}
}

// TestProblemFlag: a flag names its kind and its field.
func TestProblemFlag(t *testing.T) {
	e := line.DecodeEvent([]byte(`{"type":"leave","mode":"active","timestamp":1,"source":{"type":"user","userId":"U1"},"sparkle":1}`))
	var flags []string
	for _, p := range e.Problems {
		flags = append(flags, p.Flag())
	}
	slices.Sort(flags)
	if want := []string{"drift:sparkle", "legacy:deliveryContext", "legacy:webhookEventId"}; !slices.Equal(flags, want) {
		t.Errorf("flags %v, want %v", flags, want)
	}
}

// TestCallbackDestination: the destination is judged apart from the
// events: a malformed one never costs them.
func TestCallbackDestination(t *testing.T) {
	const event = `{"type":"leave","mode":"active","timestamp":1}`
	tests := []struct {
		name, destination string // destination: its JSON, "" for none
		want              string // Callback.Destination
		problem           string // the flag of its problem, if any
	}{
		{"valid", `"U0123456789abcdef0123456789abcdef"`, "U0123456789abcdef0123456789abcdef", ""},
		{"absent", ``, "", "legacy:destination"},
		{"null", `null`, "", "legacy:destination"},
		{"a number", `12345`, "", "malformed:destination"},
		{"an object", `{"id":"U1"}`, "", "malformed:destination"},
		{"not a user id", `"U1"`, "", "malformed:destination"},
		{"empty", `""`, "", "malformed:destination"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := `{"events":[` + event + `]}`
			if tt.destination != "" {
				b = `{"destination":` + tt.destination + `,"events":[` + event + `]}`
			}
			cb, err := line.ParseCallback([]byte(b))
			if err != nil {
				t.Fatalf("ParseCallback: %v", err)
			}
			if len(cb.Events) != 1 || string(cb.Events[0]) != event {
				t.Errorf("events %q", cb.Events)
			}
			if cb.Destination != tt.want {
				t.Errorf("destination %q, want %q", cb.Destination, tt.want)
			}
			var flags []string
			for _, p := range cb.Problems {
				flags = append(flags, p.Flag())
			}
			if want := []string{tt.problem}; tt.problem == "" && len(flags) != 0 || tt.problem != "" && !slices.Equal(flags, want) {
				t.Errorf("problems %v, want %q", cb.Problems, tt.problem)
			}
		})
	}
}
