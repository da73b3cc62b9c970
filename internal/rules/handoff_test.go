package rules_test

import (
	"context"
	"strings"
	"testing"

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
