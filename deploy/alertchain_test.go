package deploy_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAlertIntoLedger runs the whole alert path with the real tools: the
// gateway (deploy/linegate.yaml) receives one LINE message twice under two
// webhook event ids; Prometheus, with prometheus.yml and
// linegate-rules.yml, scrapes it and fires LinegateDuplicateMessageID; Alertmanager, with alertmanager.yml,
// posts it to POST /admin/alerts with the token from its file; and the
// alert is in the ledger, as `linegate tail` reads it.
func TestAlertIntoLedger(t *testing.T) {
	prometheus := need(t, "prometheus")
	alertmanager := need(t, "prometheus-alertmanager")
	dir := t.TempDir()
	g := startGateway(t, dir, installConfig(t, dir, nil))

	// Alertmanager: the example, with this gateway's admin listener, the
	// token file beside it, short waits, and the pager pointed nowhere.
	amPort := freePort(t)
	tokenFile := filepath.Join(dir, "linegate-admin-token")
	if err := os.WriteFile(tokenFile, []byte(testAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	amCfg, err := os.ReadFile(amConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	am := replaceAll(t, string(amCfg),
		"url: http://127.0.0.1:8081/admin/alerts", "url: http://"+g.admin+"/admin/alerts",
		"credentials_file: /etc/alertmanager/linegate-admin-token", "credentials_file: "+tokenFile,
		"group_wait: 10s", "group_wait: 1s",
		"routing_key_file: /etc/alertmanager/pagerduty-routing-key", "routing_key: test\n        url: http://127.0.0.1:9/",
	)
	amFile := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(amFile, []byte(am), 0o600); err != nil {
		t.Fatal(err)
	}
	startTool(t, fmt.Sprintf("http://127.0.0.1:%d/-/ready", amPort), exec.Command(alertmanager,
		"--config.file="+amFile, "--storage.path="+filepath.Join(dir, "am-data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", amPort), "--cluster.listen-address="))

	// Prometheus: the example config and the rules as they are, with this
	// gateway and Alertmanager, every second.
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	promPort := freePort(t)
	promFile := filepath.Join(dir, "prometheus.yml")
	promCfg, err := os.ReadFile(promConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	prom := replaceAll(t, string(promCfg),
		"scrape_interval: 15s", "scrape_interval: 1s",
		"evaluation_interval: 15s", "evaluation_interval: 1s",
		"  - linegate-rules.yml", "  - "+rules,
		`targets: ["127.0.0.1:9093"]`, fmt.Sprintf(`targets: ["127.0.0.1:%d"]`, amPort),
		`targets: ["127.0.0.1:8081"]`, fmt.Sprintf(`targets: [%q]`, g.admin),
	)
	if err := os.WriteFile(promFile, []byte(prom), 0o600); err != nil {
		t.Fatal(err)
	}
	startTool(t, fmt.Sprintf("http://127.0.0.1:%d/-/ready", promPort), exec.Command(prometheus,
		"--config.file="+promFile, "--storage.tsdb.path="+filepath.Join(dir, "prom-data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort)))

	// Let Prometheus see the counters at zero, then send one message twice
	// (the OA Manager and the bot both answering, or a replay).
	waitFor(t, 30*time.Second, "Prometheus to scrape linegate", func() bool {
		return strings.Contains(promQuery(t, promPort, `linegate_pipeline_duplicate_message_ids_total{channel="shop"}`), `"value"`)
	})
	time.Sleep(2 * time.Second)
	now := time.Now().UnixMilli()
	for i, id := range []string{"01DUPA00000000000000000001", "01DUPB00000000000000000002"} {
		body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":%q,"deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"r%d","message":{"id":"555000111","type":"text","text":"twice","quoteToken":"q"}}]}`,
			now, id, i)
		mac := hmac.New(sha256.New, []byte(testSecret))
		mac.Write(body)
		req, err := http.NewRequest("POST", "http://"+g.webhook+"/webhook/shop", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Line-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("webhook %d = %d", i, resp.StatusCode)
		}
	}

	// The alert, recorded: the admin record Alertmanager's notification
	// made, read back with tail as an operator would.
	var rec struct {
		Action string
		Detail struct {
			Alertname   string            `json:"alertname"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
			Fingerprint string            `json:"fingerprint"`
			StartsAt    string            `json:"starts_at"`
			Receiver    string            `json:"receiver"`
		}
	}
	channel := ""
	waitFor(t, 60*time.Second, "the alert in the ledger", func() bool {
		out, err := exec.Command(linegateBin, "tail", "-config", filepath.Join(dir, "linegate.yaml"), "-n", "1000", "-json").Output()
		if err != nil {
			t.Fatalf("linegate tail: %v", err)
		}
		for line := range strings.Lines(string(out)) {
			var l struct {
				Kind    string
				Channel string
				Body    json.RawMessage
			}
			if json.Unmarshal([]byte(line), &l) != nil || l.Kind != "admin" {
				continue
			}
			if json.Unmarshal(l.Body, &rec) == nil && rec.Action == "alert_firing" && rec.Detail.Alertname == "LinegateDuplicateMessageID" {
				channel = l.Channel
				return true
			}
		}
		return false
	})
	d := rec.Detail
	if d.Labels["channel"] != "shop" || d.Labels["severity"] != "page" || d.Labels["job"] != "linegate" || channel != "shop" {
		t.Errorf("alert labels %v, record channel %q; want channel shop, severity page, job linegate", d.Labels, channel)
	}
	if !strings.Contains(d.Annotations["summary"], "channel shop") || d.Annotations["runbook_url"] != "docs/RUNBOOK.md#linegateduplicatemessageid" {
		t.Errorf("alert annotations %v", d.Annotations)
	}
	if d.Fingerprint == "" || d.StartsAt == "" || d.Receiver != "linegate-ledger" {
		t.Errorf("alert fingerprint %q, startsAt %q, receiver %q", d.Fingerprint, d.StartsAt, d.Receiver)
	}
	_, metrics := get(t, "http://"+g.admin+"/metrics")
	if !strings.Contains(metrics, `linegate_alerts_received_total{status="firing"}`) || strings.Contains(metrics, `linegate_alerts_received_total{status="firing"} 0`) {
		t.Errorf("linegate_alerts_received_total does not count the alert")
	}
}

// startTool runs a server until the test ends, and waits until ready
// answers 200.
func startTool(t *testing.T, ready string, cmd *exec.Cmd) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	name := filepath.Base(cmd.Path)
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	waitFor(t, 30*time.Second, name+" to be ready", func() bool {
		select {
		case <-done:
			t.Fatalf("%s exited:\n%s", name, out.String())
		default:
		}
		code, _ := get(t, ready)
		return code == 200
	})
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// get returns the status and body of a GET (0 when it does not connect).
func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// promQuery runs an instant query on Prometheus's HTTP API and returns
// the answer's JSON.
func promQuery(t *testing.T, port int, q string) string {
	t.Helper()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", port, url.QueryEscape(q)))
	return body
}
