package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// entryLedger is fakeLedger keeping the entries of each commit.
type entryLedger struct {
	fakeLedger
	batches [][]ledger.Entry
}

func (l *entryLedger) Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error) {
	if _, err := l.fakeLedger.Commit(ctx, entries, effects...); err != nil {
		return 0, err
	}
	l.batches = append(l.batches, entries)
	return 0, nil
}

// alertmanagerBody is a notification as Alertmanager sends it: one alert
// firing (its endsAt when Prometheus would let it lapse, no end), one
// resolved (with its end), extra labels and annotations.
const alertmanagerBody = `{
  "receiver": "linegate-ledger",
  "status": "firing",
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "LinegateKillSwitchLeftOn", "channel": "c", "instance": "gw1:8081", "job": "linegate", "severity": "warning"},
      "annotations": {"summary": "The kill switch has been on for over an hour", "runbook_url": "docs/RUNBOOK.md#kill-switch"%s},
      "startsAt": "2026-12-02T10:00:00.123Z",
      "endsAt": "2026-12-02T10:04:00Z",
      "generatorURL": "http://prometheus:9090/graph?g0.expr=linegate_kill_switch+%%3D%%3D+1",
      "fingerprint": "6b0e3a7c1d2f4e59"
    },
    {
      "status": "resolved",
      "labels": {"alertname": "LinegateSignatureFailures", "channel": "elsewhere", "severity": "critical"},
      "annotations": {"summary": "Signature failures above 1%%"},
      "startsAt": "2026-12-02T09:50:00Z",
      "endsAt": "2026-12-02T09:58:30Z",
      "generatorURL": "http://prometheus:9090/graph",
      "fingerprint": "0c1d2e3f40516273"
    }
  ],
  "groupLabels": {"alertname": "LinegateKillSwitchLeftOn"},
  "commonLabels": {"job": "linegate"},
  "commonAnnotations": {},
  "externalURL": "http://alertmanager:9093",
  "version": "4",
  "groupKey": "{}:{alertname=\"LinegateKillSwitchLeftOn\"}",
  "truncatedAlerts": 0
}`

func newAlertFixture() (*entryLedger, *API) {
	led := &entryLedger{}
	api := New(Options{Ledger: led, Store: &fakeStore{}, Pipeline: &fakeStore{}, Switches: &fakeSwitches{},
		Rules: &fakeRules{&rules.Set{Hash: "old"}}, Keys: fakeKeys{}, Policies: retention.Presets(),
		Token: []byte("t0ken"), Channels: []string{"c"}})
	return led, api
}

