package rules_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/rules"
)

type fakeHandoffs struct{ got []string }

func (f *fakeHandoffs) HandOff(_ context.Context, channel, conv, rule string) error {
	f.got = append(f.got, channel+"/"+conv+"/"+rule)
	return nil
}

// The examples' handoff rules: keywords in three languages and a topic
// regex hand the conversation off and say so; other texts do not.
func TestHandoffRule(t *testing.T) {
	s := load(t, `
rules:
  - name: ask-for-a-person
    when: {text: {regex: '^\s*(agent|human|人間|担当者|เจ้าหน้าที่)\s*$'}}
    handoff:
      message: [{type: text, text: "A person will answer you here shortly."}]
  - name: sensitive-topics
    when: {text: {regex: '(loan|mortgage|ローン|融資|medical|医療|สินเชื่อ)'}}
    handoff: {}
  - name: echo
    when: {event: [message]}
    reply: [{type: text, text: "bot"}]
`)
	fs, ho := &fakeSender{}, &fakeHandoffs{}
	eng := rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}, Handoffs: ho})
	for _, text := range []string{"agent", "人間", "เจ้าหน้าที่", "about my mortgage", "hello"} {
		dv, e := event(t, text)
		if err := eng.Handle(context.Background(), dv, e); err != nil {
			t.Fatal(err)
		}
	}
	want := "c/user:U9/ask-for-a-person c/user:U9/ask-for-a-person c/user:U9/ask-for-a-person c/user:U9/sensitive-topics"
	if got := strings.Join(ho.got, " "); got != want {
		t.Fatalf("handoffs:\n got %s\nwant %s", got, want)
	}
	var sent []string
	for _, r := range fs.reqs {
		sent = append(sent, r.Rule+":"+string(r.Messages[0]))
	}
	want = `ask-for-a-person:{"text":"A person will answer you here shortly.","type":"text"} ` +
		`ask-for-a-person:{"text":"A person will answer you here shortly.","type":"text"} ` +
		`ask-for-a-person:{"text":"A person will answer you here shortly.","type":"text"} echo:{"text":"bot","type":"text"}`
	if got := strings.Join(sent, " "); got != want {
		t.Fatalf("sends:\n got %s\nwant %s", got, want)
	}
	// Without a handoff service, a handoff rule fails rather than answering.
	eng = rules.NewEngine(s, rules.EngineOptions{Sender: fs, Ledger: nopLedger{}})
	dv, e := event(t, "agent")
	if err := eng.Handle(context.Background(), dv, e); err == nil {
		t.Fatal("a handoff rule without a handoff service succeeded")
	}
	// A handoff with reply is ambiguous.
	if _, err := loadWith(t, `
rules:
  - name: both
    when: {text: {exact: x}}
    reply: [{type: text, text: "a"}]
    handoff: {message: [{type: text, text: "b"}]}
`, nil); err == nil || !strings.Contains(err.Error(), "handoff") {
		t.Fatalf("handoff with reply loaded: %v", err)
	}
}

type chatSender struct {
	fakeSender
	chats []outbound.ChatRequest
}

func (c *chatSender) Chat(_ context.Context, r outbound.ChatRequest) (outbound.Outcome, *outbound.Recorded, error) {
	c.chats = append(c.chats, r)
	return outbound.Sent, nil, nil
}

// A lookup with loading_seconds shows the loading animation in the
// user's chat while it runs; one without does not.
func TestLookupLoading(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"s":"ok"}`)) }))
	defer svc.Close()
	s := load(t, `
rules:
  - name: slow
    when: {text: {exact: slow}}
    lookup: {url: "`+svc.URL+`/q", loading_seconds: 10}
    reply: [{type: text, text: "{{.Lookup.s}}"}]
  - name: quick
    when: {text: {exact: quick}}
    lookup: {url: "`+svc.URL+`/q"}
    reply: [{type: text, text: "{{.Lookup.s}}"}]
`)
	cs := &chatSender{}
	eng := rules.NewEngine(s, rules.EngineOptions{Sender: cs, Ledger: nopLedger{}, LookupHosts: []string{strings.TrimPrefix(svc.URL, "http://")}})
	for _, text := range []string{"slow", "quick"} {
		dv, e := event(t, text)
		if err := eng.Handle(context.Background(), dv, e); err != nil {
			t.Fatal(err)
		}
	}
	if len(cs.chats) != 1 || cs.chats[0].UserID != "U9" || cs.chats[0].Seconds != 10 || cs.chats[0].Endpoint != outbound.EndpointLoading {
		t.Fatalf("chat calls: %+v", cs.chats)
	}
	if len(cs.reqs) != 2 {
		t.Fatalf("%d replies, want 2", len(cs.reqs))
	}
	if _, err := loadWith(t, `
rules:
  - name: bad
    when: {text: {exact: x}}
    lookup: {url: "https://example.com/q", loading_seconds: 7}
    reply: [{type: text, text: "a"}]
`, nil); err == nil {
		t.Fatal("loading_seconds 7 loaded")
	}
}
