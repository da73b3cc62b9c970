package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sim"
)

// lineWorld is the fake LINE platform of a channel "demo" for a gateway
// under test.
func lineWorld(t *testing.T, ch sim.Channel) (*sim.API, string) {
	ch.ID, ch.AccessToken, ch.Secret = "demo", "test-access-token", testSecret
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{ch}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return api, srv.URL
}

// metric returns the value of a sample of the gateway's /metrics, such as
// `linegate_webhook_endpoint_active{channel="demo"}`.
func metric(t *testing.T, g *gateway, sample string) (float64, bool) {
	t.Helper()
	code, body := g.get(t, g.admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f, true
		}
	}
	return 0, false
}

// waitMetric waits until a sample of /metrics satisfies ok.
func waitMetric(t *testing.T, g *gateway, sample, want string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, found := metric(t, g, sample)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v), want %s", sample, v, found, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminActions returns the admin records of a data directory whose
// action is one of those given, in ledger order.
func adminActions(t *testing.T, dir string, actions ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindAdmin {
			continue
		}
		var a struct {
			Action string         `json:"action"`
			Detail map[string]any `json:"detail"`
		}
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatalf("admin record: %v: %s", err, r.body)
		}
		for _, want := range actions {
			if a.Action == want {
				a.Detail["action"] = a.Action
				out = append(out, a.Detail)
			}
		}
	}
	return out
}

