package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/console/consoletest"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// TestConsoleHandoff runs the whole handoff through the real binary, the
// simulator and headless Chromium: a user asks for a person and the rule
// hands the conversation off; the bot is silent on the next message; the
// notification reaches a test receiver; the agent logs into the console, sees it waiting, opens it (LINE's
// markAsRead reaches the simulator with the latest message's token),
// takes it over, types (the loading animation reaches the simulator) and
// replies (the simulator gets the reply; the ledger records it with the
// agent's name); while the operator's kill switch is on, a reply is held
// back and recorded; the agent hands the conversation back, and the bot
// answers the next message.
func TestConsoleHandoff(t *testing.T) {
	b := consoletest.New(t)
	dir := t.TempDir()
	hw := newHandoffWorld(t)
	cfg := hw.config("1h")
	cfg.extra += consoleSection(t)
	g := startGateway(t, dir, cfg)
	const user = "U2222222222222222222222222222cccc"
	conv := "user:" + user

	hw.say(t, g, user, "hello")
	hw.waitCall(t, "/v2/bot/message/reply", "echo: hello")
	tok, _ := hw.say(t, g, user, "人間")
	if c := hw.waitCall(t, "/v2/bot/message/reply", tok); !strings.Contains(string(c.Body), "A person will answer you here shortly.") {
		t.Fatalf("the handoff rule answered %s", c.Body)
	}
	waitIdle(t, g)
	_, readTok := hw.say(t, g, user, "My loan contract, please")
	waitIdle(t, g)
	sends := len(hw.calls("/v2/bot/message/reply")) + len(hw.calls("/v2/bot/message/push"))
	// The test receiver gets the notification that a person is needed.
	hw.waitNotified(t, conv, user, "My loan contract")

	// The agent's inbox: the conversation waits.
	if code := b.Login(t, g.admin, "alice", consolePasswords["alice"]); code != 200 {
		t.Fatalf("alice's login: %d", code)
	}
	if n := b.Text(t, "#waiting-count"); n != "1" {
		t.Fatalf("waiting: %s, want 1:\n%s", n, b.Text(t, "main"))
	}
	b.Screenshot(t, consoleDocs, "inbox")
	if code := b.Click(t, "a.conv"); code != 200 {
		t.Fatalf("the conversation: %d", code)
	}
	if h := b.Text(t, "#history"); !strings.Contains(h, "My loan contract, please") || !strings.Contains(h, "人間") {
		t.Errorf("history: %q", h)
	}
	hw.waitCall(t, "/v2/bot/chat/markAsRead", readTok)

	if code := b.Click(t, "#takeover"); code != 200 {
		t.Fatalf("take over: %d", code)
	}
	if a := b.Text(t, "#agent"); a != "alice" {
		t.Errorf("after take over, agent %q", a)
	}
	b.Type(t, "#reply-text", "Hello, this is Alice from the loans team. Which contract?")
	b.Type(t, "#quick-replies", "Home loan\nCar loan")
	hw.waitCall(t, "/v2/bot/chat/loading/start", user) // typing
	b.Screenshot(t, consoleDocs, "conversation")
	if code := b.Click(t, "#send"); code != 200 {
		t.Fatalf("reply: %d", code)
	}
	if n := b.Text(t, "#notice"); n != "Reply sent." {
		t.Errorf("after the reply: %q", n)
	}
	if c := hw.waitCall(t, "/v2/bot/message/reply", "Hello, this is Alice"); !strings.Contains(string(c.Body), `"Car loan"`) {
		t.Errorf("the reply lacks its quick replies: %s", c.Body)
	}
	if h := b.Text(t, "#history"); !strings.Contains(h, "agent:alice") {
		t.Errorf("the history lacks alice's reply: %q", h)
	}

	// The operator turns the kill switch on: alice's next reply is held
	// back, and recorded.
	op := newConsoleClient(t, g.admin)
	if r := op.login("carol", consolePasswords["carol"]); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("carol's login: %d", r.StatusCode)
	}
	_, _, csrf := op.page("/console/ops")
	if r := op.post("/console/ops/kill-switch", url.Values{"csrf": {csrf}, "on": {"true"}, "reason": {"checking a complaint"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("kill switch: %d", r.StatusCode)
	}
	before := len(hw.api.Calls())
	b.Type(t, "#reply-text", "This one is held back")
	if code := b.Click(t, "#send"); code != 200 {
		t.Fatalf("reply under the kill switch: %d", code)
	}
	if n := b.Text(t, "#notice"); !strings.Contains(n, "held back") {
		t.Errorf("a reply under the kill switch: %q", n)
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range hw.api.Calls()[before:] {
		if strings.Contains(string(c.Body), "held back") {
			t.Errorf("a reply under the kill switch reached LINE: %s", c.Body)
		}
	}
	if r := op.post("/console/ops/kill-switch", url.Values{"csrf": {csrf}, "on": {"false"}, "reason": {"done"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("kill switch off: %d", r.StatusCode)
	}

	// Hand back: the bot answers again.
	if code := b.Click(t, "#handback"); code != 200 {
		t.Fatalf("hand back: %d", code)
	}
	if s := b.Text(t, "#state"); s != "bot" {
		t.Errorf("after hand back: %q", s)
	}
	hw.say(t, g, user, "thanks")
	hw.waitCall(t, "/v2/bot/message/reply", "echo: thanks")
	if n := len(hw.calls("/v2/bot/message/reply")) + len(hw.calls("/v2/bot/message/push")); n != sends+2 {
		t.Errorf("%d sends since the handoff, want 2 (alice's reply, the bot's echo)", n-sends)
	}
	g.stop()

	// The ledger: alice's replies (one sent, one held back) name her; so
	// do the takeover and the hand back, and the mark as read.
	var sent, held, read int
	var changes []string
	for _, r := range readLedger(t, dir) {
		switch r.leaf.Kind {
		case ledger.KindOutbound:
			var o record.Outbound
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatal(err)
			}
			switch {
			case o.Agent == "alice" && strings.Contains(string(o.Request), "Hello, this is Alice") && o.Outcome == "sent":
				sent++
			case o.Agent == "alice" && strings.Contains(string(o.Request), "This one is held back") && o.Outcome != "sent":
				held++
			case o.Agent == "alice" && strings.Contains(o.Endpoint, "markAsRead"):
				read++
			}
		case ledger.KindAdmin:
			var a record.Admin
			if err := json.Unmarshal(r.body, &a); err != nil {
				t.Fatal(err)
			}
			if a.Action == "handoff" && a.Subject == conv {
				changes = append(changes, a.Detail["by"].(string)+" "+a.Detail["state"].(string))
			}
		}
	}
	if sent != 1 || held != 1 || read < 1 {
		t.Errorf("alice's records: %d sent, %d held back, %d mark as read; want 1, 1, at least 1", sent, held, read)
	}
	if got := strings.Join(changes, ", "); got != "rule:ask-for-a-person human, agent:alice human, agent:alice bot" {
		t.Errorf("the conversation's changes: %s", got)
	}
	if strings.Contains(g.Logs(), "My loan contract") || strings.Contains(g.Logs(), "Hello, this is Alice") {
		t.Error("the log holds message text")
	}
}
