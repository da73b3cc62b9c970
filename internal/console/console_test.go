package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/retention"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
)

func TestPasswords(t *testing.T) {
	h := mustHash(t, "correct horse")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q: not argon2id in the PHC format", h)
	}
	if err := CheckHash(h); err != nil {
		t.Errorf("CheckHash(own hash): %v", err)
	}
	if !CheckPassword(h, "correct horse") || CheckPassword(h, "correct horse ") || CheckPassword(h, "") {
		t.Error("argon2id: the right password fails or a wrong one passes")
	}
	if h2 := mustHash(t, "correct horse"); h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	b, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if CheckHash(string(b)) != nil || !CheckPassword(string(b), "s3cret") || CheckPassword(string(b), "s3cre") {
		t.Error("bcrypt hash not taken, or wrong password passes")
	}
	hb, err := HashBcrypt("other")
	if err != nil || !CheckPassword(hb, "other") {
		t.Errorf("HashBcrypt: %v", err)
	}
	for name, bad := range map[string]string{
		"plain":         "hunter2",
		"empty":         "",
		"argon2i":       "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"version":       "$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"memory huge":   "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"memory tiny":   "$argon2id$v=19$m=8,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"no passes":     "$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"params order":  "$argon2id$v=19$t=2,m=19456,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
		"short salt":    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
		"bad base64":    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$!!!",
		"extra part":    h + "$x",
		"bcrypt broken": "$2b$10$short",
		"sha-crypt":     "$6$salt$hash",
	} {
		if CheckHash(bad) == nil {
			t.Errorf("%s: CheckHash(%q) passes", name, bad)
		}
		if CheckPassword(bad, "hunter2") {
			t.Errorf("%s: CheckPassword passes", name)
		}
	}
}

func TestCheckUsers(t *testing.T) {
	h := mustHash(t, "x")
	for name, tc := range map[string]struct {
		users []User
		want  string
	}{
		"ok":            {[]User{{Name: "a", Role: RoleAgent, Hash: h, Channels: []string{"demo"}}, {Name: "b", Role: RoleAdmin, Hash: h}}, ""},
		"twice":         {[]User{{Name: "a", Role: RoleAdmin, Hash: h}, {Name: "a", Role: RoleAuditor, Hash: h}}, "twice"},
		"role":          {[]User{{Name: "a", Role: "root", Hash: h}}, "role"},
		"hash":          {[]User{{Name: "a", Role: RoleAdmin, Hash: "hunter2"}}, "password_hash"},
		"agent no chan": {[]User{{Name: "a", Role: RoleAgent, Hash: h}}, "channels"},
		"unknown chan":  {[]User{{Name: "a", Role: RoleAgent, Hash: h, Channels: []string{"nope"}}}, "nope"},
		"auditor chan":  {[]User{{Name: "a", Role: RoleAuditor, Hash: h, Channels: []string{"demo"}}}, "only agents"},
		"name":          {[]User{{Name: "a b", Role: RoleAdmin, Hash: h}}, "name"},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckUsers(tc.users, []string{"demo"})
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("CheckUsers = %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), h) {
				t.Error("the error holds the hash")
			}
		})
	}
}

