package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

// testCanaryGroup is the demo channel's canary group in these tests.
const testCanaryGroup = "C0123456789abcdef0123456789abcdef"

// canaryWorld is the simulator with the demo channel's canary group, whose
// member echoes what the bot pushes to it, and a gateway that answers
// through it.
type canaryWorld struct {
	api    *sim.API
	apiURL string
	g      *gateway
	dir    string
}

// startCanaryWorld starts the simulator and a gateway whose demo channel
// has the canary group, an echo rule (so that a marker a user pastes goes
// out again) and the simulator's webhook endpoint set to the gateway, as
// LINE's is.
func startCanaryWorld(t *testing.T, dir string, c gwConfig) *canaryWorld {
	t.Helper()
	w := &canaryWorld{dir: dir}
	w.api, w.apiURL = newCanarySim(t)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(`rules:
  - name: echo
    when: {event: [message], text: {prefix: "echo "}}
    reply: [{type: text, text: "you said: {{.Text}}"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.extra += fmt.Sprintf("line_api_base: %s\nrules_files: [%s]\n", w.apiURL, rulesFile)
	c.chanExtra += "    canary_group: " + testCanaryGroup + "\n"
	w.g = startGateway(t, dir, c)
	w.setEndpoint(t, w.g.webhook+"/webhook/demo")
	return w
}

// newCanarySim starts the simulator with the demo channel's canary group.
func newCanarySim(t *testing.T) (*sim.API, string) {
	api := sim.NewAPI(sim.Options{
		Channels:   []sim.Channel{{ID: "demo", AccessToken: "test-access-token", Secret: testSecret}},
		EchoGroups: []sim.EchoGroup{{Channel: "demo", GroupID: testCanaryGroup}},
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return api, srv.URL
}

// setEndpoint sets the channel's webhook URL in the simulator, as the
// console (or PUT /v2/bot/channel/webhook/endpoint) does.
func (w *canaryWorld) setEndpoint(t *testing.T, url string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"endpoint": url})
	req, err := http.NewRequest("PUT", w.apiURL+"/v2/bot/channel/webhook/endpoint", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-access-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("set webhook endpoint: %d", resp.StatusCode)
	}
}

// canary runs `linegate canary run` against the world's gateway.
func (w *canaryWorld) canary(t *testing.T, timeout string) (int, string) {
	t.Helper()
	return runCLI(t, "canary", "run", "-config", w.g.cfgPath, "-admin", w.g.admin, "-channel", "demo", "-timeout", timeout)
}

// canarySample returns the value of a sample of /metrics (-1 when absent).
func canarySample(t *testing.T, g *gateway, sample string) float64 {
	t.Helper()
	_, b := g.get(t, g.admin+"/metrics")
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// recordedActions returns the admin records of a data directory with the
// action given, in ledger order.
func recordedActions(t *testing.T, dir, action string) []record.Admin {
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

var canaryMarkerPattern = regexp.MustCompile(`lgcanary-[0-9a-f-]{36}`)

// TestCanaryRoundTrip: `linegate canary run` pushes a marker to the canary
// group through the running gateway, the simulator's group echoes it as a
// webhook, the pipeline sees it come back, and the command prints the
// round trip: also while the kill switch stops every other send. Each run
// is a ledger record and counted; the echo is not answered by the rules.
// A group that does not answer makes the command fail (exit 1) on its
// timeout.
func TestCanaryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := startCanaryWorld(t, dir, gwConfig{})
	code, out := w.canary(t, "10s")
	if code != 0 || !strings.Contains(out, "canary ok: lgcanary-") || !strings.Contains(out, " ms ") {
		t.Fatalf("canary run = %d:\n%s", code, out)
	}
	marker := canaryMarkerPattern.FindString(out)
	// The push went to the canary group, with the marker.
	pushed := false
	for _, c := range w.api.Calls() {
		if c.Path == "/v2/bot/message/push" && c.Status == 200 && bytes.Contains(c.Body, []byte(testCanaryGroup)) && bytes.Contains(c.Body, []byte(marker)) {
			pushed = true
		}
	}
	if !pushed {
		t.Errorf("no push of %s to the canary group in the simulator's calls", marker)
	}

	// With the kill switch on, the canary still goes to the canary group
	// (and only there): it is how the runbook checks before re-enabling.
	admin(t, w.g, "/admin/kill-switch", `{"on": true, "reason": "incident"}`)
	if code, out := w.canary(t, "10s"); code != 0 || !strings.Contains(out, "canary ok") {
		t.Fatalf("canary run with the kill switch on = %d:\n%s", code, out)
	}
	admin(t, w.g, "/admin/kill-switch", `{"on": false, "reason": "fixed"}`)

	// The Messaging API fails the push: the canary fails at once.
	setFaults := func(f string) {
		req, _ := http.NewRequest("PUT", w.apiURL+"/_sim/faults", strings.NewReader(f))
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	setFaults(`{"error_rate": 1}`)
	if code, out := w.canary(t, "10s"); code != 1 || !strings.Contains(out, "canary FAILED") || !strings.Contains(out, "push 500") {
		t.Fatalf("canary run with the push failing = %d:\n%s", code, out)
	}
	setFaults(`{}`)

	// A group that does not answer: the webhook goes nowhere.
	w.setEndpoint(t, "http://"+closedPort(t)+"/webhook/demo")
	start := time.Now()
	code, out = w.canary(t, "1s")
	if code != 1 || !strings.Contains(out, "canary TIMEOUT") {
		t.Fatalf("canary run with no echo = %d:\n%s", code, out)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("a 1s canary took %s", d)
	}
	if v := canarySample(t, w.g, `linegate_canary_runs_total{channel="demo",outcome="ok"}`); v != 2 {
		t.Errorf("canary ok runs = %v, want 2", v)
	}
	if v := canarySample(t, w.g, `linegate_canary_runs_total{channel="demo",outcome="timeout"}`); v != 1 {
		t.Errorf("canary timeouts = %v, want 1", v)
	}
	if v := canarySample(t, w.g, `linegate_canary_last_success_timestamp_seconds{channel="demo"}`); v < float64(start.Add(-time.Minute).Unix()) {
		t.Errorf("canary last success = %v", v)
	}
	if v := canarySample(t, w.g, `linegate_canary_runs_total{channel="demo",outcome="send_failed"}`); v != 1 {
		t.Errorf("canary failed pushes = %v, want 1", v)
	}
	if v := canarySample(t, w.g, `linegate_canary_leaks_total{channel="demo"}`); v != 0 {
		t.Errorf("canary leaks = %v, want 0", v)
	}
	// A canary on a channel without a canary group, or an unknown one, is
	// refused: a usage the operator must change.
	if code, out := runCLI(t, "canary", "run", "-config", w.g.cfgPath, "-admin", w.g.admin, "-channel", "nosuch"); code != 1 || !strings.Contains(out, "400") {
		t.Errorf("canary run on an unknown channel = %d:\n%s", code, out)
	}
	waitIdle(t, w.g)
	w.g.stop()

	runs := recordedActions(t, dir, "canary_run")
	if len(runs) != 4 {
		t.Fatalf("%d canary_run records, want 4", len(runs))
	}
	for i, want := range []string{"ok", "ok", "send_failed", "timeout"} {
		if runs[i].Detail["outcome"] != want || !canaryMarkerPattern.MatchString(fmt.Sprint(runs[i].Detail["marker"])) {
			t.Errorf("canary_run record %d: %v, want outcome %s", i, runs[i].Detail, want)
		}
	}
	if runs[0].Detail["remote"] == nil || !strings.Contains(w.g.Logs(), `"action":"canary_run"`) {
		t.Errorf("the canary run is not recorded and logged with who asked: %v", runs[0].Detail)
	}
	if _, ok := runs[0].Detail["round_trip_ms"].(float64); !ok || runs[0].Detail["marker"] != marker {
		t.Errorf("first canary_run record: %v", runs[0].Detail)
	}
	// The echoes were not answered: the only sends are the four pushes.
	for _, o := range outboundRecords(t, dir) {
		if o["rule"] != "canary" {
			t.Errorf("a send other than the canary's: %v", o)
		}
	}
	if n := len(recordedActions(t, dir, "canary_leak")); n != 0 {
		t.Errorf("%d canary_leak records, want 0", n)
	}
	if code, out := runCLI(t, "verify", "-config", w.g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestCanaryLeak: a marker that appears in another conversation (a user
// pasting it) is a leak, both as it comes in and as the echo rule sends
// it back out: each is a canary_leak record, counted, and logged without
// the message text or the user's id.
func TestCanaryLeak(t *testing.T) {
	dir := t.TempDir()
	w := startCanaryWorld(t, dir, gwConfig{})
	code, out := w.canary(t, "10s")
	if code != 0 {
		t.Fatalf("canary run = %d:\n%s", code, out)
	}
	marker := canaryMarkerPattern.FindString(out)
	const user = "U4af4980629f1b2c3d4e5f60718293a4b"
	sendText(t, w.g, user, "", "echo secret-phrase "+marker)
	waitIdle(t, w.g)
	if v := canarySample(t, w.g, `linegate_canary_leaks_total{channel="demo"}`); v != 2 {
		t.Errorf("canary leaks = %v, want 2 (in, and out again)", v)
	}
	// A text without a marker, from the same user: no leak.
	sendText(t, w.g, user, "", "echo hello")
	waitIdle(t, w.g)
	if v := canarySample(t, w.g, `linegate_canary_leaks_total{channel="demo"}`); v != 2 {
		t.Errorf("canary leaks after a plain text = %v, want 2", v)
	}
	// Text shaped like a marker that no run sent (anyone can type one):
	// no leak, so that no customer can page the on-call.
	sendText(t, w.g, user, "", "lgcanary-914e0857-7d63-44b7-84f5-e8c73a7e4d32")
	waitIdle(t, w.g)
	if v := canarySample(t, w.g, `linegate_canary_leaks_total{channel="demo"}`); v != 2 {
		t.Errorf("canary leaks after a marker no run sent = %v, want 2", v)
	}
	lines := failureLines(t, w.g, "canary_leak", "demo")
	if len(lines) == 0 {
		t.Errorf("no canary_leak log line:\n%s", w.g.Logs())
	}
	w.g.stop()
	for _, s := range []string{"secret-phrase", user, testSecret} {
		if strings.Contains(w.g.Logs(), s) {
			t.Errorf("the log holds %q", s)
		}
	}
	leaks := recordedActions(t, dir, "canary_leak")
	if len(leaks) != 2 {
		t.Fatalf("%d canary_leak records, want 2", len(leaks))
	}
	dirs := map[string]bool{}
	for _, l := range leaks {
		dirs[fmt.Sprint(l.Detail["direction"])] = true
		if ms, _ := l.Detail["markers"].([]any); len(ms) != 1 || ms[0] != marker {
			t.Errorf("canary_leak record's markers: %v, want [%s]", l.Detail["markers"], marker)
		}
		if l.Subject != "user:"+user {
			t.Errorf("canary_leak record's subject %q, want user:%s", l.Subject, user)
		}
	}
	if !dirs["inbound"] || !dirs["outbound"] {
		t.Errorf("leak directions %v, want inbound and outbound", dirs)
	}
	if code, out := runCLI(t, "verify", "-config", w.g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestCanaryWithSimAPI runs the runbook's canary as an operator would
// against the simulator: `linegate sim api -config` knows the channel's
// canary group and its webhook URL from the gateway's config, and
// `linegate canary run -config` finds the admin listener and its token
// there too.
func TestCanaryWithSimAPI(t *testing.T) {
	dir := t.TempDir()
	webhookAddr, adminAddr, apiAddr := closedPort(t), closedPort(t), closedPort(t)
	cfg := filepath.Join(dir, "linegate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir: %s
listen: %s
admin_listen: %s
admin_token: test-admin-token
line_api_base: http://%s
log:
  origin: %s
  checkpoint_interval: 50ms
logging: {format: json}
channels:
  - id: demo
    secret: %q
    access_token: test-access-token
    canary_group: %s
`, filepath.Join(dir, "data"), webhookAddr, adminAddr, apiAddr, testOrigin, testSecret, testCanaryGroup)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"sim", "api", "-listen", apiAddr, "-config", cfg}, {"serve", "-config", cfg}} {
		cmd := exec.Command(linegateBin, args...)
		var logs bytes.Buffer
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if t.Failed() {
				t.Logf("linegate %s:\n%s", args[0], logs.String())
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := runCLI(t, "health", "-url", "http://"+adminAddr+"/readyz")
		resp, err := http.Get("http://" + apiAddr + "/_sim/calls")
		if err == nil {
			resp.Body.Close()
		}
		if code == 0 && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway or the simulator did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, out := runCLI(t, "canary", "run", "-config", cfg, "-channel", "demo"); code != 0 || !strings.Contains(out, "canary ok") {
		t.Fatalf("canary run = %d:\n%s", code, out)
	}
}

// TestCanaryReplicas: with two replicas on one PostgreSQL database, the
// canary run through one of them completes when its marker comes back
// through the other (LINE's webhook URL names the other one), whichever
// replica's pipeline handles the echo.
func TestCanaryReplicas(t *testing.T) {
	w := &canaryWorld{}
	w.api, w.apiURL = newCanarySim(t)
	rs := startReplicas(t, 2, gwConfig{extra: fmt.Sprintf("line_api_base: %s\n", w.apiURL), chanExtra: "    canary_group: " + testCanaryGroup + "\n"})
	w.g = rs.gws[1]
	w.setEndpoint(t, rs.gws[1].webhook+"/webhook/demo")
	for i := range 3 {
		code, out := runCLI(t, "canary", "run", "-config", rs.gws[0].cfgPath, "-admin", rs.gws[0].admin, "-channel", "demo", "-timeout", "15s")
		if code != 0 || !strings.Contains(out, "canary ok") {
			t.Fatalf("canary run %d through replica 0, back through replica 1 = %d:\n%s", i, code, out)
		}
	}
	echoes := 0
	for _, r := range readSharedLedger(t, rs.dsn, filepath.Join(rs.shared, "kek")) {
		var a record.Admin
		if r.leaf.Kind == ledger.KindAdmin && json.Unmarshal(r.body, &a) == nil && a.Action == "canary_echo" {
			echoes++
		}
	}
	t.Logf("%d of 3 echoes handled by the other replica", echoes)
}
