package console

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/linegate/linegate/internal/evidence"
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

// loginFrom logs in with a wrong password under a fresh name, with an
// X-Forwarded-For header, and returns the status.
func (c *client) loginFrom(name, xff string) int {
	c.t.Helper()
	tok := c.csrf("/console/login")
	code, _, _ := c.post("/console/login", url.Values{"csrf": {tok}, "name": {name}, "password": {"wrong"}}, "X-Forwarded-For", xff)
	return code
}

// Without trusted proxies, X-Forwarded-For is never read: a changing
// header does not escape the address limit.
func TestForwardedUntrusted(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	for i := range 5 {
		if code := c.loginFrom(fmt.Sprintf("x%d", i), fmt.Sprintf("203.0.113.%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	if code := c.loginFrom("x9", "203.0.113.99"); code != http.StatusTooManyRequests {
		t.Errorf("a sixth failure with another X-Forwarded-For: %d, want 429", code)
	}
	for _, a := range w.led.actions("console_login_failed") {
		if a.Detail["remote"] == "203.0.113.1" || a.Detail["proxy"] != nil {
			t.Errorf("an untrusted header reached the record: %v", a.Detail)
		}
	}
}

// Behind a trusted proxy, each client has its own limit, and the records
// name the client (the right-most address not itself a proxy).
func TestForwardedTrusted(t *testing.T) {
	w := newWorld(t, func(o *Options) {
		var err error
		if o.TrustedProxies, err = ParseTrustedProxies([]string{"127.0.0.1", "10.0.0.0/8"}); err != nil {
			t.Fatal(err)
		}
	})
	c := w.client(t)
	for i := range 5 {
		// A forged left-most entry is ignored; 10.1.2.3 is a proxy.
		if code := c.loginFrom(fmt.Sprintf("x%d", i), "198.51.100.1, 203.0.113.7, 10.1.2.3"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	if code := c.loginFrom("y", "203.0.113.7"); code != http.StatusTooManyRequests {
		t.Errorf("203.0.113.7 after 5 failures: %d, want 429", code)
	}
	if code := c.loginFrom("z", "203.0.113.8"); code != http.StatusUnauthorized {
		t.Errorf("another client behind the proxy: %d, want 401 (its own limit)", code)
	}
	recs := w.led.actions("console_login_failed")
	if len(recs) == 0 || recs[0].Detail["remote"] != "203.0.113.7" || !strings.HasPrefix(recs[0].Detail["proxy"].(string), "127.0.0.1") {
		t.Errorf("the record's remote: %v", recs)
	}
	// A successful login's record names the client too.
	tok := c.csrf("/console/login")
	code, _, _ := c.post("/console/login", url.Values{"csrf": {tok}, "name": {"carol"}, "password": {passwords["carol"]}}, "X-Forwarded-For", "203.0.113.9")
	if l := w.led.actions("console_login"); code != http.StatusSeeOther || len(l) != 1 || l[0].Detail["remote"] != "203.0.113.9" {
		t.Errorf("login: %d, records %v", code, l)
	}
}

func TestClientAddr(t *testing.T) {
	p, err := ParseTrustedProxies([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &Console{o: Options{TrustedProxies: p}}
	for _, tc := range []struct{ peer, xff, want, proxy string }{
		{"10.0.0.1:5", "203.0.113.1", "203.0.113.1", "10.0.0.1"},
		{"10.0.0.1:5", "", "10.0.0.1", ""},
		{"10.0.0.1:5", "203.0.113.1, 10.9.9.9", "203.0.113.1", "10.0.0.1"},
		{"10.0.0.1:5", "10.2.2.2, 10.9.9.9", "10.2.2.2", "10.0.0.1"},
		{"10.0.0.1:5", "garbage, 10.9.9.9", "10.9.9.9", "10.0.0.1"},
		{"10.0.0.1:5", "garbage", "10.0.0.1", ""},
		{"192.0.2.5:5", "203.0.113.1", "192.0.2.5", ""},
		{"[::1]:5", "2001:db8::1", "2001:db8::1", "::1"},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got, proxy := c.clientAddr(r); got != tc.want || proxy != tc.proxy {
			t.Errorf("%s %q: %s %s, want %s %s", tc.peer, tc.xff, got, proxy, tc.want, tc.proxy)
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was taken")
	}
}

// One bundle at a time: another while one is made is refused, 429 with
// Retry-After, exporting nothing.
func TestBundleOneAtATime(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	w := newWorld(t, func(o *Options) {
		o.BundleMinFree = 1 // the check runs, and passes
		o.Export = func(ctx context.Context, sel evidence.Selection, dir string) (*evidence.Manifest, error) {
			if calls.Add(1) == 1 {
				close(entered)
				<-release
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			return &evidence.Manifest{}, os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{}"), 0o600)
		}
	})
	c := w.client(t)
	c.mustLogin("bob")
	tok := c.csrf("/console/audit")
	form := url.Values{"csrf": {tok}, "user": {"U0123456789abcdef0123456789abcdef"}, "from": {"2026-12-01"}, "to": {"2026-12-02"}}
	first := make(chan int)
	go func() {
		code, _, _ := c.post("/console/audit/bundle", form)
		first <- code
	}()
	<-entered
	code, body, h := c.post("/console/audit/bundle", form)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") != "30" || !strings.Contains(body, "one at a time") {
		t.Errorf("a second bundle meanwhile: %d %q", code, h.Get("Retry-After"))
	}
	close(release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first bundle: %d", code)
	}
	if code, _, _ := c.post("/console/audit/bundle", form); code != http.StatusOK {
		t.Errorf("a bundle after the first: %d", code)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d exports, want 2", n)
	}
	if n := len(w.led.actions("console_bundle")); n != 2 {
		t.Errorf("%d bundles recorded, want 2", n)
	}
}

// A bundle is refused (507) when the disk has less than the margin free;
// a user id with a trailing newline is refused (400).
func TestBundleRefusals(t *testing.T) {
	w := newWorld(t, func(o *Options) {
		o.BundleMinFree = 1 << 62
		o.Export = func(ctx context.Context, sel evidence.Selection, dir string) (*evidence.Manifest, error) {
			t.Errorf("exported %+v", sel)
			return nil, errors.New("no")
		}
	})
	c := w.client(t)
	c.mustLogin("bob")
	tok := c.csrf("/console/audit")
	form := url.Values{"csrf": {tok}, "user": {"U0123456789abcdef0123456789abcdef"}, "from": {"2026-12-01"}, "to": {"2026-12-02"}}
	if code, body, _ := c.post("/console/audit/bundle", form); code != http.StatusInsufficientStorage || !strings.Contains(body, "nearly full") {
		t.Errorf("a bundle on a full disk: %d", code)
	}
	for _, u := range []string{"U0123456789abcdef0123456789abcdef\n", "U0123456789abcdef0123456789abcdef\r\n", "\tU0123456789abcdef0123456789abcdef"} {
		form.Set("user", u)
		if code, _, _ := c.post("/console/audit/bundle", form); code != http.StatusBadRequest {
			t.Errorf("user %q: %d, want 400", u, code)
		}
	}
	if len(w.led.actions("console_bundle")) != 0 {
		t.Error("a refused bundle was recorded")
	}
}

// The login form's token: an empty cookie with an empty field, or a
// short one, is refused.
func TestLoginCSRFEmpty(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	for _, tok := range []string{"", "a"} {
		req, _ := http.NewRequest("POST", w.srv.URL+"/console/login", strings.NewReader(url.Values{"csrf": {tok}, "name": {"alice"}, "password": {passwords["alice"]}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: loginCookieName, Value: tok})
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("login with the token %q in cookie and form: %d, want 403", tok, resp.StatusCode)
		}
	}
	if len(w.led.actions("console_login")) != 0 {
		t.Error("a login with an empty token was let in")
	}
}

// /console/static/ serves its files, and lists no directory.
func TestStaticFilesOnly(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	if code, body, _ := c.get("/console/static/console.css"); code != 200 || body == "" {
		t.Errorf("console.css: %d", code)
	}
	for _, p := range []string{"/console/static/", "/console/static/nope.js", "/console/static/..%2f"} {
		if code, body, _ := c.get(p); code != http.StatusNotFound || strings.Contains(body, "console.js") {
			t.Errorf("%s: %d, want 404 without a listing", p, code)
		}
	}
}

// A switch form whose on is neither true nor false says so.
func TestSwitchFormErrors(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	c.mustLogin("carol")
	tok := c.csrf("/console/ops")
	for _, p := range []string{"/console/ops/kill-switch", "/console/ops/dry-run"} {
		code, body, _ := c.post(p, url.Values{"csrf": {tok}, "on": {"maybe"}, "reason": {"a fine reason"}})
		if code != http.StatusBadRequest || !strings.Contains(body, "want true or false") || strings.Contains(body, "Say why") {
			t.Errorf("%s on=maybe: %d", p, code)
		}
		code, body, _ = c.post(p, url.Values{"csrf": {tok}, "on": {"true"}, "reason": {""}})
		if code != http.StatusBadRequest || !strings.Contains(body, "Say why") {
			t.Errorf("%s without a reason: %d", p, code)
		}
	}
	if w.sw.KillSwitch() || len(w.led.records) != 1 { // the login alone
		t.Errorf("refused forms changed something: %d records", len(w.led.records))
	}
}

// Logins refused by the limits (429) are recorded, summed, at most one
// record a minute, naming only known users.
func TestLoginLimitedRecorded(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	for i := range 5 {
		if code, _ := c.login("alice", "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	for range 10 {
		if code, _ := c.login("alice", "wrong"); code != http.StatusTooManyRequests {
			t.Fatalf("past the limit: %d", code)
		}
	}
	c.login("hunter2", "x") // an unknown name, limited by the address
	recs := w.led.actions("console_login_limited")
	if len(recs) != 1 || fmt.Sprint(recs[0].Detail["refused"]) != "1" || fmt.Sprint(recs[0].Detail["users"]) != "[alice]" {
		t.Fatalf("records of refused logins: %+v", recs)
	}
	w.clock.add(time.Minute)
	c.login("alice", "wrong") // the window has passed: a failure, not limited
	for range 5 {
		c.login("alice", "wrong")
	}
	recs = w.led.actions("console_login_limited")
	if len(recs) != 2 || fmt.Sprint(recs[1].Detail["refused"]) == "1" {
		t.Fatalf("the second summary: %+v", recs)
	}
	for _, r := range recs {
		if strings.Contains(fmt.Sprint(r.Detail), "hunter2") {
			t.Errorf("an unknown name was recorded: %v", r.Detail)
		}
	}
}

// The page of a conversation another person holds offers no reply box and
// no hand back to an agent; an admin gets the hand back.
func TestConversationPageOfAnother(t *testing.T) {
	w := newWorld(t, nil)
	conv := "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"
	d := w.client(t)
	d.mustLogin("dave")
	d.post(conv+"/takeover", url.Values{"csrf": {d.csrf(conv)}})
	a := w.client(t)
	a.mustLogin("alice")
	_, body, _ := a.get(conv)
	if strings.Contains(body, `id="handback"`) || strings.Contains(body, `id="resolve"`) || strings.Contains(body, `id="send"`) {
		t.Error("alice's page of dave's conversation offers a reply, hand back or resolve")
	}
	a.post(conv+"/takeover", url.Values{"csrf": {a.csrf(conv)}})
	if _, body, _ := d.get(conv); !strings.Contains(body, `id="handback"`) {
		t.Error("the admin's page of alice's conversation offers no hand back")
	}
}
