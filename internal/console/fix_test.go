package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// An agent may not reply, type, hand back or resolve in a conversation
// another person holds; an admin may hand it back.
func TestConversationOfAnother(t *testing.T) {
	w := newWorld(t, nil)
	d := w.client(t)
	d.mustLogin("dave") // admin
	conv := "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"
	if code, _, _ := d.post(conv+"/takeover", url.Values{"csrf": {d.csrf(conv)}}); code != http.StatusSeeOther {
		t.Fatalf("dave's takeover: %d", code)
	}
	a := w.client(t)
	a.mustLogin("alice") // agent of demo
	tok := a.csrf(conv)
	for _, act := range []string{"reply", "typing", "handback", "resolve"} {
		code, body, _ := a.post(conv+"/"+act, url.Values{"csrf": {tok}, "text": {"not mine"}})
		if code != http.StatusForbidden || !strings.Contains(body, "Another person holds") {
			t.Errorf("alice %s in dave's conversation: %d, want 403", act, code)
		}
	}
	if len(w.convs.replies) != 0 || w.convs.typing != 0 {
		t.Errorf("sent %d replies, %d typings", len(w.convs.replies), w.convs.typing)
	}
	if cv, _ := w.convs.Get(nil, "demo", "user:U0123456789abcdef0123456789abcdef"); cv.State != StateHuman || cv.Agent != "dave" {
		t.Errorf("after alice's refused actions: %+v", cv)
	}
	// The admin hands back a conversation alice holds.
	if code, _, _ := a.post(conv+"/takeover", url.Values{"csrf": {tok}}); code != http.StatusSeeOther {
		t.Fatalf("alice's takeover: %d", code)
	}
	if code, _, _ := d.post(conv+"/handback", url.Values{"csrf": {d.csrf(conv)}}); code != http.StatusSeeOther {
		t.Errorf("the admin hands back alice's conversation: %d", code)
	}
}

// Typing starts the loading animation at most once per 20 s per
// conversation; later posts are answered 204 with no call.
func TestTypingLimit(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	c.mustLogin("alice")
	conv := "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"
	tok := c.csrf(conv)
	if code, _, _ := c.post(conv+"/takeover", url.Values{"csrf": {tok}}); code != http.StatusSeeOther {
		t.Fatal(code)
	}
	for i := range 20 {
		if code, _, _ := c.post(conv+"/typing", url.Values{"csrf": {tok}}); code != http.StatusNoContent {
			t.Fatalf("typing %d: %d", i, code)
		}
	}
	if w.convs.typing != 1 {
		t.Errorf("20 typings made %d loading calls, want 1", w.convs.typing)
	}
	w.clock.add(20 * time.Second)
	c.post(conv+"/typing", url.Values{"csrf": {tok}})
	if w.convs.typing != 2 {
		t.Errorf("after 20 s: %d loading calls, want 2", w.convs.typing)
	}
}

// A reply LINE refused is recorded as failed: the console says so, 502,
// with LINE's status.
func TestReplyLINEFailed(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	c.mustLogin("alice")
	conv := "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"
	tok := c.csrf(conv)
	c.post(conv+"/takeover", url.Values{"csrf": {tok}})
	w.convs.lineErr = fmt.Errorf("%w (record 21): LINE answered 400: The request body has 1 error(s)", ErrLINE)
	code, body, _ := c.post(conv+"/reply", url.Values{"csrf": {tok}, "text": {"hello"}})
	if code != http.StatusBadGateway || !strings.Contains(body, "LINE answered 400") || !strings.Contains(body, "recorded as failed") ||
		strings.Contains(body, "nothing was done") {
		t.Errorf("a reply LINE refused: %d\n%s", code, body)
	}
}