func TestLoginLimits(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	for i := 0; i < 5; i++ {
		if code, _ := c.login("alice", "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i, code)
		}
	}
	// The sixth attempt is refused before the password is checked, even
	// the right one.
	code, h := c.login("alice", passwords["alice"])
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("after 5 failures: %d, Retry-After %q; want 429 with Retry-After", code, h.Get("Retry-After"))
	}
	if n, err := time.ParseDuration(h.Get("Retry-After") + "s"); err != nil || n <= 0 || n > time.Minute {
		t.Errorf("Retry-After %q: want 1 to 60 seconds", h.Get("Retry-After"))
	}
	// Another user from the same address is limited too (per address).
	if code, _ := c.login("bob", passwords["bob"]); code != http.StatusTooManyRequests {
		t.Errorf("another user from the limited address: %d, want 429", code)
	}
	w.clock.add(61 * time.Second)
	if code, _ := c.login("alice", passwords["alice"]); code != http.StatusSeeOther {
		t.Errorf("after the window: %d, want 303", code)
	}
	for outcome, want := range map[string]float64{"ok": 1, "failed": 5, "limited": 2} {
		if got := testutil.ToFloat64(w.c.logins.WithLabelValues(outcome)); got != want {
			t.Errorf("logins{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if n := len(w.led.actions("console_login_failed")); n != 5 {
		t.Errorf("%d failed logins recorded, want 5", n)
	}
	ok := w.led.actions("console_login")
	if len(ok) != 1 || ok[0].Detail["by"] != "alice" || ok[0].Detail["role"] != "agent" {
		t.Errorf("login records: %+v", ok)
	}
	// A password typed as a user name is never recorded.
	w.clock.add(61 * time.Second)
	c.login(passwords["bob"], "x")
	for _, r := range w.led.records {
		b, _ := json.Marshal(r)
		for _, p := range passwords {
			if strings.Contains(string(b), p) {
				t.Errorf("a record holds a password: %s", b)
			}
		}
	}
}

func TestLoginUnknownUserPerUserLimit(t *testing.T) {
	w := newWorld(t, func(o *Options) { o.LoginFailures = 3 })
	// Failures for one user name from many addresses: limited by name.
	for i := 0; i < 3; i++ {
		c := w.client(t)
		tok := c.csrf("/console/login")
		code, _, _ := c.post("/console/login", url.Values{"csrf": {tok}, "name": {"carol"}, "password": {"nope"}})
		if code != http.StatusUnauthorized {
			t.Fatalf("%d", code)
		}
		w.clock.add(time.Second)
	}
	// Different remote addresses cannot be made in httptest: the name's
	// limit is what this checks, with a fresh cookie jar each time.
	if code, _ := w.client(t).login("carol", passwords["carol"]); code != http.StatusTooManyRequests {
		t.Errorf("carol after 3 failures: %d, want 429", code)
	}
}

func TestLoginCSRF(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	// No login token: refused, even with the right password.
	code, _, _ := c.post("/console/login", url.Values{"name": {"alice"}, "password": {passwords["alice"]}})
	if code != http.StatusForbidden {
		t.Errorf("login without the form's token: %d, want 403", code)
	}
	tok := c.csrf("/console/login")
	code, _, _ = c.post("/console/login", url.Values{"csrf": {tok}, "name": {"alice"}, "password": {passwords["alice"]}}, "Origin", "https://evil.example")
	if code != http.StatusForbidden {
		t.Errorf("login from another origin: %d, want 403", code)
	}
	if len(w.led.actions("console_login")) != 0 {
		t.Error("a refused login was recorded as a login")
	}
}

func TestRoles(t *testing.T) {
	w := newWorld(t, nil)
	pages := []string{"/console/inbox", "/console/audit", "/console/ops", "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"}
	for user, want := range map[string][]int{
		"alice": {200, 403, 403, 200},
		"bob":   {403, 200, 403, 403},
		"carol": {403, 403, 200, 403},
		"dave":  {200, 200, 200, 200},
		"erin":  {200, 403, 403, 403}, // erin answers "other", not "demo"
	} {
		c := w.client(t)
		c.mustLogin(user)
		for i, p := range pages {
			if code, _, _ := c.get(p); code != want[i] {
				t.Errorf("%s GET %s = %d, want %d", user, p, code, want[i])
			}
		}
	}
	// An agent's inbox lists its channels alone.
	c := w.client(t)
	c.mustLogin("alice")
	_, body, _ := c.get("/console/inbox")
	if strings.Contains(body, "U22222222222222222222222222222222") || !strings.Contains(body, "U0123456789abcdef0123456789abcdef") {
		t.Errorf("alice's inbox shows another channel's conversation, or not hers")
	}
	// Nor may she act on another channel's conversation.
	tok := c.csrf("/console/inbox")
	code, _, _ := c.post("/console/inbox/other/user:U22222222222222222222222222222222/takeover", url.Values{"csrf": {tok}})
	if code != http.StatusForbidden {
		t.Errorf("takeover of another channel's conversation: %d, want 403", code)
	}
	if cv, _ := w.convs.Get(nil, "other", "user:U22222222222222222222222222222222"); cv.Agent != "" {
		t.Error("the takeover happened")
	}
	// Without a session: to the login page, and a POST is refused.
	anon := w.client(t)
	if code, _, h := anon.get("/console/ops"); code != http.StatusSeeOther || h.Get("Location") != "/console/login" {
		t.Errorf("GET without a session: %d to %q", code, h.Get("Location"))
	}
	if code, _, _ := anon.post("/console/ops/kill-switch", url.Values{"on": {"true"}, "reason": {"x"}}); code != http.StatusUnauthorized {
		t.Errorf("POST without a session: %d, want 401", code)
	}
}

func TestCSRF(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	c.mustLogin("carol")
	tok := c.csrf("/console/ops")
	form := url.Values{"on": {"true"}, "reason": {"incident 42"}}
	for name, tc := range map[string]struct {
		csrf   string
		header []string
	}{
		"no token":                {"", nil},
		"wrong token":             {tok[:len(tok)-2] + "xx", nil},
		"other origin":            {tok, []string{"Origin", "https://evil.example"}},
		"null origin, cross-site": {tok, []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}},
		"cross-site fetch":        {tok, []string{"Sec-Fetch-Site", "cross-site"}},
		"same-site fetch":         {tok, []string{"Sec-Fetch-Site", "same-site"}},
	} {
		f := url.Values{"on": form["on"], "reason": form["reason"]}
		if tc.csrf != "" {
			f.Set("csrf", tc.csrf)
		}
		if code, _, _ := c.post("/console/ops/kill-switch", f, tc.header...); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	if w.sw.KillSwitch() || len(w.led.actions("kill_switch")) != 0 {
		t.Fatal("a refused request turned the kill switch on, or was recorded")
	}
	form.Set("csrf", tok)
	if code, _, h := c.post("/console/ops/kill-switch", form, "Origin", w.srv.URL, "Sec-Fetch-Site", "same-origin"); code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "kill_on") {
		t.Fatalf("with the token: %d %s", code, h.Get("Location"))
	}
	if !w.sw.KillSwitch() {
		t.Error("kill switch not on")
	}
	recs := w.led.actions("kill_switch")
	if len(recs) != 1 || recs[0].Detail["by"] != "carol" || recs[0].Detail["reason"] != "incident 42" || recs[0].Detail["via"] != "console" || recs[0].Detail["on"] != true {
		t.Errorf("kill switch records: %+v", recs)
	}
	// No reason: refused.
	if code, _, _ := c.post("/console/ops/kill-switch", url.Values{"csrf": {tok}, "on": {"false"}}); code != http.StatusBadRequest || !w.sw.KillSwitch() {
		t.Errorf("kill switch off without a reason: %d", code)
	}
	// Another session's token is not this one's.
	c2 := w.client(t)
	c2.mustLogin("dave")
	if code, _, _ := c2.post("/console/ops/kill-switch", url.Values{"csrf": {tok}, "on": {"false"}, "reason": {"x"}}); code != http.StatusForbidden {
		t.Errorf("another session's token: %d, want 403", code)
	}
}

