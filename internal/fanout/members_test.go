package fanout

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestWithoutMembers(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{}`, `{}`},
		{` { } `, ` { } `}, // nothing goes: as it is
		{`{"a":1}`, `{"a":1}`},
		{`{"replyToken":"x"}`, `{}`},
		{`{"replyToken":"x","a":1}`, `{"a":1}`},
		{`{"a":1,"replyToken":"x"}`, `{"a":1}`},
		{`{"a":1,"replyToken":"x","b":[1,{"c":"}"}]}`, `{"a":1,"b":[1,{"c":"}"}]}`},
		{"{ \"a\" : 1 ,\n\t\"REPLYTOKEN\" : \"x\" , \"b\" : { \"replyToken\" : \"nested\" } }", "{\"a\" : 1,\"b\" : { \"replyToken\" : \"nested\" }}"},
		{`{"replyToken":"x","replytoken":"y","a":"q\"uote\\","replyTo` + "\u212A" + `en":"z"}`, `{"a":"q\"uote\\"}`},
		{`{"reply\u0054oken":"x","a\u0022b":true,"n":-1.5e3,"z":null,"f":false}`, `{"a\u0022b":true,"n":-1.5e3,"z":null,"f":false}`},
		{`{"a":"replyToken","b":{"replyToken":{"replyToken":1}},"c":["replyToken"]}`, `{"a":"replyToken","b":{"replyToken":{"replyToken":1}},"c":["replyToken"]}`},
	} {
		got := withoutMembers([]byte(tt.in), isReplyTokenKey)
		if string(got) != tt.want {
			t.Errorf("withoutMembers(%s) = %s; want %s", tt.in, got, tt.want)
		}
		if !json.Valid(got) {
			t.Errorf("withoutMembers(%s) = %s: not JSON", tt.in, got)
		}
	}
}

// FuzzWithoutMembers: for any JSON object, what withoutMembers leaves
// reads as the object decoded whole with the reply token's keys deleted,
// and an object without them comes back as it is.
func FuzzWithoutMembers(f *testing.F) {
	for _, s := range append([]string{`{}`, `{"replyToken":"x","a":[1,"]"]}`, `{"a":{"b":"\\\""},"ReplyToken":0}`, `{"reply\u0054oken":1}`}, hostileEvents...) {
		f.Add([]byte(s))
	}
	// The events of the module's corpus of LINE's webhook bodies.
	bodies, err := filepath.Glob(filepath.Join("..", "corpus", "testdata", "webhooks", "*.json"))
	if err != nil || len(bodies) == 0 {
		f.Fatalf("no webhook bodies in ../corpus/testdata/webhooks: %v", err)
	}
	for _, p := range bodies {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var cb struct{ Events []json.RawMessage }
		if err := json.Unmarshal(b, &cb); err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		for _, e := range cb.Events {
			f.Add([]byte(e))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var whole map[string]json.RawMessage
		if !json.Valid(in) || !isObject(in) || json.Unmarshal(in, &whole) != nil {
			return
		}
		got := withoutMembers(in, isReplyTokenKey)
		var left map[string]json.RawMessage
		if err := json.Unmarshal(got, &left); err != nil {
			t.Fatalf("withoutMembers(%s) = %s: %v", in, got, err)
		}
		want := maps.Clone(whole)
		dropped := false
		for k := range want {
			if isReplyTokenKey([]byte(k)) {
				delete(want, k)
				dropped = true
			}
		}
		if !dropped && !bytes.Equal(got, in) {
			t.Fatalf("withoutMembers(%s) = %s: changed an object with nothing to take out", in, got)
		}
		if !equalJSON(t, left, want) {
			t.Fatalf("withoutMembers(%s) = %s; want the members %v", in, got, want)
		}
	})
}

// equalJSON reports whether two objects' members hold the same values.
func equalJSON(t *testing.T, a, b map[string]json.RawMessage) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		// As numbers' text: 1e999 is JSON, not a float64.
		var x, y any
		dx, dy := json.NewDecoder(bytes.NewReader(va)), json.NewDecoder(bytes.NewReader(vb))
		dx.UseNumber()
		dy.UseNumber()
		if dx.Decode(&x) != nil || dy.Decode(&y) != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

// BenchmarkBuildBody builds a body of 14 message events (about what a
// request carries at 1,200 webhooks a second): for the owner of the reply
// token (the events as recorded), for another destination (each reply
// token taken out), and as a replay's redelivery to another destination
// (each event decoded whole to set its delivery context).
func BenchmarkBuildBody(b *testing.B) {
	ev := json.RawMessage(`{"type":"message","message":{"type":"text","id":"468789577898262530","quoteToken":"q3Plxr4AgKd...","text":"where is my parcel #A1042?"},"webhookEventId":"01H810YECXQQZ37VAXPF6H9E6T","deliveryContext":{"isRedelivery":false},"timestamp":1692251666727,"source":{"type":"user","userId":"U4af4980629a0b1c2d3e4f5a6b7c8d9e0"},"replyToken":"38ef843bde154d9b91c21320ffd17a0f","mode":"active"}`)
	events := make([]json.RawMessage, 14)
	for i := range events {
		events[i] = ev
	}
	for _, c := range []struct {
		name              string
		owner, redelivery bool
	}{{"owner", true, false}, {"observer", false, false}, {"redelivery", false, true}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := BuildBody("U0123456789abcdef0123456789abcdef", events, c.owner, c.redelivery); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// hostileEvents are events built to get a reply token past the non-owner
// path, or to break the body: duplicate keys, case and Unicode folding,
// every form of escape, invalid UTF-8, strings that look like structure,
// odd numbers, and odd reply token values.
var hostileEvents = []string{
	`{"replyToken":"x","replyToken":"y"}`, `{"replyToken":"x","a":1,"replyToken":"y"}`,
	"{\"replyTo\u212Aen\":\"x\"}", `{"replyTo\u212Aen":"x"}`, `{"reply\u0054oken":"x"}`,
	`{"\u0072\u0065\u0070\u006c\u0079\u0054\u006f\u006b\u0065\u006e":"x"}`, `{"reply\/Token":"x"}`,
	`{"replyToken\u0000":"x"}`, "{\"replyToken\xff\":\"x\"}", "{\"reply\xffToken\":\"x\"}",
	`{"replyToken" :  "x" , "a" : "}" }`, `{"a":"\\","replyToken":"x"}`, `{"a":"\\\"","replyToken":"x"}`,
	`{"a":"\"replyToken\":1","replyToken":"x"}`, `{"a":[{"replyToken":"n"}],"replyToken":"x"}`,
	`{"a":1e999,"replyToken":"x","b":-0.0e-0}`, `{"a":123456789012345678901234567890,"replyToken":"x"}`,
	`{"replyToken":null}`, `{"replyToken":{"a":"b"}}`, `{"replyToken":["x"]}`, `{"replyToken":1}`,
	"{\"a\xff\":1,\"a\xfe\":2,\"replyToken\":\"x\"}", `{"\ud800":1,"replyToken":"x"}`,
	`{"a":"<>&\u2028","replyToken":"x"}`, `{"a":1,"a":2,"replyToken":"x"}`, `{"replyToken":"x","":1}`,
	`{"deliveryContext":[1],"replyToken":"x"}`, `{"deliveryContext":null,"replyToken":"x"}`,
	`{"replyToken":"x","a":{"b":[[],{},[{}]],"c":"]}"}}`,
}

// TestBuildBodyHostile: for a destination that does not own the reply
// token, as delivered or as a replay's redelivery, no hostile event's
// body lets Go's encoding/json (LINE's Go SDK) or an exact-key reader
// (JSON.parse) read a reply token, and every other member stays; what is
// not a JSON object is refused.
func TestBuildBodyHostile(t *testing.T) {
	for _, ev := range hostileEvents {
		for _, redelivery := range []bool{false, true} {
			b, err := BuildBody("U1", []json.RawMessage{json.RawMessage(ev)}, false, redelivery)
			if err != nil {
				t.Errorf("%q (redelivery=%v): %v", ev, redelivery, err)
				continue
			}
			var got struct {
				Events []struct {
					ReplyToken string `json:"replyToken"`
				} `json:"events"`
			}
			var raw struct{ Events []map[string]json.RawMessage }
			if json.Unmarshal(b, &got) != nil || json.Unmarshal(b, &raw) != nil || len(raw.Events) != 1 {
				t.Errorf("%q (redelivery=%v): body %q not read", ev, redelivery, b)
				continue
			}
			left := raw.Events[0]
			if _, exact := left["replyToken"]; exact || got.Events[0].ReplyToken != "" {
				t.Errorf("%q (redelivery=%v): a reply token is read from %q", ev, redelivery, b)
			}
			var want map[string]json.RawMessage
			json.Unmarshal([]byte(ev), &want)
			for k := range want {
				if isReplyTokenKey([]byte(k)) {
					delete(want, k)
				}
			}
			if redelivery {
				delete(want, "deliveryContext")
				delete(left, "deliveryContext")
			}
			if !equalJSON(t, left, want) {
				t.Errorf("%q (redelivery=%v): members %q, want %v", ev, redelivery, b, want)
			}
		}
	}
	for _, bad := range []string{"\xef\xbb\xbf{}", `{"replyToken":"x"} x`, `{}{}`, `{"replyToken":"x"`, `{,}`, `{"a":1,}`, "{\"a\":1\x00}", "{\u00a0\"a\":1}", ``} {
		for _, redelivery := range []bool{false, true} {
			if b, err := BuildBody("U1", []json.RawMessage{json.RawMessage(bad)}, false, redelivery); err == nil {
				t.Errorf("%q (redelivery=%v) accepted: %q", bad, redelivery, b)
			}
		}
	}
}
