package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

// handoffWorld is a gateway whose rules hand conversations to people, the
// simulator's Messaging API it sends to, and a receiver of notifications.
type handoffWorld struct {
	api    *sim.API
	apiURL string
	msgID  int64

	mu       sync.Mutex
	notified []string
	notify   *httptest.Server
}

func newHandoffWorld(t *testing.T) *handoffWorld {
	w := &handoffWorld{api: sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "test-access-token", Secret: testSecret}}}),
		msgID: 700000000000}
	srv := httptest.NewServer(w.api)
	t.Cleanup(srv.Close)
	w.apiURL = srv.URL
	w.notify = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		w.notified = append(w.notified, string(b))
		w.mu.Unlock()
	}))
	t.Cleanup(w.notify.Close)
	return w
}

// waitNotified waits for the notification that conv needs a person, and
// checks it names the conversation by its pseudonym, the rule and the
// console, and holds neither the user's id nor any of the texts.
func (w *handoffWorld) waitNotified(t *testing.T, conv, user string, texts ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		w.mu.Lock()
		n := len(w.notified)
		w.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.mu.Lock()
	notified := strings.Join(w.notified, "\n")
	w.mu.Unlock()
	bad := !strings.Contains(notified, record.Pseudonym(conv)) || !strings.Contains(notified, `"reason":"rule:ask-for-a-person"`) ||
		!strings.Contains(notified, "https://ops.example/console") || strings.Contains(notified, user)
	for _, text := range texts {
		bad = bad || strings.Contains(notified, text)
	}
	if bad {
		t.Fatalf("notification: %q", notified)
	}
}

func (w *handoffWorld) config(idle string) gwConfig {
	return gwConfig{
		extra: "line_api_base: " + w.apiURL + `
consent: {opt_out_keywords: [STOP]}
rules:
  - name: ask-for-a-person
    when: {text: {regex: '^\s*(agent|human|人間|เจ้าหน้าที่)\s*$'}}
    handoff:
      message: [{type: text, text: "A person will answer you here shortly."}]
  - name: echo
    when: {event: [message]}
    reply: [{type: text, text: "echo: {{.Text}}"}]
`,
		chanExtra: `    handoff:
      idle: ` + idle + `
      console_url: https://ops.example/console
      notify:
        - {name: ops, kind: json, url: "` + w.notify.URL + `"}
`,
	}
}

// say sends a text message from user, with a reply token and a
// markAsReadToken the simulator issued, and returns both.
func (w *handoffWorld) say(t *testing.T, g *gateway, user, text string) (replyToken, readToken string) {
	t.Helper()
	replyToken, readToken = w.api.IssueReplyToken(""), w.api.IssueReadToken("")
	w.msgID++
	body := sim.TextEventRead("U0000000000000000000000000000b0t0", user, text, replyToken, readToken, w.msgID, time.Now())
	if code := g.post(t, testSecret, body); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	return replyToken, readToken
}

// calls returns the simulator's successful calls to a path.
func (w *handoffWorld) calls(path string) []sim.Call {
	var out []sim.Call
	for _, c := range w.api.Calls() {
		if c.Path == path && c.Status/100 == 2 {
			out = append(out, c)
		}
	}
	return out
}