func postAlerts(t *testing.T, api *API, body, auth string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("POST", "/admin/alerts", strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	api.Handler().ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestAlertsRecorded(t *testing.T) {
	led, api := newAlertFixture()
	huge := strings.Repeat("é", 50_000) // 100 KB of two-byte runes
	extra := fmt.Sprintf(`, "description": %q`, huge)
	for i := range 40 {
		extra += fmt.Sprintf(`, "extra%02d": "v"`, i)
	}
	code, body := postAlerts(t, api, fmt.Sprintf(alertmanagerBody, extra), "Bearer t0ken")
	if code != 200 || !strings.Contains(body, `"recorded":2`) {
		t.Fatalf("POST /admin/alerts = %d %s", code, body)
	}
	if len(led.batches) != 1 || len(led.batches[0]) != 2 {
		t.Fatalf("commits: %d, want one of 2 records", len(led.batches))
	}
	type want struct {
		action, alertname, channel, fingerprint, startsAt, endsAt string
	}
	wants := []want{
		{"alert_firing", "LinegateKillSwitchLeftOn", "c", "6b0e3a7c1d2f4e59", "2026-12-02T10:00:00.123Z", ""},
		{"alert_resolved", "LinegateSignatureFailures", "", "0c1d2e3f40516273", "2026-12-02T09:50:00Z", "2026-12-02T09:58:30Z"},
	}
	for i, e := range led.batches[0] {
		w := wants[i]
		if e.Kind != ledger.KindAdmin || e.Channel != w.channel || len(e.Subjects) != 0 {
			t.Errorf("record %d: kind %v, channel %q, subjects %v; want admin, %q, none", i, e.Kind, e.Channel, e.Subjects, w.channel)
		}
		if len(e.Payload) > 8<<10 {
			t.Errorf("record %d: payload of %d bytes: the annotations are not bounded", i, len(e.Payload))
		}
		_, b, err := record.Decode(ledger.KindAdmin, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		adm := b.(*record.Admin)
		d := adm.Detail
		if adm.Action != w.action || adm.Subject != "" || d["alertname"] != w.alertname || d["fingerprint"] != w.fingerprint || d["starts_at"] != w.startsAt {
			t.Errorf("record %d: %s %+v", i, adm.Action, d)
		}
		if got, _ := d["ends_at"].(string); got != w.endsAt {
			t.Errorf("record %d: ends_at %q, want %q", i, got, w.endsAt)
		}
		labels, _ := d["labels"].(map[string]any)
		if labels["alertname"] != w.alertname || labels["severity"] == nil {
			t.Errorf("record %d: labels %v", i, labels)
		}
		if i == 0 {
			ann, _ := d["annotations"].(map[string]any)
			desc, _ := ann["description"].(string)
			if len(ann) != maxAlertPairs+1 || ann["…"] != "11 more left out" || !strings.HasSuffix(desc, "é…") || len(desc) > maxAlertValue {
				t.Errorf("annotations not bounded as documented: %d kept, %q, description of %d bytes", len(ann), ann["…"], len(desc))
			}
			if d["remote"] == "" || d["receiver"] != "linegate-ledger" {
				t.Errorf("who delivered the alert is not recorded: %v", d)
			}
		}
	}
	m := api.alerts.received
	if f, r := counterValue(m.WithLabelValues("firing")), counterValue(m.WithLabelValues("resolved")); f != 1 || r != 1 {
		t.Errorf("linegate_alerts_received_total firing %v, resolved %v; want 1, 1", f, r)
	}
}

func TestAlertsRefused(t *testing.T) {
	valid := fmt.Sprintf(alertmanagerBody, "")
	tests := []struct {
		name, body, auth string
		ledgerErr        error
		want             int
		wantBody         string
		status           string // the linegate_alerts_received_total status counted
		count            float64
	}{
		{"no token", valid, "", nil, 401, "unauthorized", "invalid", 0},
		{"wrong token", valid, "Bearer nope", nil, 401, "unauthorized", "invalid", 0},
		{"not JSON", `{"version": "4", "alerts": [`, "Bearer t0ken", nil, 400, "want Alertmanager's webhook notification", "invalid", 1},
		{"version 3", strings.Replace(valid, `"version": "4"`, `"version": "3"`, 1), "Bearer t0ken", nil, 400, `"version": "4"`, "invalid", 1},
		{"pending alert", strings.Replace(valid, `"status": "resolved"`, `"status": "pending"`, 1), "Bearer t0ken", nil, 400, "alert 1: want", "invalid", 1},
		{"no alertname", strings.Replace(valid, `"alertname": "LinegateSignatureFailures", `, "", 1), "Bearer t0ken", nil, 400, "alert 1: no alertname", "invalid", 1},
		{"too large", `{"version": "4", "receiver": "` + strings.Repeat("x", maxAlertBody) + `"}`, "Bearer t0ken", nil, 413, "max_alerts", "invalid", 1},
		{"ledger full", valid, "Bearer t0ken", ledger.ErrPushback, 503, "neither applied nor recorded", "unrecorded", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			led, api := newAlertFixture()
			led.err = tt.ledgerErr
			code, body := postAlerts(t, api, tt.body, tt.auth)
			if code != tt.want || !strings.Contains(body, tt.wantBody) {
				t.Errorf("POST /admin/alerts = %d %q, want %d %q", code, body, tt.want, tt.wantBody)
			}
			if len(led.batches) != 0 {
				t.Errorf("%d commits, want none", len(led.batches))
			}
			if got := counterValue(api.alerts.received.WithLabelValues(tt.status)); got != tt.count {
				t.Errorf("linegate_alerts_received_total{status=%q} = %v, want %v", tt.status, got, tt.count)
			}
			if got := counterValue(api.alerts.received.WithLabelValues("firing")); got != 0 {
				t.Errorf("firing alerts counted as recorded: %v", got)
			}
		})
	}
}

func TestAlertsEmpty(t *testing.T) {
	led, api := newAlertFixture()
	code, body := postAlerts(t, api, `{"version":"4","status":"resolved","receiver":"r","alerts":[]}`, "Bearer t0ken")
	var got map[string]int
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || got["recorded"] != 0 {
		t.Errorf("empty notification = %d %s", code, body)
	}
	if len(led.batches) != 0 {
		t.Errorf("an empty notification committed %d times", len(led.batches))
	}
}

// counterValue is the value of a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
