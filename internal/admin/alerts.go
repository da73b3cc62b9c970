package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// Bounds of an Alertmanager notification and of what is recorded of it.
// Alertmanager sends the labels and annotations its rules give, which an
// operator writes; they are bounded all the same, so that a rule that
// templates a large annotation cannot grow the ledger without limit.
const (
	// maxAlertBody bounds a notification's body; a larger one is 413.
	// Alertmanager's max_alerts bounds the alerts of one notification.
	maxAlertBody = 1 << 20
	// maxAlertPairs bounds the labels, and the annotations, kept of an
	// alert: the first by name.
	maxAlertPairs = 32
	// maxAlertName and maxAlertValue bound a label's or annotation's name
	// and value, in bytes; a longer one is cut, marked with "…".
	maxAlertName  = 128
	maxAlertValue = 1024
)

// Statuses of linegate_alerts_received_total besides the alerts' own
// ("firing", "resolved": recorded).
const (
	// alertsUnrecorded counts the alerts of a notification the ledger
	// could not take (503: Alertmanager sends it again).
	alertsUnrecorded = "unrecorded"
	// alertsInvalid counts notifications refused as malformed or too
	// large (400, 413), one each: their alerts are unknown.
	alertsInvalid = "invalid"
)

// amNotification is the body of Alertmanager's webhook notification,
// version 4 (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
type amNotification struct {
	Version         string    `json:"version"`
	GroupKey        string    `json:"groupKey"`
	TruncatedAlerts int       `json:"truncatedAlerts"`
	Status          string    `json:"status"`
	Receiver        string    `json:"receiver"`
	ExternalURL     string    `json:"externalURL"`
	Alerts          []amAlert `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// alertMetrics are the Alertmanager receiver's metrics.
type alertMetrics struct {
	received *prometheus.CounterVec
}

func newAlertMetrics() *alertMetrics {
	m := &alertMetrics{received: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linegate_alerts_received_total",
		Help: "Alerts received from Alertmanager (POST /admin/alerts), by status: firing and resolved are recorded in the ledger; unrecorded were refused with 503 (the ledger could not take them); invalid counts notifications refused as malformed or too large.",
	}, []string{"status"})}
	for _, s := range []string{"firing", "resolved", alertsUnrecorded, alertsInvalid} {
		m.received.WithLabelValues(s) // zeros for the dashboards and rules
	}
	return m
}

// Collectors returns the admin API's metrics, for the caller's registry.
func (a *API) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.alerts.received}
}

// alertRoutes adds the Alertmanager webhook receiver.
func (a *API) alertRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/alerts", a.receiveAlerts)
}

// receiveAlerts records each alert of an Alertmanager notification, firing
// or resolved, as an admin record ("alert_firing", "alert_resolved"), all
// of them in one commit: a notification is recorded whole or not at all,
// and Alertmanager retries what was not (any answer but 2xx).
func (a *API) receiveAlerts(w http.ResponseWriter, r *http.Request) {
	const action = "alerts"
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAlertBody))
	if err != nil {
		a.alerts.received.WithLabelValues(alertsInvalid).Inc()
		if mbe := new(http.MaxBytesError); errors.As(err, &mbe) {
			a.fail(w, r, action, tooLarge("alerts: the notification is over 1 MiB: set max_alerts in Alertmanager's webhook_config"))
			return
		}
		a.fail(w, r, action, badRequest("alerts: reading the body failed"))
		return
	}
	var n amNotification
	if err := json.Unmarshal(b, &n); err != nil {
		a.alerts.received.WithLabelValues(alertsInvalid).Inc()
		a.fail(w, r, action, badRequest("alerts: want Alertmanager's webhook notification (version 4) as JSON"))
		return
	}
	if err := n.check(); err != nil {
		a.alerts.received.WithLabelValues(alertsInvalid).Inc()
		a.fail(w, r, action, err)
		return
	}
	now := time.Now()
	entries := make([]ledger.Entry, 0, len(n.Alerts))
	counts := map[string]int{}
	for _, al := range n.Alerts {
		body := &record.Admin{Action: "alert_" + al.Status, Detail: alertDetail(n, al, r.RemoteAddr)}
		payload, err := record.Encode(&record.Meta{ReceivedMs: now.UnixMilli()}, body)
		if err != nil {
			a.fail(w, r, action, err)
			return
		}
		ch := al.Labels["channel"]
		if a.o.Channels == nil || !slices.Contains(a.o.Channels, ch) {
			ch = "" // a channel label that names no configured channel is kept in the labels alone
		}
		entries = append(entries, ledger.Entry{Kind: ledger.KindAdmin, Time: now, Channel: ch, Payload: payload})
		counts[al.Status]++
	}
	if len(entries) > 0 {
		if _, err := a.o.Ledger.Commit(r.Context(), entries); err != nil {
			a.alerts.received.WithLabelValues(alertsUnrecorded).Add(float64(len(entries)))
			a.fail(w, r, action, err)
			return
		}
	}
	for s, c := range counts {
		a.alerts.received.WithLabelValues(s).Add(float64(c))
	}
	detail := map[string]any{"receiver": cut(n.Receiver, maxAlertName), "status": cut(n.Status, maxAlertName), "firing": counts["firing"], "resolved": counts["resolved"]}
	oplog.Admin(a.log, action, r.RemoteAddr, detail)
	writeJSON(w, map[string]any{"recorded": len(entries), "firing": counts["firing"], "resolved": counts["resolved"]})
}

// check refuses a notification that is not Alertmanager's version 4, or
// an alert without a name or with a status other than firing or resolved.
func (n *amNotification) check() error {
	if n.Version != "4" {
		return badRequest(`alerts: want Alertmanager's webhook notification, "version": "4"`)
	}
	for i, al := range n.Alerts {
		if al.Status != "firing" && al.Status != "resolved" {
			return badRequest("alerts: alert " + strconv.Itoa(i) + `: want "status": "firing" or "resolved"`)
		}
		if al.Labels["alertname"] == "" {
			return badRequest("alerts: alert " + strconv.Itoa(i) + ": no alertname label")
		}
	}
	return nil
}

