package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/proxy"
	"github.com/linegate/linegate/internal/record"
)

// proxyAddr returns the proxy's URL from the gateway's log.
func (g *gateway) proxyAddr(t *testing.T) string {
	t.Helper()
	for _, l := range strings.Split(g.Logs(), "\n") {
		var m struct{ Msg, Addr string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Msg == "proxy listening" {
			return "http://" + m.Addr
		}
	}
	t.Fatalf("no proxy in the gateway's log:\n%s", g.Logs())
	return ""
}

// toolRecord is the record of a tool's call through the proxy, with the
// subjects whose keys sealed it.
type toolRecord struct {
	*record.Outbound
	subjects []string
}

// toolRecords returns the records of the tools' calls in the ledger of a
// test gateway's data directory, in their order.
func toolRecords(t *testing.T, dir string) []toolRecord {
	t.Helper()
	var out []toolRecord
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindOutbound {
			continue
		}
		var o record.Outbound
		if err := json.Unmarshal(r.body, &o); err != nil {
			t.Fatal(err)
		}
		if o.Tool != "" {
			out = append(out, toolRecord{&o, r.subjects})
		}
	}
	return out
}

// nodeCall is one line of client.js's output.
type nodeCall struct {
	Call      string `json:"call"`
	Status    int    `json:"status"`
	RequestID string `json:"request_id"`
	Held      string `json:"held"`
}

func parseNodeCalls(t *testing.T, out string) map[string]nodeCall {
	t.Helper()
	calls := map[string]nodeCall{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var c nodeCall
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("client.js: %q: %v", l, err)
		}
		calls[c.Call] = c
	}
	return calls
}

