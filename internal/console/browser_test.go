package console

import (
	"net/http"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/console/consoletest"
)

// TestBrowserInbox drives the inbox in headless Chromium over the fake
// handoff engine: a wrong password is refused, the agent logs in, sees
// the conversation waiting (and not another channel's), opens it (marked
// read), takes it over, replies with text and quick replies, and hands it
// back. The real engine's end to end is in cmd/linegate.
func TestBrowserInbox(t *testing.T) {
	b := consoletest.New(t)
	w := newWorld(t, nil)
	if code := b.Login(t, w.srv.URL, "alice", "not her password"); code != http.StatusUnauthorized {
		t.Errorf("bad password: %d, want 401", code)
	}
	if e := b.Text(t, "#error"); !strings.Contains(e, "Wrong name or password") {
		t.Errorf("bad password: %q", e)
	}
	if code := b.Login(t, w.srv.URL, "alice", passwords["alice"]); code != 200 {
		t.Fatalf("login: %d", code)
	}
	if got := b.Text(t, "#who"); !strings.Contains(got, "alice") {
		t.Fatalf("logged in as %q", got)
	}
	if n := b.Text(t, "#waiting-count"); n != "1" {
		t.Errorf("waiting: %s, want 1", n)
	}
	if strings.Contains(b.Text(t, "main"), "U22222222222222222222222222222222") {
		t.Error("the inbox shows another channel's conversation")
	}
	if code := b.Click(t, "a.conv"); code != 200 {
		t.Fatalf("conversation: %d", code)
	}
	if h := b.Text(t, "#history"); !strings.Contains(h, "人間") || !strings.Contains(h, "loan contract") {
		t.Errorf("history: %q", h)
	}
	w.convs.mu.Lock()
	reads := len(w.convs.reads)
	w.convs.mu.Unlock()
	if reads != 1 {
		t.Errorf("opening the conversation marked it read %d times, want 1", reads)
	}
	if code := b.Click(t, "#takeover"); code != 200 {
		t.Fatalf("take over: %d", code)
	}
	if a := b.Text(t, "#agent"); a != "alice" {
		t.Errorf("after take over, agent %q", a)
	}
	b.Type(t, "#reply-text", "Hello, this is Alice. Which contract?")
	b.Type(t, "#quick-replies", "Home loan\nCar loan")
	if code := b.Click(t, "#send"); code != 200 {
		t.Fatalf("reply: %d", code)
	}
	if n := b.Text(t, "#notice"); n != notices["reply"] {
		t.Errorf("after reply: %q", n)
	}
	w.convs.mu.Lock()
	replies, typing := w.convs.replies, w.convs.typing
	w.convs.mu.Unlock()
	if len(replies) != 1 || !strings.Contains(string(replies[0][0]), `"Car loan"`) {
		t.Errorf("replies: %s", replies)
	}
	if typing < 1 {
		t.Error("typing in the reply box showed no loading animation")
	}
	if h := b.Text(t, "#history"); !strings.Contains(h, "agent:alice") {
		t.Errorf("history lacks the reply: %q", h)
	}
	if code := b.Click(t, "#handback"); code != 200 {
		t.Fatalf("hand back: %d", code)
	}
	if s := b.Text(t, "#state"); s != "bot" {
		t.Errorf("after hand back: state %q", s)
	}
	// Another channel's conversation, typed into the address bar: 403.
	if code := b.Open(t, w.srv.URL+"/console/inbox/other/user:U22222222222222222222222222222222"); code != http.StatusForbidden {
		t.Errorf("another channel's conversation: %d, want 403", code)
	}
	if strings.Contains(b.Text(t, "main"), "secret of the other channel") {
		t.Error("the 403 page shows the conversation")
	}
}
