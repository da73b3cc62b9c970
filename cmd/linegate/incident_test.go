package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/incident"
)

// TestIncidentExport is an incident, scripted: the kill switch goes on, an
// alert comes in from Alertmanager, webhooks with bad signatures come in,
// the webhook is moved to a URL that fails LINE's test (and goes back by
// itself) and set again, the canary runs (through the kill switch, to the
// canary group), the kill switch goes off, and the Messaging API fails a
// reply. `linegate incident export` over the period lists each in order,
// in timeline.json and timeline.md, with the records they come from;
// verify-bundle passes on its evidence, which holds exactly those records.
func TestIncidentExport(t *testing.T) {
	dir := t.TempDir()
	w := startCanaryWorld(t, dir, gwConfig{})
	waitIdle(t, w.g)
	from := time.Now().UTC()
	time.Sleep(10 * time.Millisecond)
	var want []string // the timeline's steps, as they happen

	admin(t, w.g, "/admin/kill-switch", `{"on": true, "reason": "coupons to users who never opted in"}`)
	want = append(want, "kill_switch:on")

	alert := fmt.Sprintf(`{"version":"4","groupKey":"{}:{alertname=\"LinegateSignatureFailures\"}","status":"firing","receiver":"linegate","groupLabels":{"alertname":"LinegateSignatureFailures"},"commonLabels":{"alertname":"LinegateSignatureFailures"},"commonAnnotations":{},"externalURL":"http://alertmanager:9093","truncatedAlerts":0,"alerts":[{"status":"firing","labels":{"alertname":"LinegateSignatureFailures","channel":"demo","severity":"page"},"annotations":{"summary":"signature failures"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"0123456789abcdef"}]}`,
		time.Now().UTC().Format(time.RFC3339))
	if code, b := adminDo(t, w.g, "/admin/alerts", alert); code != 200 {
		t.Fatalf("POST /admin/alerts = %d: %s", code, b)
	}
	want = append(want, "alert_firing")

	body := textWebhook(1, "U4af4980629f1b2c3d4e5f60718293a4b", "forged")
	for range 3 {
		if code := w.g.post(t, "not-the-secret", body); code != 401 {
			t.Fatalf("bad signature: %d", code)
		}
	}
	if code := w.g.post(t, "", body); code != 401 {
		t.Fatalf("no signature: %d", code)
	}
	time.Sleep(50 * time.Millisecond) // the rejections are recorded after the 401
	want = append(want, incident.KindSignatureFailures)

	{
		// Off to a URL where nothing answers: LINE's test fails, and the
		// switch goes back; then the gateway's URL again.
		if code, out := runCLI(t, "webhook", "set", "-config", w.g.cfgPath, "-channel", "demo", "-url", "http://"+closedPort(t)+"/webhook/demo", "-test"); code == 0 {
			t.Fatalf("webhook set to a dead URL passed its test:\n%s", out)
		}
		if code, out := runCLI(t, "webhook", "set", "-config", w.g.cfgPath, "-channel", "demo", "-url", w.g.webhook+"/webhook/demo", "-test"); code != 0 {
			t.Fatalf("webhook set = %d:\n%s", code, out)
		}
		want = append(want, "webhook_*")
	}

	if code, out := w.canary(t, "10s"); code != 0 {
		t.Fatalf("canary = %d:\n%s", code, out)
	}
	admin(t, w.g, "/admin/kill-switch", `{"on": false, "reason": "fixed"}`)
	want = append(want, "canary_start", "canary_run", "kill_switch:off")
	// The Messaging API fails: the reply gets a 500.
	req, _ := http.NewRequest("PUT", w.apiURL+"/_sim/faults", strings.NewReader(`{"error_rate": 1}`))
	if resp, err := httpClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	sendText(t, w.g, "U4af4980629f1b2c3d4e5f60718293a4b", "", "echo hello")
	want = append(want, incident.KindLineAPI)
	waitIdle(t, w.g)
	waitIntegrated(t, w.g)
	to := time.Now().UTC().Add(time.Second)

	out := filepath.Join(t.TempDir(), "incident")
	code, o := runCLI(t, "incident", "export", "-config", w.g.cfgPath, "-from", from.Format(time.RFC3339Nano), "-to", to.Format(time.RFC3339Nano), "-out", out)
	if code != 0 || !strings.Contains(o, "4 signature failures") {
		t.Fatalf("incident export = %d:\n%s", code, o)
	}
	if os.Getenv("LINEGATE_SHOW_TIMELINE") != "" {
		md, _ := os.ReadFile(filepath.Join(out, "timeline.md"))
		t.Logf("%s\n%s", o, md)
	}
	var tl incident.Timeline
	b, err := os.ReadFile(filepath.Join(out, "timeline.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tl); err != nil {
		t.Fatal(err)
	}
	// What happened, in order: each step, by its kind and action.
	var steps []string
	for _, e := range tl.Entries {
		step := e.Kind
		if e.Action != "" {
			step = e.Action
		}
		if strings.HasPrefix(e.Action, "webhook_") {
			step = "webhook_*"
		}
		if e.Action == "kill_switch" {
			if on, _ := e.Detail["on"].(bool); on {
				step += ":on"
			} else {
				step += ":off"
			}
		}
		if len(steps) == 0 || steps[len(steps)-1] != step {
			steps = append(steps, step)
		}
		if len(e.Records) == 0 {
			t.Errorf("entry without records: %+v", e)
		}
		if e.Time.Before(from) || !e.Time.Before(to) || e.Time.Location() != time.UTC {
			t.Errorf("entry at %s, outside [%s, %s) or not UTC", e.Time, from, to)
		}
	}
	if strings.Join(steps, " ") != strings.Join(want, " ") {
		t.Errorf("timeline steps:\n  %s\nwant\n  %s", strings.Join(steps, " "), strings.Join(want, " "))
	}
	if tl.Totals.SignatureFailures != 4 || tl.Totals.LineAPIErrors < 1 || tl.Totals.AdminActions < 3 {
		t.Errorf("totals %+v, want 4 signature failures, 3 admin actions or more and a Messaging API error", tl.Totals)
	}
	for _, e := range tl.Entries {
		if e.Kind == incident.KindSignatureFailures && (e.Counts["bad_signature"] != 3 || e.Counts["missing_signature"] != 1) {
			t.Errorf("signature failures: %v, want 3 bad, 1 missing", e.Counts)
		}
		if e.Kind == incident.KindLineAPI && (e.Counts["500"] < 1 || len(e.RequestIDs) == 0) {
			t.Errorf("Messaging API errors: %v, request ids %v", e.Counts, e.RequestIDs)
		}
	}
	// The Markdown lists the same, in the same order.
	md, err := os.ReadFile(filepath.Join(out, "timeline.md"))
	if err != nil {
		t.Fatal(err)
	}
	last := -1
	for _, s := range []string{"kill switch ON (reason: coupons", "webhooks refused for their signature", "came back from the canary group", "kill switch OFF (reason: fixed)", "Messaging API calls failed"} {
		i := strings.Index(string(md), s)
		if i <= last {
			t.Errorf("timeline.md: %q missing or out of order (at %d, after %d):\n%s", s, i, last, md)
		}
		last = i
	}
	// The evidence: exactly the records cited, and it verifies.
	vkey := filepath.Join(dir, "data", "log.vkey")
	evidence := filepath.Join(out, "evidence")
	if code, o := runCLI(t, "verify-bundle", "-vkey", vkey, evidence); code != 0 || !strings.HasPrefix(o, "OK") {
		t.Fatalf("verify-bundle = %d:\n%s", code, o)
	}
	var m struct{ Records []uint64 }
	b, err = os.ReadFile(filepath.Join(evidence, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := m.Records, tl.Records(); len(got) != len(want) || len(got) < 6 {
		t.Errorf("bundle records %v, timeline cites %v", got, want)
	}
	for _, f := range []string{"timeline.md", "timeline.json"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
		b, _ := os.ReadFile(filepath.Join(out, f))
		if strings.Contains(string(b), "echo hello") {
			t.Errorf("%s holds message text", f)
		}
	}
	// Usage: -out and -from are required; -out must not exist.
	if code, _ := runCLI(t, "incident", "export", "-config", w.g.cfgPath, "-from", from.Format(time.RFC3339)); code != 2 {
		t.Errorf("without -out: exit %d, want 2", code)
	}
	if code, _ := runCLI(t, "incident", "export", "-config", w.g.cfgPath, "-out", filepath.Join(t.TempDir(), "x")); code != 2 {
		t.Errorf("without -from: exit %d, want 2", code)
	}
	if code, _ := runCLI(t, "incident", "export", "-config", w.g.cfgPath, "-from", from.Format(time.RFC3339), "-out", out); code != 1 {
		t.Errorf("onto an existing directory: exit %d, want 1", code)
	}
}
