package main

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
)

// postSingle posts body to POST /webhook, signed with secret.
func postSingle(t *testing.T, base, secret string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/webhook", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Line-Signature", line.Sign([]byte(secret), body))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var destinationField = regexp.MustCompile(`"destination"\s*:\s*"[^"]*"`)

// TestSingleWebhookURL: with fanout.single_webhook_url, POST /webhook
// takes every channel's webhooks: each fixture body reaches the channel
// whose bot user id its destination names, verified with that channel's
// secret, recorded byte for byte under that channel; the other channel's
// secret is a bad signature (401, a rejection record); a destination of
// no channel, or none, is refused as an unknown channel (404), a body
// over the cap is 413. Without the option, /webhook is not served.
func TestSingleWebhookURL(t *testing.T) {
	const demoBot, secondBot = "U0123456789abcdef0123456789abcdef", "Ub7f3e1a9c2d4405f8e6a1b2c3d4e5f60" // the fixtures' destination
	const secondSecret = "second-channel-secret"
	fixtures := fixtureBodies(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{maxBody: 8192, extra: "fanout:\n  single_webhook_url: true\n",
		chanExtra: "    bot_user_id: " + demoBot + "\n  - id: second\n    secret: " + secondSecret + "\n    access_token: t2\n    bot_user_id: " + secondBot + "\n"})
	for name, body := range fixtures {
		if !bytes.Contains(body, []byte(secondBot)) {
			t.Fatalf("fixture %s does not name %s", name, secondBot)
		}
		if code := postSingle(t, g.webhook, secondSecret, body); code != 200 {
			t.Errorf("fixture %s to /webhook: %d, want 200", name, code)
		}
	}
	forDemo := destinationField.ReplaceAll(fixtures["follow"], []byte(`"destination":"`+demoBot+`"`))
	if code := postSingle(t, g.webhook, testSecret, forDemo); code != 200 {
		t.Errorf("a body for the demo channel: %d, want 200", code)
	}
	if code := postSingle(t, g.webhook, testSecret, fixtures["follow"]); code != 401 {
		t.Errorf("the second channel's body signed with the demo channel's secret: %d, want 401", code)
	}
	unknown := destinationField.ReplaceAll(fixtures["follow"], []byte(`"destination":"Uffffffffffffffffffffffffffffffff"`))
	if code := postSingle(t, g.webhook, secondSecret, unknown); code != 404 {
		t.Errorf("a destination of no channel: %d, want 404", code)
	}
	if code := postSingle(t, g.webhook, secondSecret, []byte(`{"events":[]}`)); code != 404 {
		t.Errorf("no destination: %d, want 404", code)
	}
	if code := postSingle(t, g.webhook, secondSecret, bytes.Repeat([]byte(" "), 9000)); code != 413 {
		t.Errorf("a body over the cap: %d, want 413", code)
	}
	if code := g.post(t, testSecret, forDemo); code != 200 {
		t.Errorf("/webhook/demo beside the single URL: %d, want 200", code)
	}
	g.stop()

	found := map[string]bool{}
	demo, rejections := 0, 0
	for _, r := range readLedger(t, dir) {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			if r.leaf.Channel == "demo" {
				demo++
				continue
			}
			for name, body := range fixtures {
				if bytes.Equal(r.body, body) && r.leaf.Channel == "second" && r.meta.Path == "/webhook" {
					found[name] = true
				}
			}
		case ledger.KindRejection:
			if r.leaf.Channel != "second" {
				t.Errorf("a rejection recorded under channel %q, want second", r.leaf.Channel)
			}
			rejections++
		}
	}
	for name := range fixtures {
		if !found[name] {
			t.Errorf("fixture %s is not recorded byte for byte under channel second", name)
		}
	}
	if demo != 2 || rejections != 1 {
		t.Errorf("%d webhooks of demo, %d rejections; want 2 and 1", demo, rejections)
	}

	g = startGateway(t, t.TempDir(), gwConfig{})
	if code := postSingle(t, g.webhook, testSecret, forDemo); code == 200 {
		t.Errorf("without single_webhook_url, /webhook answered 200")
	}
	g.stop()
}
