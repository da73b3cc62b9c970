package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/line"
)

// logLine is one JSON line of a gateway's log.
type logLine map[string]any

func logLines(t *testing.T, g *gateway) []logLine {
	t.Helper()
	var out []logLine
	for l := range strings.Lines(g.Logs()) {
		var m logLine
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// failureLines returns the lines of a failure class on a channel.
func failureLines(t *testing.T, g *gateway, class, channel string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range logLines(t, g) {
		if l["class"] == class && l["channel"] == channel {
			out = append(out, l)
		}
	}
	return out
}

// waitFailureLine waits for a line of a failure class on a channel.
func waitFailureLine(t *testing.T, g *gateway, class, channel string) logLine {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ls := failureLines(t, g, class, channel); len(ls) > 0 {
			return ls[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("no log line of class %q and channel %q", class, channel)
	return nil
}

// postRaw posts body to a URL with headers and returns the status.
func postRaw(t *testing.T, c *http.Client, url string, hdr map[string]string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// textWebhook is a webhook body with one text message event from a user.
func textWebhook(id int, user, text string) []byte {
	return fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01LOG%021d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":%q},"replyToken":"r%d","message":{"id":"%d","type":"text","text":%q,"quoteToken":"q"}}]}`,
		time.Now().UnixMilli(), id, user, id, 700000+id, text)
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestFailuresLogged: every failure class makes a log line with its class
// and channel (bad and missing signatures, an unknown channel, a body over
// the cap, a send with no access token, the Messaging API unreachable); a
// flood of 1000 bad signatures makes a bounded number of lines whose
// counts add up to the flood; no line holds a secret, a token or the
// message text.
func TestFailuresLogged(t *testing.T) {
	const otherSecret = "notoken-channel-secret"
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{
		maxBody: 4096,
		// The demo channel's API is a closed port; the second channel has
		// no access token.
		extra:     "line_api_base: http://" + closedPort(t) + "\nrules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n",
		chanExtra: "  - id: notoken\n    secret: \"" + otherSecret + "\"\n",
	})
	text := fmt.Sprintf("private-message-text-%d", time.Now().UnixNano())
	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	demo, notoken := g.webhook+"/webhook/demo", g.webhook+"/webhook/notoken"

	sign := func(secret string, b []byte) map[string]string {
		return map[string]string{line.SignatureHeader: line.Sign([]byte(secret), b)}
	}
	if code := postRaw(t, httpClient, demo, sign("not-the-secret", body), body); code != 401 {
		t.Errorf("bad signature = %d", code)
	}
	if code := postRaw(t, httpClient, demo, nil, body); code != 401 {
		t.Errorf("missing signature = %d", code)
	}
	if code := postRaw(t, httpClient, g.webhook+"/webhook/nosuch", sign(testSecret, body), body); code != 404 {
		t.Errorf("unknown channel = %d", code)
	}
	big := bytes.Repeat([]byte(" "), 10000)
	if code := postRaw(t, httpClient, demo, sign(testSecret, big), big); code != 413 {
		t.Errorf("too large = %d", code)
	}
	b := textWebhook(1, "U1", text)
	if code := postRaw(t, httpClient, notoken, sign(otherSecret, b), b); code != 200 {
		t.Errorf("webhook to the channel without a token = %d", code)
	}
	b = textWebhook(2, "U2", text)
	if code := postRaw(t, httpClient, demo, sign(testSecret, b), b); code != 200 {
		t.Errorf("webhook to the channel whose API is down = %d", code)
	}

	for _, want := range []struct{ class, channel, level string }{
		{"bad_signature", "demo", "WARN"},
		{"missing_signature", "demo", "WARN"},
		{"too_large", "demo", "WARN"},
		{"no_access_token", "notoken", "ERROR"},
		{"api_unreachable", "demo", "ERROR"},
		{"event_failed", "notoken", "ERROR"},
		{"event_failed", "demo", "ERROR"},
	} {
		l := waitFailureLine(t, g, want.class, want.channel)
		if l != nil && l["level"] != want.level {
			t.Errorf("%s line at level %v, want %s: %v", want.class, l["level"], want.level, l)
		}
	}
	// An unknown channel id is attacker-chosen (or a URL set by mistake,
	// a secret in its path): it is logged by a hash, never as it is.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var found logLine
		for _, l := range logLines(t, g) {
			if l["class"] == "unknown_channel" {
				found = l
			}
		}
		if found != nil {
			if found["channel_sha256"] == nil || strings.Contains(fmt.Sprint(found), "nosuch") {
				t.Errorf("unknown_channel line = %v, want the id's hash and never the id", found)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Error("no log line of class unknown_channel")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l := waitFailureLine(t, g, "api_unreachable", "demo"); l != nil {
		if l["endpoint"] != "reply" || l["rule"] != "hello" || !strings.Contains(fmt.Sprint(l["err"]), "connection refused") {
			t.Errorf("api_unreachable line = %v", l)
		}
	}

	// A flood of bad signatures, from 20 addresses (within each
	// address's burst, so that it is fast).
	start := time.Now()
	var wg sync.WaitGroup
	for c := range 20 {
		client := fromAddr(fmt.Sprintf("127.0.2.%d", c+1))
		wg.Go(func() {
			for range 50 {
				if code := postRaw(t, client, demo, sign("not-the-secret", body), body); code != 401 {
					t.Errorf("flood request = %d", code)
				}
			}
		})
	}
	wg.Wait()
	g.stop() // writes the counts not logged yet
	elapsed := time.Since(start)
	lines := failureLines(t, g, "bad_signature", "demo")
	// A line tells of one failure and of those suppressed before it; a
	// summary line only of those.
	var told int64
	for _, l := range lines {
		n, _ := l["suppressed"].(float64)
		told += int64(n)
		if l["summary"] != true {
			told++
		}
	}
	if told != 1001 {
		t.Errorf("%d lines tell of %d bad signatures, want 1001", len(lines), told)
	}
	// One line per 10 s, one summary at the end.
	if max := 2 + int(elapsed/(10*time.Second)); len(lines) > max {
		t.Errorf("%d lines for 1001 bad signatures in %v, want at most %d", len(lines), elapsed, max)
	}
	t.Logf("1001 bad signatures in %v: %d lines", elapsed, len(lines))

	for _, l := range strings.Split(g.Logs(), "\n") {
		for _, secret := range []string{testSecret, otherSecret, "test-access-token", "test-admin-token", text} {
			if strings.Contains(l, secret) {
				t.Errorf("a log line holds %q: %s", secret, l)
			}
		}
	}
}

// TestAdminActionsLogged: each admin action is logged with what it changed
// and who asked, without the LINE user it concerns.
func TestAdminActionsLogged(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	const user = "U0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	for _, c := range []struct{ path, body string }{
		{"/admin/kill-switch", `{"on": true, "reason": "maintenance window"}`},
		{"/admin/dry-run", `{"channel": "demo", "on": true}`},
		{"/admin/consent", `{"channel": "demo", "user": "` + user + `", "opt_in": true, "source": "support ticket 42"}`},
	} {
		if code, b := adminDo(t, g, c.path, c.body); code != 200 {
			t.Fatalf("%s = %d %s", c.path, code, b)
		}
	}
	g.stop()
	got := map[string]logLine{}
	for _, l := range logLines(t, g) {
		if l["msg"] == "admin action" {
			got[fmt.Sprint(l["action"])] = l
		}
	}
	changed := func(action string) map[string]any {
		l := got[action]
		if l == nil {
			t.Errorf("no log line for admin action %s", action)
			return nil
		}
		if r, _ := l["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("%s: who asked = %v", action, l["remote"])
		}
		m, _ := l["changed"].(map[string]any)
		return m
	}
	if c := changed("kill_switch"); c != nil && (c["on"] != true || c["reason"] != "maintenance window") {
		t.Errorf("kill_switch changed = %v", c)
	}
	if c := changed("dry_run"); c != nil && (c["on"] != true || c["channel"] != "demo") {
		t.Errorf("dry_run changed = %v", c)
	}
	if c := changed("consent"); c != nil && (c["opt_in"] != true || c["channel"] != "demo" || c["source"] != "support ticket 42") {
		t.Errorf("consent changed = %v", c)
	}
	if strings.Contains(g.Logs(), user) {
		t.Errorf("the log names the LINE user")
	}
}
