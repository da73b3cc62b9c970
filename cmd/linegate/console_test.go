package main

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/linegate/linegate/internal/console"
	"github.com/linegate/linegate/internal/console/consoletest"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

// consoleDocs is where the browser tests write the console's pictures for
// docs/CONSOLE.md (LINEGATE_SCREENSHOTS=1).
const consoleDocs = "../../docs/console"

// consolePasswords are the console users' passwords in these tests.
var consolePasswords = map[string]string{
	"alice": "alice-agent-pw-4Fq", "bob": "bob-auditor-pw-8Lw", "carol": "carol-operator-pw-2Ks", "dave": "dave-admin-pw-6Hp",
}

// consoleWorld is a gateway with the console, and the simulator as LINE.
type consoleWorld struct {
	g   *gateway
	api *sim.API
	dir string
}

// startConsoleWorld starts the gateway with four console users (agent
// alice on demo, auditor bob, operator carol, admin dave), login limits
// of 3 failures in 3 s, and the monitor polling the simulator.
func startConsoleWorld(t *testing.T, extra string) *consoleWorld {
	w := &consoleWorld{dir: t.TempDir()}
	w.api = sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "test-access-token", Secret: testSecret,
		Endpoint: "https://gw.example.com/webhook/demo", Quota: 1000}}})
	srv := httptest.NewServer(w.api)
	t.Cleanup(srv.Close)
	y := fmt.Sprintf("line_api_base: %s\nmonitor: {webhook_every: 200ms, quota_every: 200ms}\n", srv.URL)
	y += consoleSection(t)
	w.g = startGateway(t, w.dir, gwConfig{extra: y + extra, chanExtra: "    webhook_url: https://gw.example.com/webhook/demo\n",
		logExtra: "  anchor_every: 1s\n"})
	return w
}

// consoleSection is the config's console section: four users (agent
// alice on demo, auditor bob, operator carol, admin dave), login limits
// of 3 failures in 3 s.
func consoleSection(t *testing.T) string {
	y := "console:\n  login_failures: 3\n  login_window: 3s\n  users:\n"
	roles := map[string]string{"alice": "agent", "bob": "auditor", "carol": "operator", "dave": "admin"}
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		h, err := console.HashPassword(consolePasswords[name])
		if err != nil {
			t.Fatal(err)
		}
		y += fmt.Sprintf("    - {name: %s, role: %s, password_hash: %q", name, roles[name], h)
		if roles[name] == "agent" {
			y += ", channels: [demo]"
		}
		y += "}\n"
	}
	return y
}

// consoleUser is the LINE user whose messages the console tests send.
const consoleUser = "U5e1f0000000000000000000000000c0e"

