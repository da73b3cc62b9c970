package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// TestConsoleHolderOnly runs the console on the real handoff engine: an
// agent may not reply, type, hand back or resolve in a conversation an
// admin holds (403: nothing reaches LINE, nothing is recorded), and the
// holder's typing starts the loading animation once per 20 s.
func TestConsoleHolderOnly(t *testing.T) {
	dir := t.TempDir()
	hw := newHandoffWorld(t)
	cfg := hw.config("1h")
	cfg.extra += consoleSection(t)
	g := startGateway(t, dir, cfg)
	const user = "U2222222222222222222222222222dddd"
	conv := "/console/inbox/demo/user:" + user
	hw.say(t, g, user, "人間")
	waitIdle(t, g)

	mei := newConsoleClient(t, g.admin)
	if r := mei.login("dave", consolePasswords["dave"]); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("dave's login: %d", r.StatusCode)
	}
	_, _, tok := mei.page(conv)
	if r := mei.post(conv+"/takeover", url.Values{"csrf": {tok}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("dave's takeover: %d", r.StatusCode)
	}
	amara := newConsoleClient(t, g.admin)
	if r := amara.login("alice", consolePasswords["alice"]); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice's login: %d", r.StatusCode)
	}
	code, body, atok := amara.page(conv)
	if code != 200 || strings.Contains(body, `id="send"`) {
		t.Fatalf("alice's page of dave's conversation: %d (a reply form shown?)", code)
	}
	before := len(hw.api.Calls())
	for _, act := range []string{"reply", "typing", "handback", "resolve"} {
		if r := amara.post(conv+"/"+act, url.Values{"csrf": {atok}, "text": {"not mine"}}); r.StatusCode != http.StatusForbidden {
			t.Errorf("alice %s in dave's conversation: %d, want 403", act, r.StatusCode)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(hw.api.Calls()) - before; n != 0 {
		t.Errorf("alice's refused actions made %d LINE calls", n)
	}
	// dave types 5 times: one loading call.
	for range 5 {
		if r := mei.post(conv+"/typing", url.Values{"csrf": {tok}}); r.StatusCode != http.StatusNoContent {
			t.Fatalf("dave's typing: %d", r.StatusCode)
		}
	}
	hw.waitCall(t, "/v2/bot/chat/loading/start", user)
	time.Sleep(200 * time.Millisecond)
	if n := len(hw.calls("/v2/bot/chat/loading/start")); n != 1 {
		t.Errorf("5 typings made %d loading calls, want 1", n)
	}
	// The admin API enforces the same (the engine does): 403 for another
	// agent, 429 for typing again within 20 s.
	api := "/admin/conversations/demo/user:" + user
	if code := adminJSON(t, g, "POST", api+"/reply", `{"agent":"alice","role":"agent","messages":[{"type":"text","text":"x"}]}`, nil); code != http.StatusForbidden {
		t.Errorf("the admin API: alice's reply in dave's conversation = %d, want 403", code)
	}
	if code := adminJSON(t, g, "POST", api+"/handback", `{"agent":"alice","role":"agent"}`, nil); code != http.StatusForbidden {
		t.Errorf("the admin API: alice's hand back of dave's conversation = %d, want 403", code)
	}
	if code := adminJSON(t, g, "POST", api+"/typing", `{"agent":"dave"}`, nil); code != http.StatusTooManyRequests {
		t.Errorf("the admin API: typing again within 20 s = %d, want 429", code)
	}
	// alice takes it over, and the admin hands it back.
	if r := amara.post(conv+"/takeover", url.Values{"csrf": {atok}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice's takeover: %d", r.StatusCode)
	}
	if r := mei.post(conv+"/handback", url.Values{"csrf": {tok}}); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the admin hands back alice's conversation: %d", r.StatusCode)
	}
	g.stop()
	// The ledger: nothing of alice's but her takeover; one loading call.
	var aliceChanges, loading int
	for _, r := range readLedger(t, dir) {
		switch r.leaf.Kind {
		case ledger.KindOutbound:
			var o record.Outbound
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatal(err)
			}
			if o.Agent == "alice" {
				t.Errorf("an outbound record of alice: %s", o.Endpoint)
			}
			if o.Endpoint == "loading" {
				loading++
			}
		case ledger.KindAdmin:
			var a record.Admin
			if err := json.Unmarshal(r.body, &a); err != nil {
				t.Fatal(err)
			}
			if a.Action == "handoff" && a.Detail["by"] == "agent:alice" {
				aliceChanges++
			}
		}
	}
	if aliceChanges != 1 || loading != 1 {
		t.Errorf("records: %d changes by alice (want 1, her takeover), %d loading calls (want 1)", aliceChanges, loading)
	}
}