func TestHeadersAndSessions(t *testing.T) {
	w := newWorld(t, func(o *Options) { o.IdleTimeout = 10 * time.Minute; o.MaxAge = time.Hour })
	c := w.client(t)
	_, _, h := c.get("/console/login")
	for k, want := range map[string]string{
		"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		"X-Content-Type-Options": "nosniff",
	} {
		if h.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, h.Get(k), want)
		}
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	_, h = c.login("alice", passwords["alice"])
	var sc *http.Cookie
	for _, ck := range (&http.Response{Header: h}).Cookies() {
		if ck.Name == cookieName {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure || sc.Path != "/console/" || len(sc.Value) < 40 {
		t.Fatalf("session cookie %+v", sc)
	}
	// Idle expiry.
	w.clock.add(9 * time.Minute)
	if code, _, _ := c.get("/console/inbox"); code != 200 {
		t.Errorf("after 9 idle minutes: %d", code)
	}
	w.clock.add(11 * time.Minute)
	if code, _, _ := c.get("/console/inbox"); code != http.StatusSeeOther {
		t.Errorf("after 11 idle minutes: %d, want 303 to login", code)
	}
	// Absolute expiry, though active.
	c.mustLogin("alice")
	for i := 0; i < 7; i++ {
		w.clock.add(9 * time.Minute)
		c.get("/console/inbox")
	}
	if code, _, _ := c.get("/console/inbox"); code != http.StatusSeeOther {
		t.Errorf("after 63 active minutes: %d, want 303 to login", code)
	}
	// Logout ends the session on the server.
	c.mustLogin("alice")
	var old string
	for _, ck := range c.hc.Jar.Cookies(mustURL(t, w.srv.URL+"/console/")) {
		if ck.Name == cookieName {
			old = ck.Value
		}
	}
	tok := c.csrf("/console/inbox")
	if code, _, _ := c.post("/console/logout", url.Values{"csrf": {tok}}); code != http.StatusSeeOther {
		t.Errorf("logout: %d", code)
	}
	if w.c.sessions.get(old, w.clock.Now()) != nil {
		t.Error("the session lives after logout")
	}
	if len(w.led.actions("console_logout")) != 1 {
		t.Error("logout not recorded")
	}
	// Secure cookies when configured.
	ws := newWorld(t, func(o *Options) { o.SecureCookie = true })
	_, h = ws.client(t).login("alice", passwords["alice"])
	if !strings.Contains(h.Get("Set-Cookie"), "Secure") {
		t.Errorf("secure_cookie: Set-Cookie %q", h.Get("Set-Cookie"))
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestLedgerDown(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	w.led.fail = true
	if code, _ := c.login("carol", passwords["carol"]); code != http.StatusServiceUnavailable {
		t.Errorf("login with the ledger down: %d, want 503", code)
	}
	if code, _, _ := c.get("/console/ops"); code != http.StatusSeeOther {
		t.Errorf("a login not recorded gave a session: %d", code)
	}
	w.led.fail = false
	c.mustLogin("carol")
	tok := c.csrf("/console/ops")
	w.led.fail = true
	if code, _, _ := c.post("/console/ops/kill-switch", url.Values{"csrf": {tok}, "on": {"true"}, "reason": {"x"}}); code != http.StatusServiceUnavailable {
		t.Errorf("kill switch with the ledger down: %d, want 503", code)
	}
	if w.sw.KillSwitch() {
		t.Error("kill switch on though not recorded")
	}
}

func TestReplyMessages(t *testing.T) {
	for name, tc := range map[string]struct {
		text, pkg, sticker, quick string
		want                      string // JSON of the messages, or "error"
	}{
		"text":    {"Hello", "", "", "", `[{"text":"Hello","type":"text"}]`},
		"sticker": {"", "446", "1988", "", `[{"packageId":"446","stickerId":"1988","type":"sticker"}]`},
		"both with quick": {"Anything else?", "446", "1988", "Yes\nNo, thanks", `[{"text":"Anything else?","type":"text"},` +
			`{"packageId":"446","quickReply":{"items":[{"action":{"label":"Yes","text":"Yes","type":"message"},"type":"action"},{"action":{"label":"No","text":"No","type":"message"},"type":"action"},{"action":{"label":"thanks","text":"thanks","type":"message"},"type":"action"}]},"stickerId":"1988","type":"sticker"}]`},
		"nothing":       {"  ", "", "", "", "error"},
		"sticker half":  {"", "446", "", "", "error"},
		"sticker words": {"", "abc", "1", "", "error"},
		"long label":    {"x", "", "", "this label is far too long", "error"},
		"many quick":    {"x", "", "", "a,b,c,d,e,f,g,h,i,j,k,l,m,n", "error"},
		"long text":     {strings.Repeat("あ", 5001), "", "", "", "error"},
	} {
		t.Run(name, func(t *testing.T) {
			msgs, err := replyMessages(tc.text, tc.pkg, tc.sticker, tc.quick)
			if tc.want == "error" {
				if err == nil {
					t.Errorf("no error: %s", msgs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(msgs)
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestInboxActions(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t)
	c.mustLogin("alice")
	conv := "/console/inbox/demo/user:U0123456789abcdef0123456789abcdef"
	code, body, _ := c.get(conv)
	if code != 200 || !strings.Contains(body, "It&#39;s about my loan contract") {
		t.Fatalf("conversation page: %d", code)
	}
	c.get(conv) // again: nothing new to mark read
	if len(w.convs.reads) != 1 || w.convs.reads[0] != "alice demo user:U0123456789abcdef0123456789abcdef" {
		t.Errorf("mark as read: %v, want once", w.convs.reads)
	}
	tok := c.csrf(conv)
	// Reply before taking over: the engine refuses (409).
	if code, _, _ := c.post(conv+"/reply", url.Values{"csrf": {tok}, "text": {"hi"}}); code != http.StatusConflict {
		t.Errorf("reply to a conversation not held: %d, want 409", code)
	}
	for _, a := range []string{"takeover", "reply", "handback", "takeover", "resolve"} {
		f := url.Values{"csrf": {tok}, "text": {"Hello, this is Alice"}}
		if code, _, h := c.post(conv+"/"+a, f); code != http.StatusSeeOther || !strings.HasSuffix(h.Get("Location"), "done="+a) {
			t.Errorf("%s: %d %s", a, code, h.Get("Location"))
		}
	}
	if len(w.convs.replies) != 1 || !strings.Contains(string(w.convs.replies[0][0]), "Hello, this is Alice") {
		t.Errorf("replies: %s", w.convs.replies)
	}
	if cv, _ := w.convs.Get(nil, "demo", "user:U0123456789abcdef0123456789abcdef"); cv.State != StateResolved {
		t.Errorf("after hand back, take over, resolve: %s", cv.State)
	}
	// Typing in a conversation nobody holds: take it over first.
	if code, _, _ := c.post(conv+"/typing", url.Values{"csrf": {tok}}); code != http.StatusConflict || w.convs.typing != 0 {
		t.Errorf("typing in a resolved conversation: %d, %d calls", code, w.convs.typing)
	}
	if code, _, _ := c.post(conv+"/nonsense", url.Values{"csrf": {tok}}); code != http.StatusNotFound {
		t.Errorf("unknown action: %d", code)
	}
	if code, _, _ := c.get("/console/inbox/demo/user:U99999999999999999999999999999999"); code != http.StatusNotFound {
		t.Errorf("unknown conversation: %d", code)
	}
	// Opening a conversation by its LINE id.
	if code, _, h := c.get("/console/inbox/open?channel=demo&id=U11111111111111111111111111111111"); code != http.StatusSeeOther ||
		h.Get("Location") != "/console/inbox/demo/user:U11111111111111111111111111111111" {
		t.Errorf("open: %d %q", code, h.Get("Location"))
	}
	if code, _, _ := c.get("/console/inbox/open?channel=other&id=U22222222222222222222222222222222"); code != http.StatusForbidden {
		t.Errorf("open on another channel: %d, want 403", code)
	}
	if code, _, _ := c.get("/console/inbox/open?channel=demo&id=../../ops"); code != http.StatusBadRequest {
		t.Errorf("open a bad id: %d, want 400", code)
	}
}

func TestOpsActions(t *testing.T) {
	var trigger string
	w := newWorld(t, func(o *Options) {
		o.Reload = func(ctx context.Context, tr string) (string, int, error) {
			trigger = tr
			if tr == "console (dave)" {
				return "", 0, errors.New("rules.yaml:3: unknown key \"whn\"")
			}
			return "def456", 3, nil
		}
	})
	c := w.client(t)
	c.mustLogin("carol")
	tok := c.csrf("/console/ops")
	if code, _, _ := c.post("/console/ops/dry-run", url.Values{"csrf": {tok}, "channel": {"demo"}, "on": {"true"}, "reason": {"testing a new rule"}}); code != http.StatusSeeOther {
		t.Fatalf("dry-run: %d", code)
	}
	recs := w.led.actions("dry_run")
	if !w.sw.DryRunStatus()["demo"] || len(recs) != 1 || recs[0].Detail["by"] != "carol" || recs[0].Detail["reason"] != "testing a new rule" || recs[0].Detail["channel"] != "demo" {
		t.Errorf("dry-run records: %+v", recs)
	}
	if code, _, _ := c.post("/console/ops/dry-run", url.Values{"csrf": {tok}, "channel": {"nope"}, "on": {"true"}, "reason": {"x"}}); code != http.StatusBadRequest {
		t.Errorf("dry-run of an unknown channel: %d", code)
	}
	if _, body, _ := c.get("/console/ops"); !strings.Contains(body, `id="dry-demo">on<`) || !strings.Contains(body, "abc123") {
		t.Error("the page does not show dry-run on for demo, or the rules hash")
	}
	if code, _, h := c.post("/console/ops/reload", url.Values{"csrf": {tok}}); code != http.StatusSeeOther || !strings.HasSuffix(h.Get("Location"), "done=reload") || trigger != "console (carol)" {
		t.Errorf("reload: %d, trigger %q", code, trigger)
	}
	d := w.client(t)
	d.mustLogin("dave")
	code, body, _ := d.post("/console/ops/reload", url.Values{"csrf": {d.csrf("/console/ops")}})
	if code != http.StatusConflict || !strings.Contains(body, "unknown key") {
		t.Errorf("a bad rule file: %d", code)
	}
}

func TestAuditPage(t *testing.T) {
	verified := make(chan struct{})
	w := newWorld(t, func(o *Options) {
		o.Verify = func(ctx context.Context) (VerifyResult, error) {
			<-verified
			return VerifyResult{Summary: "FAIL record 7: commitment mismatch"}, nil
		}
		o.Holds = func(ctx context.Context) ([]retention.Hold, error) {
			return []retention.Hold{{ID: 9, Channel: "demo", Reason: "case 2026-114", CreatedMs: 1}}, nil
		}
		o.Export = func(ctx context.Context, sel evidence.Selection, dir string) (*evidence.Manifest, error) {
			t.Errorf("a bad form exported %+v", sel)
			return nil, errors.New("no")
		}
		o.Requests = func(ctx context.Context) ([]Request, error) {
			return []Request{{Record: 31, Subject: "user:U0123456789abcdef0123456789abcdef", Kind: "deletion", Changed: 4}}, nil
		}
	})
	c := w.client(t)
	c.mustLogin("bob")
	_, body, _ := c.get("/console/audit")
	for _, want := range []string{"case 2026-114", "deletion", "U0123456789abcdef0123456789abcdef", "Not run from the console"} {
		if !strings.Contains(body, want) {
			t.Errorf("the audit page lacks %q", want)
		}
	}
	tok := c.csrf("/console/audit")
	if code, _, _ := c.post("/console/audit/verify", url.Values{"csrf": {tok}}); code != http.StatusSeeOther {
		t.Fatalf("verify: %d", code)
	}
	if _, body, _ = c.get("/console/audit"); !strings.Contains(body, "A verification is running") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("the page does not say a verification runs")
	}
	// A second click while it runs starts nothing more.
	c.post("/console/audit/verify", url.Values{"csrf": {tok}})
	close(verified)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(body, "commitment mismatch") {
		time.Sleep(20 * time.Millisecond)
		_, body, _ = c.get("/console/audit")
	}
	if !strings.Contains(body, `class="bad">FAIL record 7: commitment mismatch`) {
		t.Errorf("the finding is not shown as a failure")
	}
	if n := len(w.led.actions("console_verify")); n != 1 {
		t.Errorf("%d verify runs recorded, want 1", n)
	}
	if r := w.led.actions("console_verify_result"); len(r) != 1 || r[0].Detail["ok"] != false || r[0].Detail["by"] != "bob" {
		t.Errorf("verify result records: %+v", r)
	}
	// Bad bundle forms.
	for name, f := range map[string]url.Values{
		"no user":   {"from": {"2026-12-01"}, "to": {"2026-12-02"}},
		"group":     {"user": {"C0123456789abcdef0123456789abcdef"}, "from": {"2026-12-01"}, "to": {"2026-12-02"}},
		"bad date":  {"user": {"U0123456789abcdef0123456789abcdef"}, "from": {"yesterday"}, "to": {"2026-12-02"}},
		"backwards": {"user": {"U0123456789abcdef0123456789abcdef"}, "from": {"2026-12-03"}, "to": {"2026-12-02"}},
	} {
		f.Set("csrf", tok)
		if code, _, _ := c.post("/console/audit/bundle", f); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
}

func TestBundleSelection(t *testing.T) {
	sel, err := bundleSelection(" U0123456789abcdef0123456789abcdef ", "2026-12-01", "2026-12-01", "demo", []string{"demo"})
	if err != nil {
		t.Fatal(err)
	}
	if sel.User != "user:U0123456789abcdef0123456789abcdef" || !sel.From.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) ||
		!sel.To.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) || sel.Channel != "demo" {
		t.Errorf("selection %+v: want the whole of 2026-12-01 UTC", sel)
	}
	if _, err := bundleSelection("U0123456789abcdef0123456789abcdef", "2026-12-01", "2026-12-01", "other", []string{"demo"}); err == nil {
		t.Error("an unknown channel passes")
	}
}

func TestConfiguredOrigin(t *testing.T) {
	w := newWorld(t, func(o *Options) { o.Origin = "https://console.example.com" })
	c := w.client(t)
	c.mustLogin("carol")
	tok := c.csrf("/console/ops")
	f := url.Values{"csrf": {tok}, "on": {"true"}, "reason": {"x"}}
	if code, _, _ := c.post("/console/ops/kill-switch", f, "Origin", w.srv.URL); code != http.StatusForbidden {
		t.Errorf("the request's own host, with an origin configured: %d, want 403", code)
	}
	if code, _, _ := c.post("/console/ops/kill-switch", f, "Origin", "https://console.example.com"); code != http.StatusSeeOther {
		t.Errorf("the configured origin: %d, want 303", code)
	}
}

func TestUnread(t *testing.T) {
	user := Message{From: "user", Type: "text"}
	read := Message{From: "agent:a", Type: "markAsRead", Outcome: "sent"}
	heldRead := Message{From: "agent:a", Type: "markAsRead", Outcome: "suppressed"}
	bot := Message{From: "bot", Type: "text", Outcome: "sent"}
	for name, tc := range map[string]struct {
		h    []Message
		want bool
	}{
		"empty":          {nil, false},
		"user":           {[]Message{user}, true},
		"read":           {[]Message{user, read}, false},
		"read, bot":      {[]Message{user, read, bot}, false},
		"read, user":     {[]Message{user, read, user}, true},
		"held back read": {[]Message{user, heldRead}, true},
		"bot only":       {[]Message{bot}, false},
	} {
		if got := unread(tc.h); got != tc.want {
			t.Errorf("%s: unread = %v, want %v", name, got, tc.want)
		}
	}
}