// TestWebhookControl runs linegate webhook get, set and test against the
// simulator beside a running gateway, and scrapes the monitor's metrics:
// LINE's webhook URL in use and the configured one, then moved to the
// gateway's own URL (tested: LINE's test webhook reaches the gateway and
// is recorded), a blue/green switch to a dead URL that fails its test
// and is rolled back, the console's "Use webhook" switched off, and
// LINE's clock ahead of ours. Every change and test is a ledger record,
// in order, and verify passes.
func TestWebhookControl(t *testing.T) {
	const configured = "https://gw.example.com/webhook/demo"
	api, apiURL := lineWorld(t, sim.Channel{Endpoint: configured})
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{
		extra:     fmt.Sprintf("line_api_base: %s\nmonitor:\n  webhook_every: 100ms\n  quota_every: 100ms\n", apiURL),
		chanExtra: "    webhook_url: " + configured + "\n",
	})
	active, matches := `linegate_webhook_endpoint_active{channel="demo"}`, `linegate_webhook_endpoint_url_matches{channel="demo"}`
	waitMetric(t, g, active, "1", func(v float64) bool { return v == 1 })
	waitMetric(t, g, matches, "1", func(v float64) bool { return v == 1 })
	waitMetric(t, g, `linegate_webhook_endpoint_checked_timestamp_seconds{channel="demo"}`, "about now",
		func(v float64) bool { return math.Abs(v-float64(time.Now().Unix())) < 5 })

	code, out := runCLI(t, "webhook", "get", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, "demo: "+configured+", in use") {
		t.Errorf("webhook get = %d:\n%s", code, out)
	}

	// Move LINE to the gateway's own URL, with a test: LINE's test
	// webhook reaches the gateway, which records it.
	own := g.webhook + "/webhook/demo"
	code, out = runCLI(t, "webhook", "set", "-config", g.cfgPath, "-url", own, "-test", "-reason", "CHG-1")
	if code != 0 || !strings.Contains(out, "webhook URL set to "+own) || !strings.Contains(out, "webhook test OK: status 200, reason OK") {
		t.Fatalf("webhook set -test to the gateway = %d:\n%s", code, out)
	}
	waitMetric(t, g, matches, "0 (moved from the configured URL)", func(v float64) bool { return v == 0 })
	code, out = runCLI(t, "webhook", "get", "-config", g.cfgPath, "-json")
	var got []struct {
		Channel, Endpoint string
		Active            bool
		Matches           *bool
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 1 || got[0].Endpoint != own || !got[0].Active || got[0].Matches == nil || *got[0].Matches {
		t.Errorf("webhook get -json = %d %v:\n%s", code, err, out)
	}

	// A blue/green switch to a URL nothing answers: the test fails with
	// LINE's reason, and the gateway's URL is put back.
	dead := "http://" + freePort(t) + "/webhook/demo"
	code, out = runCLI(t, "webhook", "set", "-config", g.cfgPath, "-url", dead, "-test")
	if code != 1 || !strings.Contains(out, "reason could_not_connect") || !strings.Contains(out, "the previous URL "+own+" is back") {
		t.Errorf("webhook set -test to a dead URL = %d:\n%s", code, out)
	}
	if v, err := simEndpoint(apiURL); err != nil || v != own {
		t.Errorf("after the rollback LINE has %q (%v), want %s", v, err, own)
	}
	// A test of a URL that answers an error: LINE's status and reason.
	code, out = runCLI(t, "webhook", "test", "-config", g.cfgPath, "-url", g.webhook+"/webhook/nope")
	if code != 1 || !strings.Contains(out, "webhook test FAILED: status 404, reason error_status_code") {
		t.Errorf("webhook test of a 404 = %d:\n%s", code, out)
	}
	code, out = runCLI(t, "webhook", "test", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, "webhook test OK") {
		t.Errorf("webhook test = %d:\n%s", code, out)
	}
	if code, out = runCLI(t, "webhook", "set", "-config", g.cfgPath, "-channel", "other", "-url", own); code != 2 {
		t.Errorf("webhook set on a channel not in the config = %d:\n%s", code, out)
	}

	// Back to the configured URL: webhook set without -url.
	code, out = runCLI(t, "webhook", "set", "-config", g.cfgPath, "-channel", "demo")
	if code != 0 || !strings.Contains(out, "webhook URL set to "+configured) {
		t.Errorf("webhook set to the configured URL = %d:\n%s", code, out)
	}
	waitMetric(t, g, matches, "1 again", func(v float64) bool { return v == 1 })

	// The operator switches "Use webhook" off in the console.
	if err := api.SetWebhookActive("demo", false); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, g, active, "0 (webhook switched off)", func(v float64) bool { return v == 0 })
	code, out = runCLI(t, "webhook", "get", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, "demo: "+configured+", NOT in use") {
		t.Errorf("webhook get, switched off = %d:\n%s", code, out)
	}
	api.SetWebhookActive("demo", true)
	waitMetric(t, g, active, "1 again", func(v float64) bool { return v == 1 })

	// LINE's clock, 5 s ahead of ours.
	drift := `linegate_clock_drift_seconds{channel="demo"}`
	waitMetric(t, g, drift, "about 0", func(v float64) bool { return math.Abs(v) < 1 })
	api.SetFaults(sim.Faults{ClockOffset: 5 * time.Second})
	waitMetric(t, g, drift, "about 5", func(v float64) bool { return math.Abs(v-5) < 1 })
	api.SetFaults(sim.Faults{ClockOffset: -3 * time.Second})
	waitMetric(t, g, drift, "about -3", func(v float64) bool { return math.Abs(v+3) < 1 })

	// A poll that fails is logged, rate limited, and serve goes on.
	api.SetFaults(sim.Faults{ErrorRate: 1})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.Logs(), "reading the webhook endpoint from LINE failed") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	api.SetFaults(sim.Faults{})
	if n := strings.Count(g.Logs(), "reading the webhook endpoint from LINE failed"); n < 1 || n > 2 {
		t.Errorf("%d log lines of failed polls, want 1 or 2 (rate limited)", n)
	}
	if code, _ := g.get(t, g.webhook+"/healthz"); code != 200 {
		t.Errorf("/healthz after failed polls = %d", code)
	}
	g.stop()

	var seq []string
	for _, d := range adminActions(t, dir, "webhook_set", "webhook_test", "webhook_rollback") {
		s := fmt.Sprintf("%s %v", d["action"], d["endpoint"])
		if d["action"] == "webhook_test" {
			s = fmt.Sprintf("%s %v %v", d["action"], d["success"], d["line_reason"])
		}
		seq = append(seq, s)
		if d["action"] == "webhook_test" && d["success"] == false && d["endpoint"] == nil {
			t.Errorf("failed test recorded without the URL tested: %v", d)
		}
		if d["channel"] != "demo" || d["x_line_request_id"] == nil {
			t.Errorf("record without its channel or LINE's request id: %v", d)
		}
	}
	want := []string{
		"webhook_set " + own, "webhook_test true OK",
		"webhook_set " + dead, "webhook_test false could_not_connect", "webhook_rollback " + own,
		"webhook_test false error_status_code", "webhook_test true OK", "webhook_set " + configured,
	}
	if strings.Join(seq, "\n") != strings.Join(want, "\n") {
		t.Errorf("webhook records:\n%s\nwant:\n%s", strings.Join(seq, "\n"), strings.Join(want, "\n"))
	}
	// LINE's test webhooks reached the gateway, signed: recorded.
	tests := 0
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindWebhook && bytes.Contains(r.body, []byte(`"events":[]`)) {
			tests++
		}
	}
	if tests != 2 {
		t.Errorf("%d test webhooks recorded, want 2", tests)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
	if strings.Contains(g.Logs(), "test-access-token") || strings.Contains(g.Logs(), testSecret) {
		t.Error("the log holds the access token or the secret")
	}
}