// message posts a text message of consoleUser to the gateway.
func (w *consoleWorld) message(t *testing.T, text string) {
	t.Helper()
	n := eventSeq.Add(1)
	e := fmt.Sprintf(`{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01CONSOLE%017d","deliveryContext":{"isRedelivery":false},`+
		`"source":{"type":"user","userId":"%s"},"replyToken":"%s","message":{"id":"%d","type":"text","text":%q,"quoteToken":"q","markAsReadToken":"mr%d"}}`,
		time.Now().UnixMilli(), n, consoleUser, w.api.IssueReplyToken(""), n, text, n)
	if code := w.g.post(t, testSecret, []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[`+e+`]}`)); code != 200 {
		t.Fatalf("webhook: %d", code)
	}
}

// adminRecords returns the bodies of the admin records of action in the
// stopped gateway's ledger.
func adminRecords(t *testing.T, dir, action string) []record.Admin {
	t.Helper()
	var out []record.Admin
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindAdmin || r.body == nil {
			continue
		}
		var a record.Admin
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatal(err)
		}
		if a.Action == action {
			out = append(out, a)
		}
	}
	return out
}

// consoleClient is a plain HTTP client with a session of the console.
type consoleClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func newConsoleClient(t *testing.T, base string) *consoleClient {
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page GETs a console page and returns its status, body and CSRF token.
func (c *consoleClient) page(path string) (int, string, string) {
	c.t.Helper()
	resp, err := c.hc.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	tok := ""
	if m := consoleCSRF.FindSubmatch(b); m != nil {
		tok = string(m[1])
	}
	return resp.StatusCode, string(b), tok
}

func (c *consoleClient) post(path string, form url.Values) *http.Response {
	c.t.Helper()
	resp, err := c.hc.PostForm(c.base+path, form)
	if err != nil {
		c.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (c *consoleClient) login(name, password string) *http.Response {
	c.t.Helper()
	_, _, tok := c.page("/console/login")
	return c.post("/console/login", url.Values{"csrf": {tok}, "name": {name}, "password": {password}})
}

// TestConsoleBrowser drives the console of the real binary in headless
// Chromium: logins refused and rate-limited, the auditor's verify and
// evidence bundle (checked with verify-bundle), the operator's kill switch
// (recorded naming them), a wrong role's 403, and a POST without the CSRF
// token refused (from a plain HTTP client with a session cookie too).
// With LINEGATE_SCREENSHOTS=1 it writes the pictures of docs/CONSOLE.md.
func TestConsoleBrowser(t *testing.T) {
	b := consoletest.New(t)
	w := startConsoleWorld(t, "")
	base := w.g.admin
	w.message(t, "Where is my parcel?")
	// A legal hold and a deletion request (of another user) for the
	// auditor's page.
	if code, body := adminDo(t, w.g, "/admin/holds", `{"channel": "demo", "reason": "case 2026-114"}`); code != 200 {
		t.Fatalf("hold: %d %s", code, body)
	}
	if code, body := adminDo(t, w.g, "/admin/subjects/user:Ud0d0000000000000000000000000d0d0/requests", `{"kind": "deletion", "channel": "demo"}`); code != 200 {
		t.Fatalf("deletion request: %d %s", code, body)
	}
	waitIntegrated(t, w.g)
	waitUntil(t, "an anchor", func() bool { return countAnchors(t, w.dir) > 0 })

	// The login page, a wrong password, the limit.
	if code := b.Open(t, base+"/console/"); code != 200 {
		t.Fatalf("/console/: %d", code)
	}
	b.Screenshot(t, consoleDocs, "login")
	for i := 0; i < 3; i++ {
		if code := b.Login(t, base, "carol", "wrong password"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i, code)
		}
	}
	if code := b.Login(t, base, "carol", consolePasswords["carol"]); code != http.StatusTooManyRequests {
		t.Fatalf("after 3 failures: %d, want 429", code)
	}
	if r := newConsoleClient(t, base).login("carol", consolePasswords["carol"]); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("plain client after 3 failures: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	time.Sleep(3100 * time.Millisecond) // the window passes

	// The auditor: verify from the page, then a bundle.
	if code := b.Login(t, base, "bob", consolePasswords["bob"]); code != 200 {
		t.Fatalf("bob's login: %d", code)
	}
	if b.Text(t, "#tree-size") == "0" {
		t.Error("the audit page shows an empty tree")
	}
	if page := b.Text(t, "main"); !strings.Contains(page, "case 2026-114") || !strings.Contains(page, "user:Ud0d0000000000000000000000000d0d0") ||
		strings.Contains(page, "No anchor yet") {
		t.Errorf("the audit page lacks the legal hold, the deletion request or the anchors:\n%s", page)
	}
	b.Click(t, "#verify")
	result := ""
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && result == ""; {
		time.Sleep(300 * time.Millisecond)
		r, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`(document.getElementById("verify-result") || {}).textContent || ""`))
		if err == nil {
			result = r
		}
	}
	if !strings.HasPrefix(result, "OK ") || strings.Contains(result, " 0 anchors") {
		t.Fatalf("verify from the console: %q", result)
	}
	b.Type(t, "#bundle-user", consoleUser)
	b.Screenshot(t, consoleDocs, "audit")
	zipped := b.Download(t, chromedp.Click(chromedp.CSS("#bundle-download")))
	bundle := unzipBundle(t, zipped)
	if code, out := runCLI(t, "verify-bundle", "-vkey", filepath.Join(w.dir, "data", "log.vkey"), bundle); code != 0 || !strings.HasPrefix(out, "OK ") || strings.HasPrefix(out, "OK 0 ") {
		t.Errorf("verify-bundle of the downloaded bundle = %d:\n%s", code, out)
	}
	if raw, err := os.ReadFile(filepath.Join(bundle, "manifest.json")); err != nil || !strings.Contains(string(raw), `"user": "`+consoleUser+`"`) && !strings.Contains(string(raw), `"user":"`+consoleUser+`"`) {
		t.Errorf("the bundle's manifest does not select the user: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(w.dir, "data", "console-tmp")); len(entries) != 0 {
		t.Errorf("the bundle stays on disk after the download: %d entries", len(entries))
	}
	// An auditor may not use the kill switch.
	if code := b.Open(t, base+"/console/ops"); code != http.StatusForbidden {
		t.Errorf("auditor on /console/ops: %d, want 403", code)
	}
	b.Click(t, "#logout")

	// The operator: the kill switch, with a reason.
	if code := b.Login(t, base, "carol", consolePasswords["carol"]); code != 200 {
		t.Fatalf("carol's login: %d", code)
	}
	waitUntil(t, "the monitor's first polls", func() bool {
		b.Open(t, base+"/console/ops")
		s := b.Text(t, "main")
		return strings.Contains(s, "in use") && strings.Contains(s, "of 1000")
	})
	if s := b.Text(t, "#kill-state"); s != "off" {
		t.Fatalf("kill switch: %q", s)
	}
	b.Type(t, "#kill-reason", "INC-2041: a rule answers with the wrong prices")
	b.Click(t, "#kill-toggle")
	if s := b.Text(t, "#kill-state"); s != "on" {
		t.Errorf("after the toggle, kill switch %q", s)
	}
	b.Screenshot(t, consoleDocs, "ops")
	if code := b.Open(t, base+"/console/audit"); code != http.StatusForbidden {
		t.Errorf("operator on /console/audit: %d, want 403", code)
	}
	if code := b.Open(t, base+"/console/inbox"); code != http.StatusForbidden {
		t.Errorf("operator on /console/inbox: %d, want 403", code)
	}

	// A POST without the CSRF token, from a client that holds a session.
	c := newConsoleClient(t, base)
	if r := c.login("carol", consolePasswords["carol"]); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("plain client login: %d", r.StatusCode)
	}
	if r := c.post("/console/ops/kill-switch", url.Values{"on": {"false"}, "reason": {"no token"}}); r.StatusCode != http.StatusForbidden {
		t.Errorf("POST without the CSRF token: %d, want 403", r.StatusCode)
	}
	_, _, tok := c.page("/console/ops")
	if r := c.post("/console/ops/kill-switch", url.Values{"on": {"false"}, "reason": {"wrong token"}, "csrf": {tok + "x"}}); r.StatusCode != http.StatusForbidden {
		t.Errorf("POST with a wrong CSRF token: %d, want 403", r.StatusCode)
	}
	if _, body := w.g.get(t, w.g.admin+"/metrics"); !strings.Contains(string(body), "linegate_kill_switch 1") {
		t.Error("the refused POSTs turned the kill switch off")
	}
	for _, want := range []string{`linegate_console_logins_total{outcome="failed"} 3`, `linegate_console_logins_total{outcome="limited"} 2`, `linegate_console_logins_total{outcome="ok"} 3`} {
		if _, body := w.g.get(t, w.g.admin+"/metrics"); !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	w.g.stop()

	kill := adminRecords(t, w.dir, "kill_switch")
	if len(kill) != 1 || kill[0].Detail["by"] != "carol" || kill[0].Detail["role"] != "operator" || kill[0].Detail["on"] != true ||
		kill[0].Detail["reason"] != "INC-2041: a rule answers with the wrong prices" {
		t.Errorf("kill switch records: %+v", kill)
	}
	if n := len(adminRecords(t, w.dir, "console_login_failed")); n != 3 {
		t.Errorf("%d failed logins recorded, want 3", n)
	}
	if r := adminRecords(t, w.dir, "console_verify_result"); len(r) != 1 || r[0].Detail["ok"] != true || r[0].Detail["by"] != "bob" {
		t.Errorf("verify result records: %+v", r)
	}
	if r := adminRecords(t, w.dir, "console_bundle"); len(r) != 1 || r[0].Detail["by"] != "bob" || r[0].Subject != "user:"+consoleUser {
		t.Errorf("bundle records: %+v", r)
	}
	for _, p := range consolePasswords {
		if strings.Contains(w.g.Logs(), p) {
			t.Error("the log holds a password")
		}
	}
	if strings.Contains(w.g.Logs(), "$argon2id$") {
		t.Error("the log holds a password hash")
	}
	if code, out := runCLI(t, "verify", "-config", w.g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
	// The incident timeline names who turned the kill switch on.
	out := filepath.Join(t.TempDir(), "incident")
	if code, o := runCLI(t, "incident", "export", "-config", w.g.cfgPath, "-from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "-out", out); code != 0 {
		t.Fatalf("incident export = %d:\n%s", code, o)
	}
	if tl, err := os.ReadFile(filepath.Join(out, "timeline.md")); err != nil || !strings.Contains(string(tl), "kill switch ON (reason: INC-2041: a rule answers with the wrong prices), by carol") {
		t.Errorf("the incident timeline does not name carol: %v", err)
	}
}

// unzipBundle extracts the bundle of a downloaded zip and returns its
// directory.
func unzipBundle(t *testing.T, file string) string {
	t.Helper()
	zr, err := zip.OpenReader(file)
	if err != nil {
		t.Fatalf("the download is not a zip: %v", err)
	}
	defer zr.Close()
	dir := t.TempDir()
	for _, f := range zr.File {
		if !strings.HasPrefix(f.Name, "bundle/") || strings.Contains(f.Name, "..") {
			t.Fatalf("unexpected entry %q", f.Name)
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "bundle")
}