// waitCall waits for a successful call to path whose body holds want.
func (w *handoffWorld) waitCall(t *testing.T, path, want string) sim.Call {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range w.calls(path) {
			if strings.Contains(string(c.Body), want) {
				return c
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the simulator never got %s with %s; calls: %d", path, want, len(w.api.Calls()))
	return sim.Call{}
}

// adminJSON calls the admin API with the admin token and decodes the
// answer into v (if not nil); it returns the status.
func adminJSON(t *testing.T, g *gateway, method, path, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, g.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type conversationJSON struct {
	ID, State, Agent, Reason string
	Waiting                  int
}

// TestHandoffEndToEnd runs the handoff through the real binary and the
// simulator: a user asks for a person; the rule hands the conversation
// off and says so; the bot is silent on the next messages (held for a
// human); the notification reaches its receiver; an agent, through the
// admin API, takes it over, marks it read (the simulator gets markAsRead
// with the latest message's token), shows typing, and replies (the
// simulator gets the reply; the ledger names the agent); a reply while
// the kill switch is on is held back and recorded; the agent hands it
// back and the bot answers again. After a restart with a short idle
// time, a conversation nobody answers returns to the bot by itself.
func TestHandoffEndToEnd(t *testing.T) {
	dir := t.TempDir()
	w := newHandoffWorld(t)
	g := startGateway(t, dir, w.config("1h"))
	const user = "U1111111111111111111111111111aaaa"
	conv := "user:" + user

	w.say(t, g, user, "hello")
	w.waitCall(t, "/v2/bot/message/reply", "echo: hello")
	tok, _ := w.say(t, g, user, "agent")
	if c := w.waitCall(t, "/v2/bot/message/reply", tok); !strings.Contains(string(c.Body), "A person will answer you here shortly.") {
		t.Fatalf("agent was answered with %s", c.Body)
	}
	waitIdle(t, g)
	sendsBefore := len(w.calls("/v2/bot/message/reply")) + len(w.calls("/v2/bot/message/push"))
	w.say(t, g, user, "are you there?")
	w.say(t, g, user, "STOP") // consent keywords still apply
	lastReply, lastRead := w.say(t, g, user, "my order is late")
	waitIdle(t, g)
	time.Sleep(200 * time.Millisecond)
	if n := len(w.calls("/v2/bot/message/reply")) + len(w.calls("/v2/bot/message/push")); n != sendsBefore {
		t.Fatalf("the bot answered a conversation a person owns: %d sends, want %d", n, sendsBefore)
	}

	var list struct{ Conversations []conversationJSON }
	if code := adminJSON(t, g, "GET", "/admin/conversations?state=human", "", &list); code != 200 {
		t.Fatalf("GET /admin/conversations = %d", code)
	}
	if len(list.Conversations) != 1 || list.Conversations[0].ID != conv || list.Conversations[0].Reason != "rule:ask-for-a-person" ||
		list.Conversations[0].Waiting != 3 || list.Conversations[0].Agent != "" {
		t.Fatalf("conversations waiting: %+v", list.Conversations)
	}

	// The notification: the pseudonym, the reason, the console, no text.
	w.waitNotified(t, conv, user, "my order", "are you there")

	base := "/admin/conversations/demo/" + conv
	if code := adminJSON(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"x"}]}`, nil); code != 200 {
		// A reply before the takeover makes it the replier's: allowed.
		t.Fatalf("reply while waiting for a person = %d", code)
	}
	if code := adminJSON(t, g, "POST", base+"/takeover", `{"agent":"alice","reason":"console"}`, nil); code != 200 {
		t.Fatalf("takeover = %d", code)
	}
	if code := adminJSON(t, g, "POST", base+"/read", `{"agent":"alice"}`, nil); code != 200 {
		t.Fatalf("read = %d", code)
	}
	w.waitCall(t, "/v2/bot/chat/markAsRead", lastRead)
	if code := adminJSON(t, g, "POST", base+"/typing", `{"agent":"alice"}`, nil); code != 200 {
		t.Fatalf("typing = %d", code)
	}
	w.waitCall(t, "/v2/bot/chat/loading/start", user)
	var res struct {
		Outcome, Via string
		RequestID    string `json:"request_id"`
		Record       uint64
	}
	if code := adminJSON(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"Hi, this is Alice. Let me check your order."}]}`, &res); code != 200 {
		t.Fatalf("reply = %d", code)
	}
	if res.Outcome != "sent" || res.Via != "push" || res.RequestID == "" || res.Record == 0 {
		// The first reply ("x") used the latest reply token.
		t.Fatalf("reply result: %+v", res)
	}
	w.waitCall(t, "/v2/bot/message/push", "Let me check your order.")
	if c := w.waitCall(t, "/v2/bot/message/reply", `"text":"x"`); !strings.Contains(string(c.Body), lastReply) {
		t.Fatalf("the first reply did not use the latest reply token: %s", c.Body)
	}
	// Bad input is refused, nothing sent.
	if code := adminJSON(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[]}`, nil); code != 400 {
		t.Fatalf("reply without messages = %d, want 400", code)
	}
	if code := adminJSON(t, g, "POST", "/admin/conversations/demo/user:U0000000000000000000000000000beef/takeover", `{"agent":"alice","allow_unseen":true}`, nil); code != 200 {
		t.Fatalf("takeover of a new conversation = %d", code) // allowed, with allow_unseen
	}
	if code := adminJSON(t, g, "POST", "/admin/conversations/nochannel/"+conv+"/takeover", `{"agent":"alice"}`, nil); code != 404 {
		t.Fatalf("takeover on an unknown channel = %d, want 404", code)
	}

	// The kill switch holds a person's reply back, recorded.
	admin(t, g, "/admin/kill-switch", `{"on": true, "reason": "handoff test"}`)
	pushes := len(w.calls("/v2/bot/message/push"))
	if code := adminJSON(t, g, "POST", base+"/reply", `{"agent":"alice","messages":[{"type":"text","text":"held back"}]}`, &res); code != 200 {
		t.Fatalf("reply under the kill switch = %d", code)
	}
	if res.Outcome != "suppressed" || len(w.calls("/v2/bot/message/push")) != pushes {
		t.Fatalf("reply under the kill switch: %+v, pushes %d -> %d", res, pushes, len(w.calls("/v2/bot/message/push")))
	}
	admin(t, g, "/admin/kill-switch", `{"on": false, "reason": "handoff test done"}`)

	if code := adminJSON(t, g, "POST", base+"/handback", `{"agent":"alice"}`, nil); code != 200 {
		t.Fatalf("handback = %d", code)
	}
	w.say(t, g, user, "thanks")
	w.waitCall(t, "/v2/bot/message/reply", "echo: thanks")

	var got struct {
		Conversation conversationJSON
		History      []struct{ From, Text, Outcome string }
	}
	if code := adminJSON(t, g, "GET", base, "", &got); code != 200 {
		t.Fatalf("GET %s = %d", base, code)
	}
	var hist []string
	for _, m := range got.History {
		hist = append(hist, m.From+"|"+m.Text+"|"+m.Outcome)
	}
	h := strings.Join(hist, "\n")
	for _, want := range []string{"user|are you there?|held_for_human", "user|my order is late|held_for_human",
		"agent:alice|Hi, this is Alice. Let me check your order.|sent", "agent:alice|held back|suppressed",
		"agent:alice|[marked read]|sent", "bot|echo: thanks|sent", "user|thanks|processed"} {
		if !strings.Contains(h, want) {
			t.Errorf("history lacks %q:\n%s", want, h)
		}
	}
	if got.Conversation.State != "bot" {
		t.Errorf("after the handback: %+v", got.Conversation)
	}

	// Idle return, after a restart with a short idle time.
	waitIdle(t, g)
	g.stop()
	g = startGateway(t, dir, w.config("2s"))
	const user2 = "U2222222222222222222222222222bbbb"
	tok, _ = w.say(t, g, user2, "人間")
	if c := w.waitCall(t, "/v2/bot/message/reply", tok); !strings.Contains(string(c.Body), "A person will answer you here shortly.") {
		t.Fatalf("人間 was answered with %s", c.Body)
	}
	deadline := time.Now().Add(20 * time.Second)
	var c2 struct{ Conversation conversationJSON }
	wasHuman := false
	for time.Now().Before(deadline) {
		adminJSON(t, g, "GET", "/admin/conversations/demo/user:"+user2, "", &c2)
		wasHuman = wasHuman || c2.Conversation.State == "human"
		if wasHuman && c2.Conversation.State == "bot" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c2.Conversation.State != "bot" || c2.Conversation.Reason != "idle" {
		t.Fatalf("not returned to the bot after its idle time: %+v", c2.Conversation)
	}
	w.say(t, g, user2, "still there?")
	w.waitCall(t, "/v2/bot/message/reply", "echo: still there?")
	waitIdle(t, g)
	g.stop()

	// The ledger: the outcomes held for a human, the agent's sends and
	// chat calls naming her, and each change of state naming who made it.
	var held, agentSent, agentHeld, agentRead, agentTyping, optOuts int
	var changes []string
	for _, r := range readLedger(t, dir) {
		if r.meta == nil {
			continue
		}
		_, b, err := record.Decode(r.leaf.Kind, storedPayload(t, r))
		if err != nil {
			continue
		}
		switch v := b.(type) {
		case *record.Outcome:
			if v.Outcome == "held_for_human" {
				held++
			}
		case *record.Outbound:
			switch {
			case v.Agent == "alice" && v.Endpoint == "markAsRead" && v.Outcome == "sent":
				agentRead++
			case v.Agent == "alice" && v.Endpoint == "loading" && v.Outcome == "sent":
				agentTyping++
			case v.Agent == "alice" && v.Outcome == "sent":
				agentSent++
			case v.Agent == "alice" && v.Outcome == "suppressed":
				agentHeld++
			}
		case *record.Admin:
			if v.Action == "consent" && v.Detail["user"] == user && v.Detail["opt_in"] == false {
				optOuts++
			}
			if v.Action == "handoff" && v.Detail["conversation"] == conv {
				changes = append(changes, v.Detail["by"].(string)+">"+v.Detail["state"].(string))
			}
			if v.Action == "handoff" && v.Detail["conversation"] == "user:"+user2 {
				changes = append(changes, "2:"+v.Detail["by"].(string)+">"+v.Detail["state"].(string))
			}
		}
	}
	if optOuts != 1 {
		t.Errorf("%d opt-outs recorded while a person owned the conversation, want 1", optOuts)
	}
	if held != 3 || agentSent != 2 || agentHeld != 1 || agentRead != 1 || agentTyping != 1 {
		t.Errorf("ledger: %d held for a human (want 3), alice's sends %d sent (want 2), %d held back (want 1), %d marked read (want 1), %d typing (want 1)",
			held, agentSent, agentHeld, agentRead, agentTyping)
	}
	// alice's reply made it hers; her takeover after it changed nothing
	// and recorded nothing.
	want := "rule:ask-for-a-person>human agent:alice>human agent:alice>bot 2:rule:ask-for-a-person>human 2:idle>bot"
	if got := strings.Join(changes, " "); got != want {
		t.Errorf("changes of state:\n got %s\nwant %s", got, want)
	}
}

// storedPayload frames a stored record's metadata and body again, for
// record.Decode.
func storedPayload(t *testing.T, r storedRecord) []byte {
	t.Helper()
	return mustPayload(t, r.meta, r.body)
}

// TestSimChatShowsHumanReplies types in `linegate sim chat` in a real
// terminal (tmux) while a person answers through the admin API: the
// handoff message, then silence, then the person's mark-as-read, typing
// and reply show in the chat as they come, like the bot's.
func TestSimChatShowsHumanReplies(t *testing.T) {
	dir := t.TempDir()
	apiAddr := freePort(t)
	g := startGateway(t, dir, gwConfig{extra: "line_api_base: http://" + apiAddr + `
rules:
  - name: ask-for-a-person
    when: {text: {exact: agent}}
    handoff: {message: [{type: text, text: "A person will answer you here shortly."}]}
  - name: echo
    when: {event: [message]}
    reply: [{type: text, text: "echo: {{.Text}}"}]
`})
	tm := newTmux(t, fmt.Sprintf("%s sim chat -url %s/webhook/demo -secret %s -api-listen %s",
		linegateBin, g.webhook, testSecret, apiAddr))
	tm.waitFor("you>")
	tm.send("agent", "Enter")
	tm.waitFor("bot> A person will answer you here shortly.")
	tm.send("is anyone there?", "Enter")
	tm.waitFor("(no reply within 5s)")
	base := "/admin/conversations/demo/user:U" + strings.Repeat("0", 31) + "1"
	for _, step := range []struct{ path, body string }{
		{"/takeover", `{"agent":"alice","reason":"console"}`},
		{"/read", `{"agent":"alice"}`},
		{"/typing", `{"agent":"alice"}`},
		{"/reply", `{"agent":"alice","messages":[{"type":"text","text":"Hello, this is Alice from the shop."},{"type":"sticker","packageId":"446","stickerId":"1989"}]}`},
		{"/handback", `{"agent":"alice"}`},
	} {
		if code := adminJSON(t, g, "POST", base+step.path, step.body, nil); code != 200 {
			t.Fatalf("POST %s = %d", base+step.path, code)
		}
	}
	tm.waitFor("(read)")
	tm.waitFor("(typing…)")
	tm.waitFor("bot> Hello, this is Alice from the shop.")
	tm.waitFor("bot> [sticker 446/1989]")
	tm.send("thanks", "Enter")
	tm.waitFor("bot> echo: thanks")
	if !strings.Contains(tm.screen(), "you> agent\nbot> A person will answer you here shortly.\nyou> ") {
		t.Errorf("the chat is not laid out line by line:\n%s", tm.screen())
	}
}

// TestHandoffConfigMistakes: the handoff section's mistakes name their
// key and line, and never a notification URL (Slack's hold a secret).
func TestHandoffConfigMistakes(t *testing.T) {
	const good = "log:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n    handoff:\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"short idle", good + "      idle: 10ms\n", `channels[0].handoff.idle: 10ms: want a duration of at least 1s`},
		{"console not a URL", good + "      console_url: console\n", `channels[0].handoff.console_url: "console": want an http(s) URL`},
		{"no kind", good + "      notify: [{name: a, url: https://hooks.example/x}]\n", `channels[0].handoff.notify[0].kind: "": want slack or json`},
		{"no name", good + "      notify: [{kind: json, url: https://hooks.example/x}]\n", `channels[0].handoff.notify[0].name: required`},
		{"two urls", good + "      notify: [{name: a, kind: json, url: https://hooks.example/x, url_env: X}]\n", `channels[0].handoff.notify[0].url: give exactly one of url and url_env`},
		{"twice", good + "      notify: [{name: a, kind: json, url_env: X}, {name: a, kind: slack, url_env: Y}]\n", `channels[0].handoff.notify[1].name: "a" is listed twice`},
		{"bad url", good + "      notify: [{name: a, kind: slack, url: \"ftp://secret-token@hooks\"}]\n", `channels[0].handoff.notify[0].url: not an http(s) URL`},
		{"misspelt key", good + "      idel: 1m\n", `channels[0].handoff.idel: unknown key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfg)
			out := stdout + stderr
			if code != 1 || !strings.Contains(out, tc.want) || strings.Contains(out, "secret-token") {
				t.Errorf("config check = %d, want 1 and %q:\n%s", code, tc.want, out)
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "good.yaml")
	if err := os.WriteFile(cfg, []byte(good+"      idle: 10m\n      notify: [{name: a, kind: slack, url: https://hooks.example/x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfg); code != 0 {
		t.Errorf("config check of a good config = %d:\n%s%s", code, stdout, stderr)
	}
}
