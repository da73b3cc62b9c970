package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// alertmanagerNotification is a notification as Alertmanager's webhook
// receiver sends it (version 4): one alert firing, one resolved.
const alertmanagerNotification = `{"receiver":"linegate-ledger","status":"firing","alerts":[` +
	`{"status":"firing","labels":{"alertname":"LinegateKillSwitchLeftOn","channel":"demo","instance":"127.0.0.1:8081","job":"linegate","severity":"warning"},` +
	`"annotations":{"summary":"The kill switch has been on for over an hour.","runbook_url":"docs/RUNBOOK.md#kill-switch-left-on"},` +
	`"startsAt":"2026-12-02T10:00:00.5Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=linegate_kill_switch","fingerprint":"6b0e3a7c1d2f4e59"},` +
	`{"status":"resolved","labels":{"alertname":"LinegateSignatureFailures","channel":"demo","job":"linegate","severity":"critical"},` +
	`"annotations":{"summary":"Signature failures above 1% of webhooks."},` +
	`"startsAt":"2026-12-02T09:50:00Z","endsAt":"2026-12-02T09:58:30Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"0c1d2e3f40516273"}],` +
	`"groupLabels":{"alertname":"LinegateKillSwitchLeftOn"},"commonLabels":{"job":"linegate"},"commonAnnotations":{},` +
	`"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{}:{alertname=\"LinegateKillSwitchLeftOn\"}","truncatedAlerts":0}`