// alertDetail is what the ledger keeps of an alert: its name, labels and
// annotations (bounded), fingerprint and times, and who delivered it.
func alertDetail(n amNotification, al amAlert, remote string) map[string]any {
	d := map[string]any{
		"alertname":   cut(al.Labels["alertname"], maxAlertValue),
		"status":      al.Status,
		"labels":      boundPairs(al.Labels),
		"fingerprint": cut(al.Fingerprint, maxAlertName),
		"starts_at":   al.StartsAt.UTC().Format(time.RFC3339Nano),
		"receiver":    cut(n.Receiver, maxAlertName),
		"remote":      remote,
	}
	if len(al.Annotations) > 0 {
		d["annotations"] = boundPairs(al.Annotations)
	}
	// The end of a resolved alert. A firing alert's endsAt is the zero
	// time (0001-01-01), or when it would end were it not sent again: no
	// end.
	if al.Status == "resolved" && al.EndsAt.Year() > 1 {
		d["ends_at"] = al.EndsAt.UTC().Format(time.RFC3339Nano)
	}
	if al.GeneratorURL != "" {
		d["generator_url"] = cut(al.GeneratorURL, maxAlertValue)
	}
	if n.GroupKey != "" {
		d["group_key"] = cut(n.GroupKey, maxAlertValue)
	}
	if n.TruncatedAlerts > 0 {
		// Alertmanager's max_alerts left these out of the notification.
		d["truncated_alerts"] = n.TruncatedAlerts
	}
	return d
}

// boundPairs keeps the first maxAlertPairs pairs of m by name, each name
// and value cut to its bound, and says how many were left out.
func boundPairs(m map[string]string) map[string]string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make(map[string]string, min(len(names), maxAlertPairs+1))
	for i, k := range names {
		if i == maxAlertPairs {
			out["…"] = strconv.Itoa(len(names)-maxAlertPairs) + " more left out"
			break
		}
		out[cut(k, maxAlertName)] = cut(m[k], maxAlertValue)
	}
	return out
}

// cut returns s cut to at most n bytes on a rune boundary, with "…" in
// place of what was cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.ToValidUTF8(s[:i], "") + "…"
}