// simEndpoint reads the webhook URL the simulator has for demo.
func simEndpoint(apiURL string) (string, error) {
	resp, err := httpClient.Get(apiURL + "/_sim/channels/demo")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct{ Endpoint string }
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v.Endpoint, err
}

// TestQuotaHold: serve polls the quota and consumption into metrics; once
// consumption reaches the channel's quota_budget share of the quota,
// promotional pushes are recorded as held back (reason quota) and the
// start of the hold is an admin record, while transactional pushes and
// promotional replies (which cost no quota) go on.
func TestQuotaHold(t *testing.T) {
	api, apiURL := lineWorld(t, sim.Channel{Quota: 10})
	dir := t.TempDir()
	rules := `consent:
  opt_in_keywords: [JOIN]
rules:
  - name: deals
    class: promotional
    push: true
    when: {event: [message], text: {exact: deals}}
    reply: [{type: text, text: "20% off"}]
  - name: news
    class: promotional
    when: {event: [message], text: {exact: news}}
    reply: [{type: text, text: "New in store"}]
  - name: status
    push: true
    when: {event: [message], text: {exact: status}}
    reply: [{type: text, text: "Shipped"}]
`
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, dir, gwConfig{
		extra:     fmt.Sprintf("line_api_base: %s\nrules_files: [%s]\nmonitor:\n  webhook_every: 0s\n  quota_every: 100ms\n", apiURL, filepath.Join(dir, "rules.yaml")),
		chanExtra: "    quota_budget: 0.5\n",
	})
	w := &replyWorld{api: api}
	const user = "U00000000000000000000000000000042"
	limit, consumed := `linegate_quota_limit_messages{channel="demo"}`, `linegate_quota_consumed_messages{channel="demo"}`
	waitMetric(t, g, limit, "10", func(v float64) bool { return v == 10 })
	if v, ok := metric(t, g, `linegate_quota_budget_ratio{channel="demo"}`); !ok || v != 0.5 {
		t.Errorf("budget ratio %v %v", v, ok)
	}
	if _, ok := metric(t, g, `linegate_webhook_endpoint_active{channel="demo"}`); ok {
		t.Error("webhook_every: 0s still polls the webhook endpoint")
	}
	if code, out := runCLI(t, "webhook", "get", "-config", g.cfgPath); code != 0 || !strings.Contains(out, "demo: no webhook URL set on LINE") {
		t.Errorf("webhook get, none set = %d:\n%s", code, out)
	}
	w.send(t, g, user, "message", "JOIN")
	w.send(t, g, user, "message", "deals") // under budget: pushed
	waitIdle(t, g)
	waitMetric(t, g, consumed, "1", func(v float64) bool { return v == 1 })

	// Other sends of the month reach half the quota.
	five := int64(5)
	if err := api.Control("demo", sim.ChannelControl{Consumed: &five}); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, g, consumed, "5", func(v float64) bool { return v == 5 })
	w.send(t, g, user, "message", "deals")  // held back
	w.send(t, g, user, "message", "status") // transactional: pushed
	w.send(t, g, user, "message", "news")   // promotional reply: free, sent
	waitIdle(t, g)
	if v := mustMetric(t, g, `linegate_outbound_sends_total{channel="demo",endpoint="push",outcome="held"}`); v != 1 {
		t.Errorf("%v held pushes in the metrics, want 1", v)
	}
	// The month turns: consumption back to 0, the hold ends.
	zero := int64(0)
	api.Control("demo", sim.ChannelControl{Consumed: &zero})
	waitMetric(t, g, consumed, "0", func(v float64) bool { return v == 0 })
	w.send(t, g, user, "message", "deals") // pushed again
	waitIdle(t, g)
	g.stop()

	var got []string
	for _, o := range outboundRecords(t, dir) {
		s := fmt.Sprintf("%v %v %v %v", o["rule"], o["endpoint"], o["class"], o["outcome"])
		if o["outcome"] == "held" {
			if r, _ := o["reason"].(string); !strings.HasPrefix(r, "quota: 5 of 10 messages") {
				t.Errorf("held with reason %q", r)
			}
		}
		got = append(got, s)
	}
	want := []string{
		"deals push promotional sent",
		"deals push promotional held",
		"status push transactional sent",
		"news reply promotional sent",
		"deals push promotional sent",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("outbound records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var holds []string
	for _, d := range adminActions(t, dir, "quota_hold") {
		holds = append(holds, fmt.Sprintf("%v %v/%v", d["on"], d["consumed"], d["limit"]))
	}
	if len(holds) != 2 || !strings.HasPrefix(holds[0], "true 5/10") || !strings.HasPrefix(holds[1], "false 0/10") {
		t.Errorf("quota_hold records %v, want the start at 5/10 and the end at 0/10", holds)
	}
	if n := w.apiCalls("/v2/bot/message/push"); n != 3 {
		t.Errorf("%d pushes reached LINE, want 3", n)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

func mustMetric(t *testing.T, g *gateway, sample string) float64 {
	t.Helper()
	v, ok := metric(t, g, sample)
	if !ok {
		t.Fatalf("/metrics lacks %s", sample)
	}
	return v
}

// TestSimAPIWebhookQuota runs `linegate sim api` with a gateway config:
// it knows the channel's webhook_url and takes -quota, and webhook get
// reads them through LINE's API.
func TestSimAPIWebhookQuota(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	const configured = "https://gw.example.com/webhook/demo"
	cfg := writeConfig(t, dir, gwConfig{extra: "line_api_base: http://" + addr + "\n", chanExtra: "    webhook_url: " + configured + "\n"})
	cmd := exec.Command(linegateBin, "sim", "api", "-listen", addr, "-config", cfg, "-quota", "7")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var quota map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/bot/message/quota", nil)
		req.Header.Set("Authorization", "Bearer test-access-token")
		resp, err := httpClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&quota)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || resp.Header.Get("Date") == "" {
				t.Fatalf("quota: %d %v %v", resp.StatusCode, err, resp.Header)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sim api did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if quota["type"] != "limited" || quota["value"] != float64(7) {
		t.Errorf("quota %v", quota)
	}
	if code, out := runCLI(t, "webhook", "get", "-config", cfg); code != 0 || !strings.Contains(out, "demo: "+configured+", in use") {
		t.Errorf("webhook get = %d:\n%s", code, out)
	}
}

// TestMonitorConfigMistakes: the monitor's and the channels' LINE keys
// are checked, each mistake named with its line.
func TestMonitorConfigMistakes(t *testing.T) {
	const good = "log:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"budget over 1", good + "    quota_budget: 90\n", `bad.yaml:6: channels[0].quota_budget: 90: want a share of the quota between 0 and 1`},
		{"negative budget", good + "    quota_budget: -0.1\n", `bad.yaml:6: channels[0].quota_budget: -0.1: want a share`},
		{"webhook_url not a URL", good + "    webhook_url: gw.example.com/webhook/demo\n", `bad.yaml:6: channels[0].webhook_url: "gw.example.com/webhook/demo": want an https URL`},
		{"negative poll", "monitor:\n  webhook_every: -1m\n" + good, `bad.yaml:2: monitor.webhook_every: -1m0s: want a duration such as 1m`},
		{"misspelt key", good + "    quota_budge: 0.9\n", `bad.yaml:6: channels[0].quota_budge: unknown key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfg)
			if out := stdout + stderr; code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("config check = %d, want 1 and %q:\n%s", code, tc.want, out)
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "good.yaml")
	if err := os.WriteFile(cfg, []byte("monitor: {webhook_every: 30s, quota_every: 0s}\n"+good+"    webhook_url: https://gw.example.com/webhook/demo\n    quota_budget: 0.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfg); code != 0 {
		t.Errorf("config check of a good config = %d:\n%s%s", code, stdout, stderr)
	}
}

// TestWebhookHelp: webhook and its subcommands print their usage with
// -h, name their own flags, exit 0 and create nothing.
func TestWebhookHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"webhook"}, nil},
		{[]string{"webhook", "get"}, []string{"channel", "config", "json"}},
		{[]string{"webhook", "set"}, []string{"channel", "config", "reason", "test", "url"}},
		{[]string{"webhook", "test"}, []string{"channel", "config", "url"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			code, stdout, stderr := runIn(t, dir, nil, append(tc.args, "-h")...)
			if code != 0 || !strings.HasPrefix(stdout, "Usage: linegate "+strings.Join(tc.args, " ")) {
				t.Fatalf("exit %d:\n%s%s", code, stdout, stderr)
			}
			var got []string
			for _, m := range usageFlag.FindAllStringSubmatch(stdout, -1) {
				got = append(got, m[1])
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("flags %v, want %v:\n%s", got, tc.want, stdout)
			}
			if files := filesIn(t, dir); len(files) > 0 {
				t.Errorf("created %v", files)
			}
		})
	}
	if code, _, stderr := runIn(t, t.TempDir(), nil, "webhook", "set", "-config", "x.yaml", "stray"); code != 2 {
		t.Errorf("a stray argument: exit %d:\n%s", code, stderr)
	}
}

// TestWebhookRollbackRetries: the new URL fails LINE's test, and at that
// moment LINE fails every call for a second: the previous URL is put back
// all the same, by a later attempt, and each attempt is recorded.
func TestWebhookRollbackRetries(t *testing.T) {
	const previous = "https://gw.example.com/webhook/demo"
	api, apiURL := lineWorld(t, sim.Channel{Endpoint: previous})
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{extra: fmt.Sprintf("line_api_base: %s\nmonitor:\n  webhook_every: 0s\n  quota_every: 0s\n", apiURL)})
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.SetFaults(sim.Faults{ErrorRate: 1})
		time.AfterFunc(time.Second, func() { api.SetFaults(sim.Faults{}) })
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer bad.Close()
	code, out := runCLI(t, "webhook", "set", "-config", g.cfgPath, "-url", bad.URL+"/hook", "-test")
	if code != 1 || !strings.Contains(out, "putting "+previous+" back failed") || !strings.Contains(out, "the previous URL "+previous+" is back") {
		t.Errorf("webhook set -test while LINE fails for a moment = %d:\n%s", code, out)
	}
	if v, err := simEndpoint(apiURL); err != nil || v != previous {
		t.Errorf("after the rollback LINE has %q (%v), want %s", v, err, previous)
	}
	g.stop()
	var failed, ok int
	for _, a := range adminActions(t, dir, "webhook_rollback") {
		if a["ok"] == true {
			ok++
		} else {
			failed++
		}
	}
	if failed == 0 || ok != 1 {
		t.Errorf("rollback records: %d failed, %d ok; want at least one failed, then one ok", failed, ok)
	}
}