// TestAlertmanagerReceiver posts an Alertmanager notification to the real
// binary's admin listener: without the token it is refused; with it, each
// alert is an admin record that tail reads back, counted in
// linegate_alerts_received_total; a malformed one is 400; and the ledger
// verifies.
func TestAlertmanagerReceiver(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	post := func(body, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", g.admin+"/admin/alerts", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post(alertmanagerNotification, ""); code != 401 {
		t.Errorf("alerts without the token = %d, want 401", code)
	}
	if code, body := post(alertmanagerNotification, "test-admin-token"); code != 200 || !strings.Contains(body, `"recorded":2`) {
		t.Fatalf("alerts = %d %s", code, body)
	}
	if code, _ := post(`{"version":"4","alerts":[{`, "test-admin-token"); code != 400 {
		t.Errorf("a malformed notification = %d, want 400", code)
	}
	_, metrics := g.get(t, g.admin+"/metrics")
	for _, want := range []string{
		`linegate_alerts_received_total{status="firing"} 1`,
		`linegate_alerts_received_total{status="resolved"} 1`,
		`linegate_alerts_received_total{status="invalid"} 1`,
		`linegate_alerts_received_total{status="unrecorded"} 0`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// tail reads the records beside the running gateway.
	code, stdout, stderr := runIn(t, dir, nil, "tail", "-config", g.cfgPath, "-n", "100", "-json")
	if code != 0 {
		t.Fatalf("tail -json = %d:\n%s%s", code, stdout, stderr)
	}
	type adminBody struct {
		Action  string
		Subject string
		Detail  struct {
			Alertname   string            `json:"alertname"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
			Fingerprint string            `json:"fingerprint"`
			StartsAt    string            `json:"starts_at"`
			EndsAt      string            `json:"ends_at"`
		}
	}
	var alerts []adminBody
	var indexes []uint64
	for line := range strings.Lines(stdout) {
		var l struct {
			Index   uint64
			Kind    string
			Channel string
			Body    json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("tail -json line: %v: %s", err, line)
		}
		var b adminBody
		if l.Kind != "admin" || json.Unmarshal(l.Body, &b) != nil || !strings.HasPrefix(b.Action, "alert_") {
			continue
		}
		if l.Channel != "demo" {
			t.Errorf("alert record %d: channel %q, want demo (its channel label)", l.Index, l.Channel)
		}
		alerts = append(alerts, b)
		indexes = append(indexes, l.Index)
	}
	if len(alerts) != 2 {
		t.Fatalf("%d alert records, want 2:\n%s", len(alerts), stdout)
	}
	if indexes[1] != indexes[0]+1 {
		t.Errorf("the alerts of one notification are records %v, not one commit's consecutive records", indexes)
	}
	f, r := alerts[0], alerts[1]
	if f.Action != "alert_firing" || f.Detail.Alertname != "LinegateKillSwitchLeftOn" || f.Detail.Fingerprint != "6b0e3a7c1d2f4e59" ||
		f.Detail.StartsAt != "2026-12-02T10:00:00.5Z" || f.Detail.EndsAt != "" || f.Detail.Labels["severity"] != "warning" ||
		f.Detail.Annotations["runbook_url"] != "docs/RUNBOOK.md#kill-switch-left-on" {
		t.Errorf("firing alert recorded as %+v", f)
	}
	if r.Action != "alert_resolved" || r.Detail.Alertname != "LinegateSignatureFailures" || r.Detail.EndsAt != "2026-12-02T09:58:30Z" {
		t.Errorf("resolved alert recorded as %+v", r)
	}
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestDashboardGauges checks the gauges the dashboard adds to what the
// components export: a channel's dry-run state, as the admin API sets it,
// and the time of the latest checkpoint; and the zeros the alert rules
// need.
func TestDashboardGauges(t *testing.T) {
	g := startGateway(t, t.TempDir(), gwConfig{})
	start := time.Now()
	if code := g.post(t, testSecret, []byte(`{"destination":"U1","events":[]}`)); code != 200 {
		t.Fatalf("webhook = %d", code)
	}
	g.waitTreeSize(t, 1)
	gauge := func(name string) float64 {
		t.Helper()
		_, metrics := g.get(t, g.admin+"/metrics")
		for line := range strings.Lines(string(metrics)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		t.Fatalf("/metrics lacks %s:\n%s", name, metrics)
		return 0
	}
	// Counters the alert rules take increase() of are there from the
	// start, so that their first increment is seen.
	for _, c := range []string{
		`linegate_pipeline_duplicate_message_ids_total{channel="demo"}`,
		`linegate_pipeline_clock_skew_total{channel="demo"}`,
		`linegate_webhook_requests_total{channel="demo",outcome="unavailable"}`,
		`linegate_webhook_signature_failures_total{channel="demo"}`,
	} {
		if v := gauge(c); v != 0 {
			t.Errorf("%s = %v, want 0", c, v)
		}
	}
	if v := gauge(`linegate_dry_run{channel="demo"}`); v != 0 {
		t.Errorf("dry-run gauge = %v before dry-run, want 0", v)
	}
	req, err := http.NewRequest("POST", g.admin+"/admin/dry-run", strings.NewReader(`{"channel":"demo","on":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /admin/dry-run = %d", resp.StatusCode)
	}
	if v := gauge(`linegate_dry_run{channel="demo"}`); v != 1 {
		t.Errorf("dry-run gauge = %v after dry-run on, want 1", v)
	}
	ts := gauge("linegate_ledger_checkpoint_timestamp_seconds")
	if at := time.UnixMilli(int64(ts * 1000)); at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
		t.Errorf("checkpoint timestamp %v, want between %v and now", at, start)
	}
}

// TestVerifyMetricsFile runs verify -metrics-file as a timer would, on a
// ledger that verifies and then against another log's key: the file says
// when it ran, whether it passed, and how many records it checked.
func TestVerifyMetricsFile(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for range 3 {
		if code := g.post(t, testSecret, []byte(`{"destination":"U1","events":[]}`)); code != 200 {
			t.Fatalf("webhook = %d", code)
		}
	}
	g.stop()
	prom := filepath.Join(dir, "linegate-verify.prom")
	read := func() map[string]float64 {
		t.Helper()
		b, err := os.ReadFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for line := range strings.Lines(string(b)) {
			if name, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && !strings.HasPrefix(name, "#") {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%q: %v", line, err)
				}
				m[name] = f
			}
		}
		return m
	}
	start := float64(time.Now().Unix())
	if code, out := runCLI(t, "verify", "-config", g.cfgPath, "-metrics-file", prom); code != 0 {
		t.Fatalf("verify = %d:\n%s", code, out)
	}
	m := read()
	if m["linegate_verify_ok"] != 1 || m["linegate_verify_records"] < 3 || m["linegate_verify_last_run_timestamp_seconds"] < start {
		t.Errorf("after a passing verify: %v", m)
	}
	other := t.TempDir()
	if code, out := runCLI(t, "keygen", "-out", other, "-origin", testOrigin); code != 0 {
		t.Fatalf("keygen = %d:\n%s", code, out)
	}
	code, out := runCLI(t, "verify", "-config", g.cfgPath, "-vkey", filepath.Join(other, "log.vkey"), "-metrics-file", prom)
	if code != 1 {
		t.Fatalf("verify against another key = %d, want 1:\n%s", code, out)
	}
	if m := read(); m["linegate_verify_ok"] != 0 || m["linegate_verify_records"] != 0 {
		t.Errorf("after a failing verify: %v", m)
	}
	if code, _ := runCLI(t, "verify", "-config", g.cfgPath, "-data", dir, "-metrics-file", prom); code != 2 {
		t.Errorf("verify with -config and -data = %d, want 2 (usage)", code)
	}
	if m := read(); m["linegate_verify_ok"] != 0 {
		t.Errorf("a usage error rewrote the metrics file: %v", m)
	}
}
