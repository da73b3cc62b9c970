package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
)

// TestSimSendToGateway replays the module's webhook bodies and a synthetic
// conversation through `linegate sim send` into the real gateway.
func TestSimSendToGateway(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	// Every body twice: the second round is duplicates.
	fixtures := fixtureBodies(t)
	sends := 2 * len(fixtures)
	events, unknown := 0, 0
	for name, b := range fixtures {
		cb, err := line.ParseCallback(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, raw := range cb.Events {
			events++
			if line.DecodeEvent(raw).Unknown() {
				unknown++
			}
		}
	}
	if code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret, "-dir", corpus.Webhooks(t), "-count", strconv.Itoa(sends)); code != 0 {
		t.Fatalf("sim send fixtures = %d:\n%s", code, out)
	}
	code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret, "-count", "300", "-rate", "500", "-redeliveries", "0.1", "-json")
	if code != 0 || !strings.Contains(out, `"p99_ms"`) {
		t.Fatalf("sim send synthetic = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", "wrong", "-count", "3"); code != 1 || !strings.Contains(out, "3×401") {
		t.Errorf("sim send with a wrong secret = %d:\n%s", code, out)
	}
	waitIdle(t, g)
	g.stop()
	kinds := map[ledger.Kind]int{}
	outcomes := map[string]int{}
	for _, r := range readLedger(t, dir) {
		kinds[r.leaf.Kind]++
		if r.leaf.Kind == ledger.KindEvent {
			var o struct{ Outcome string }
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatalf("event record: %v: %s", err, r.body)
			}
			outcomes[o.Outcome]++
		}
	}
	if kinds[ledger.KindWebhook] != sends+300 || kinds[ledger.KindRejection] != 3 {
		t.Errorf("records by kind: %v", kinds)
	}
	// The second round of the bodies is duplicates; the
	// synthetic redeliveries are duplicates too. An unknown event is
	// unknown once.
	if outcomes["processed"] == 0 || outcomes["duplicate"] < events || outcomes["unknown"] != unknown {
		t.Errorf("outcomes %v; %d events, %d unknown, in each round of the bodies", outcomes, events, unknown)
	}
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tmux drives a terminal session.
type tmux struct {
	t       *testing.T
	session string
}

func newTmux(t *testing.T, command string) *tmux {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("LINEGATE_REQUIRE_TMUX") == "1" {
			t.Fatal("tmux is not installed, and LINEGATE_REQUIRE_TMUX=1 (CI) requires it")
		}
		t.Skip("tmux is not installed")
	}
	tm := &tmux{t: t, session: fmt.Sprintf("linegate-test-%d", time.Now().UnixNano())}
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", tm.session, "-x", "200", "-y", "50", command).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", tm.session).Run() })
	return tm
}

func (tm *tmux) send(keys ...string) {
	args := append([]string{"send-keys", "-t", tm.session}, keys...)
	if out, err := exec.Command("tmux", args...).CombinedOutput(); err != nil {
		tm.t.Fatalf("tmux send-keys: %v: %s", err, out)
	}
}

func (tm *tmux) screen() string {
	out, err := exec.Command("tmux", "capture-pane", "-p", "-t", tm.session).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return string(out)
}

// waitFor waits until the screen shows s.
func (tm *tmux) waitFor(s string) {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(tm.screen(), s) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tm.t.Fatalf("the terminal never showed %q:\n%s", s, tm.screen())
}

// TestSimChatInTerminal types in `linegate sim chat` in a real terminal
// (tmux). Against the gateway, a typed line reaches it as a signed webhook,
// is recorded, and the reply the gateway sends to the simulator is
// printed. Against a bot built on LINE's official SDK, which verifies the
// webhook and answers through the simulator's API, too.
func TestSimChatInTerminal(t *testing.T) {
	t.Run("gateway", func(t *testing.T) {
		dir := t.TempDir()
		apiAddr := freePort(t)
		g := startGateway(t, dir, gwConfig{extra: "line_api_base: http://" + apiAddr + `
rules:
  - name: echo
    when: {event: [message], text: {prefix: hello}}
    reply: [{type: text, text: "Hi! You said: {{.Text}}"}, {type: sticker, packageId: "446", stickerId: "1989"}]
`})
		tm := newTmux(t, fmt.Sprintf("%s sim chat -url %s/webhook/demo -secret %s -api-listen %s",
			linegateBin, g.webhook, testSecret, apiAddr))
		tm.waitFor("you>")
		tm.send("hello from the terminal", "Enter")
		tm.waitFor("bot> Hi! You said: hello from the terminal")
		tm.waitFor("bot> [sticker 446/1989]")
		tm.send("nothing matches this", "Enter")
		tm.waitFor("(no reply within 5s)")
		waitIdle(t, g)
		g.stop()
		found := false
		for _, r := range readLedger(t, dir) {
			if strings.Contains(string(r.body), `"text":"hello from the terminal"`) && r.meta.Verifier == "secret" {
				found = true
			}
		}
		if !found {
			t.Error("the typed line is not in the gateway's ledger as a signed webhook")
		}
	})
	t.Run("sdk bot", func(t *testing.T) {
		apiAddr := freePort(t)
		const secret = "bot-secret"
		bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cb, err := webhook.ParseRequest(secret, r)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			client, err := messaging_api.NewMessagingApiAPI("any-token", messaging_api.WithEndpoint("http://"+apiAddr))
			if err != nil {
				t.Errorf("SDK client: %v", err)
				return
			}
			for _, e := range cb.Events {
				if m, ok := e.(webhook.MessageEvent); ok {
					if tm, ok := m.Message.(webhook.TextMessageContent); ok {
						if _, err := client.ReplyMessage(&messaging_api.ReplyMessageRequest{ReplyToken: m.ReplyToken,
							Messages: []messaging_api.MessageInterface{
								messaging_api.TextMessage{Text: "echo: " + tm.Text},
								messaging_api.StickerMessage{PackageId: "446", StickerId: "1988"},
							}}); err != nil {
							t.Errorf("SDK reply: %v", err)
						}
					}
				}
			}
		}))
		defer bot.Close()
		tm := newTmux(t, fmt.Sprintf("%s sim chat -url %s/callback -secret %s -api-listen %s", linegateBin, bot.URL, secret, apiAddr))
		tm.waitFor("you>")
		tm.send("track ｔｒａｃｋ", "Enter")
		tm.waitFor("bot> echo: track ｔｒａｃｋ")
		tm.waitFor("bot> [sticker 446/1988]")
	})
}