// TestProxySDKs: LINE's Go and Node.js SDKs, unchanged, push, reply and
// multicast through the proxy of a running gateway to the simulator. Each
// send is in the ledger with the simulator's x-line-request-id; with the
// kill switch on they are held back and recorded; an export of the user
// holds the whole conversation: the webhooks, linegate's own reply and
// the tools' sends.
func TestProxySDKs(t *testing.T) {
	needNode(t)
	dir := t.TempDir()
	w := newReplyWorld(t)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(`consent:
  opt_in_keywords: [JOIN]
rules:
  - name: hello
    when: {event: [message], text: {exact: hello}}
    reply: [{type: text, text: "Hi from linegate"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.token"), []byte("node-proxy-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gwConfig{extra: fmt.Sprintf(`line_api_base: %s
rules_files: [%s]
proxy:
  listen: 127.0.0.1:0
  reply_owners: {demo: bot}
  tools:
    - {name: gobot, token: go-proxy-token, channels: [demo], destination: bot}
    - {name: nodecrm, token_file: node.token, channels: [demo], destination: bot}
`, w.apiURL, rulesFile)}
	g := startGateway(t, dir, cfg)
	proxyURL := g.proxyAddr(t)

	w.send(t, g, "U1", "message", "JOIN") // U1 opts in to promotional messages; U2 never does
	if m := w.replyTo(t, w.send(t, g, "U1", "message", "hello")); m[0]["text"] != "Hi from linegate" {
		t.Fatalf("linegate's reply: %v", m)
	}

	// LINE's Go SDK.
	goTok := w.send(t, g, "U1", "message", "a question for the bot")
	waitIdle(t, g) // the pipeline has seen the event and its reply token
	bot, err := messaging_api.NewMessagingApiAPI("go-proxy-token", messaging_api.WithEndpoint(proxyURL))
	if err != nil {
		t.Fatal(err)
	}
	text := func(s string) []messaging_api.MessageInterface {
		return []messaging_api.MessageInterface{messaging_api.TextMessage{Text: s}}
	}
	goIDs := map[string]string{}
	resp, _, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: goTok, Messages: text("go reply")})
	if err != nil {
		t.Fatalf("Go SDK reply: %v", err)
	}
	goIDs["reply"] = resp.Header.Get("X-Line-Request-Id")
	if resp, _, err = bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: "U1", Messages: text("go push")}, ""); err != nil {
		t.Fatalf("Go SDK push: %v", err)
	}
	goIDs["push"] = resp.Header.Get("X-Line-Request-Id")
	if resp, _, err = bot.MulticastWithHttpInfo(&messaging_api.MulticastRequest{To: []string{"U1", "U2"}, Messages: text("go news")}, ""); err != nil {
		t.Fatalf("Go SDK multicast: %v", err)
	}
	goIDs["multicast"] = resp.Header.Get("X-Line-Request-Id")

	// LINE's Node.js SDK.
	nodeTok := w.send(t, g, "U1", "message", "a question for node")
	waitIdle(t, g)
	env := []string{"PROXY_URL=" + proxyURL, "PROXY_TOKEN=node-proxy-token", "TO=U1"}
	nodeCalls := parseNodeCalls(t, runNode(t, "client.js", append(env, "REPLY_TOKEN="+nodeTok, "MULTICAST=U1,U2"), nil))
	for _, c := range []string{"push", "reply", "multicast"} {
		if nc := nodeCalls[c]; nc.Status != 200 || nc.RequestID == "" {
			t.Errorf("Node.js SDK %s: %+v", c, nc)
		}
	}
	pushes := w.apiCalls("/v2/bot/message/push")

	// The kill switch holds both SDKs' sends back.
	admin(t, g, "/admin/kill-switch", `{"on": true, "reason": "proxy test"}`)
	resp, _, err = bot.PushMessageWithHttpInfo(&messaging_api.PushMessageRequest{To: "U1", Messages: text("held")}, "")
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(proxy.HeaderHeld) != "kill_switch" {
		t.Errorf("Go SDK push under the kill switch: %v", err)
	}
	if nc := parseNodeCalls(t, runNode(t, "client.js", env, nil))["push"]; nc.Status != 503 || nc.Held != "kill_switch" {
		t.Errorf("Node.js SDK push under the kill switch: %+v", nc)
	}
	if n := w.apiCalls("/v2/bot/message/push"); n != pushes {
		t.Errorf("pushes reached LINE under the kill switch: %d, were %d", n, pushes)
	}
	g.stop()

	// The ledger: each send with the simulator's request id.
	simIDs := map[string]string{} // request id -> path
	for _, c := range w.api.Calls() {
		if c.Status == 200 {
			simIDs[c.RequestID] = c.Path
		}
	}
	type sent struct {
		outcome, endpoint, id string
		subjects              []string
	}
	byTool := map[string][]sent{}
	for _, r := range toolRecords(t, dir) {
		o := r.Outbound
		s := sent{outcome: o.Outcome, endpoint: o.Endpoint, subjects: r.subjects}
		if ids := o.RequestIDs(); len(ids) > 0 {
			s.id = ids[len(ids)-1]
		}
		byTool[o.Tool] = append(byTool[o.Tool], s)
	}
	want := func(tool string, ids map[string]string) {
		t.Helper()
		got := byTool[tool]
		if len(got) != 4 {
			t.Fatalf("%s: %d records, want 3 sends and 1 held back: %+v", tool, len(got), got)
		}
		for i, ep := range []string{"reply", "push", "multicast"} {
			if tool == "nodecrm" {
				ep = []string{"push", "reply", "multicast"}[i]
			}
			s := got[i]
			if s.outcome != "sent" || s.endpoint != "/v2/bot/message/"+ep || s.id == "" || s.id != ids[ep] || simIDs[s.id] != s.endpoint {
				t.Errorf("%s %s: %+v, want sent with the simulator's request id %q", tool, ep, s, ids[ep])
			}
			if !slices.Contains(s.subjects, "user:U1") {
				t.Errorf("%s %s: subjects %v, want user:U1", tool, ep, s.subjects)
			}
			if ep == "multicast" && !slices.Contains(s.subjects, "user:U2") {
				t.Errorf("%s multicast: subjects %v, want every recipient", tool, s.subjects)
			}
		}
		if s := got[3]; s.outcome != "suppressed" || s.id != "" {
			t.Errorf("%s under the kill switch: %+v", tool, s)
		}
	}
	want("gobot", goIDs)
	nodeIDs := map[string]string{}
	for c, nc := range nodeCalls {
		nodeIDs[c] = nc.RequestID
	}
	want("nodecrm", nodeIDs)
	// U2 had not opted in: both multicasts went to U1 alone.
	for _, c := range w.api.Calls() {
		if c.Path == "/v2/bot/message/multicast" && strings.Contains(string(c.Body), "U2") {
			t.Errorf("a multicast reached U2, who never opted in: %s", c.Body)
		}
	}

	// The user's export holds the whole conversation.
	out := filepath.Join(t.TempDir(), "bundle")
	if code, o := runCLI(t, "export", "-config", g.cfgPath, "-user", "U1", "-out", out); code != 0 {
		t.Fatalf("export = %d:\n%s", code, o)
	}
	recs, err := filepath.Glob(filepath.Join(out, "records", "*"))
	if err != nil {
		t.Fatal(err)
	}
	webhooks, linegateReplies, toolSends := 0, 0, map[string]int{}
	for _, rd := range recs {
		b, err := os.ReadFile(filepath.Join(rd, "record.json"))
		if err != nil {
			t.Fatal(err)
		}
		var sum struct{ Kind string }
		if err := json.Unmarshal(b, &sum); err != nil {
			t.Fatal(err)
		}
		body, err := os.ReadFile(filepath.Join(rd, "body"))
		if err != nil {
			t.Fatal(err)
		}
		switch sum.Kind {
		case "webhook":
			webhooks++
		case "outbound":
			var o record.Outbound
			if err := json.Unmarshal(body, &o); err != nil {
				t.Fatalf("%s: %v", rd, err)
			}
			if o.Tool != "" {
				toolSends[o.Tool]++
			} else if o.Rule == "hello" && o.Outcome == "sent" {
				linegateReplies++
			}
		}
	}
	if webhooks != 4 || linegateReplies != 1 || toolSends["gobot"] != 4 || toolSends["nodecrm"] != 4 {
		t.Errorf("the export of U1: %d webhooks (want 4), %d replies of linegate (want 1), tools' records %v (want 4 each)",
			webhooks, linegateReplies, toolSends)
	}
	if code, o := runCLI(t, "verify-bundle", "-vkey", filepath.Join(dir, "data", "log.vkey"), out); code != 0 {
		t.Errorf("verify-bundle = %d:\n%s", code, o)
	}
}

// TestProxyConfig: the proxy section's mistakes name their key; a good
// one parses with its defaults.
func TestProxyConfig(t *testing.T) {
	const head = "log: {origin: example.com/t}\nchannels: [{id: demo, secret: s}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"good", "proxy:\n  listen: 127.0.0.1:8090\n  reply_owners: {demo: bot}\n  tools:\n    - {name: crm, token: t, channels: [demo], endpoints: [\"GET /v2/bot/profile/*\"], push_class: promotional}\n", ""},
		{"no listen", "proxy:\n  tools: [{name: crm, token: t, channels: [demo]}]\n", "proxy.listen"},
		{"no tools", "proxy: {listen: 127.0.0.1:8090}\n", "proxy.tools: required"},
		{"misspelt key", "proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, tokn: t, channels: [demo]}]\n", "did you mean token?"},
		{"unknown channel", "proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, token: t, channels: [shop]}]\n", `proxy.tools[0].channels: "shop": no channel has this id`},
		{"reply owner of no channel", "proxy:\n  listen: 127.0.0.1:8090\n  reply_owners: {shop: bot}\n  tools: [{name: crm, token: t, channels: [demo]}]\n", "proxy.reply_owners.shop"},
		{"two names", "proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, token: t, channels: [demo]}, {name: crm, token: u, channels: [demo]}]\n", "proxy.tools[1].name"},
		{"bad endpoint", "proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, token: t, channels: [demo], endpoints: [\"/v2/bot/message/push\"]}]\n", "proxy.tools[0].endpoints"},
		{"bad class", "proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, token: t, channels: [demo], push_class: marketing}]\n", "proxy.tools[0].push_class"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig("p.yaml", "", []byte(head+tc.yaml))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				tools, err := c.proxyTools(func(string) string { return "" })
				if err != nil || len(tools) != 1 || !tools[0].PromotionalPush || string(tools[0].Token) != "t" {
					t.Errorf("tools: %+v, %v", tools, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
	// A token from a variable that is not set names the key, not a value.
	c, err := parseConfig("p.yaml", "", []byte(head+"proxy:\n  listen: 127.0.0.1:8090\n  tools: [{name: crm, token_env: LINEGATE_TEST_UNSET, channels: [demo]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.proxyTools(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "proxy.tools[0].token_env") {
		t.Errorf("unset token variable: %v", err)
	}
}

// TestProxyExample: examples/proxy.yaml is a config that serve takes.
func TestProxyExample(t *testing.T) {
	c, err := loadConfig(filepath.Join("..", "..", "examples", "proxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tools, err := c.proxyTools(func(string) string { return "" })
	if err != nil || len(tools) != 2 || c.Proxy.ReplyOwners["demo"] != "helpdesk" {
		t.Errorf("tools %+v, %v", tools, err)
	}
}

// TestProxyDocConfig: the proxy section that docs/PROXY.md shows is one
// that the config parser takes, with its channels.
func TestProxyDocConfig(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "PROXY.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	section, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.HasPrefix(section, "proxy:") {
		t.Fatal("no proxy section in a yaml block of docs/PROXY.md")
	}
	head := "log: {origin: example.com/t}\nchannels: [{id: shop, secret: s}, {id: shop-tw, secret: s}]\n"
	c, err := parseConfig("PROXY.md", "", []byte(head+section))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Proxy.Tools) != 3 || c.Proxy.ReplyOwners["shop"] != "helpdesk" {
		t.Errorf("proxy section: %+v", c.Proxy)
	}
}
