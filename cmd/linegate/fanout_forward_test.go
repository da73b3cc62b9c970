package main

import (
	"fmt"
	"net/http/httptest"
	"testing"
)

// TestFanoutForwardNoReplyToken: on a channel whose reply token a
// destination owns, with rules_when_owned: push, a rule's forward gets
// each event without its replyToken; the owner alone gets the token.
// A forward target holding the token could spend it before the owner.
func TestFanoutForwardNoReplyToken(t *testing.T) {
	dir := t.TempDir()
	apiAddr := freePort(t)
	const ownerSecret, fwdSecret = "owner-secret-f3", "forward-secret-f3"
	var owner, fwd sink
	ownerSrv := httptest.NewServer(crmHandler(ownerSecret, &owner))
	defer ownerSrv.Close()
	fwdSrv := httptest.NewServer(crmHandler(fwdSecret, &fwd))
	defer fwdSrv.Close()

	g := startGateway(t, dir, gwConfig{
		extra: fmt.Sprintf(`line_api_base: http://%s
fanout:
  rules_when_owned: push
rules:
  - name: to-the-bot
    when: {source: [user]}
    forward: {url: "%s/callback", secret: %s, allow_http: true}
`, apiAddr, fwdSrv.URL, fwdSecret),
		chanExtra: fmt.Sprintf(`    destinations:
      - name: owner
        url: %s/callback
        allow_http: true
        secret: %s
        role: reply_owner
`, ownerSrv.URL, ownerSecret),
	})
	api := startSimAPI(t, apiAddr, g.cfgPath)
	const n = 6
	if code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret, "-count", fmt.Sprint(n),
		"-users", "3", "-concurrency", "2", "-api", api); code != 0 {
		t.Fatalf("sim send = %d:\n%s", code, out)
	}
	defer func() { t.Logf("owner got %d events, the forward target %d", owner.count(false), fwd.count(false)) }()
	waitUntil(t, "the owner and the forward target to get every event", func() bool {
		return owner.count(false) >= n && fwd.count(false) >= n
	})
	g.stop()
	for _, s := range []*sink{&owner, &fwd} {
		if len(s.errs) > 0 {
			t.Errorf("a receiver saw: %v", s.errs)
		}
	}
	ownerTokens, fwdTokens := 0, 0
	for _, e := range owner.snapshot() {
		if e.Token {
			ownerTokens++
		}
	}
	for _, e := range fwd.snapshot() {
		if e.Token {
			fwdTokens++
		}
	}
	if ownerTokens == 0 || fwdTokens != 0 {
		t.Errorf("the owner got %d reply tokens, the forward target %d: want some and 0", ownerTokens, fwdTokens)
	}
}
