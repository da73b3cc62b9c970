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
	for _, s := range []string{`{}`, `{"replyToken":"x","a":[1,"]"]}`, `{"a":{"b":"\\\""},"ReplyToken":0}`, `{"reply\u0054oken":1}`} {
		f.Add([]byte(s))
	}
	// LINE's webhook bodies' events, when the corpus is there.
	bodies, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "line", "fixtures", "*", "*.json"))
	for _, p := range bodies {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var cb struct{ Events []json.RawMessage }
		if json.Unmarshal(b, &cb) == nil {
			for _, e := range cb.Events {
				f.Add([]byte(e))
			}
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
		var x, y any
		if json.Unmarshal(va, &x) != nil || json.Unmarshal(vb, &y) != nil || !reflect.DeepEqual(x, y) {
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
				if _, err := buildBody("U0123456789abcdef0123456789abcdef", events, c.owner, c.redelivery); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
