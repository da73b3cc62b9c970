package console

import (
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
)

// opsChannel is a channel's row on the operator's page.
type opsChannel struct {
	ID     string
	DryRun bool
	// From the monitor's last poll (Known false: never polled).
	WebhookKnown, WebhookActive, URLMatches, URLKnown bool
	QuotaKnown                                        bool
	QuotaLimit, QuotaConsumed                         float64
}

// opsData is the operator's page's.
type opsData struct {
	KillSwitch    bool
	DryRunAll     bool
	RulesHash     string
	Channels      []opsChannel
	Backlog       float64
	QueueDepth    float64
	PipelineKnown bool
	CanReload     bool
}

func (c *Console) ops(w http.ResponseWriter, r *http.Request, s *session) {
	d := &opsData{KillSwitch: c.o.Switches.KillSwitch(), CanReload: c.o.Reload != nil}
	if c.o.RulesHash != nil {
		d.RulesHash = c.o.RulesHash()
	}
	dry := c.o.Switches.DryRunStatus()
	d.DryRunAll = dry[""]
	m := c.gauges()
	for _, id := range c.o.Channels {
		ch := opsChannel{ID: id, DryRun: dry[id]}
		var v float64
		if v, ch.WebhookKnown = m.get("linegate_webhook_endpoint_active", id); ch.WebhookKnown {
			ch.WebhookActive = v == 1
		}
		if v, ch.URLKnown = m.get("linegate_webhook_endpoint_url_matches", id); ch.URLKnown {
			ch.URLMatches = v == 1
		}
		ch.QuotaLimit, ch.QuotaKnown = m.get("linegate_quota_limit_messages", id)
		ch.QuotaConsumed, _ = m.get("linegate_quota_consumed_messages", id)
		d.Channels = append(d.Channels, ch)
	}
	d.Backlog, d.PipelineKnown = m.get("linegate_pipeline_backlog_records", "")
	d.QueueDepth, _ = m.get("linegate_pipeline_queue_depth", "")
	c.render(w, r, http.StatusOK, "ops", sessionPage(r, s, "Operations", d))
}

// gaugeSet is the gauges of the registry, by name and channel label.
type gaugeSet map[string]map[string]float64

func (g gaugeSet) get(name, channel string) (float64, bool) {
	v, ok := g[name][channel]
	return v, ok
}

// gauges reads the registry's gauges (those the operator's page shows).
func (c *Console) gauges() gaugeSet {
	g := gaugeSet{}
	if c.o.Metrics == nil {
		return g
	}
	mfs, err := c.o.Metrics.Gather()
	if err != nil && len(mfs) == 0 {
		c.log.Warn("console: metrics", "err", err)
		return g
	}
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_GAUGE || !strings.HasPrefix(mf.GetName(), "linegate_") {
			continue
		}
		for _, mt := range mf.GetMetric() {
			ch := ""
			for _, l := range mt.GetLabel() {
				if l.GetName() == "channel" {
					ch = l.GetValue()
				}
			}
			if g[mf.GetName()] == nil {
				g[mf.GetName()] = map[string]float64{}
			}
			g[mf.GetName()][ch] = mt.GetGauge().GetValue()
		}
	}
	return g
}

// reason reads an action's reason: required, one line, at most 500
// characters.
func reason(r *http.Request) (string, bool) {
	s := strings.TrimSpace(r.PostFormValue("reason"))
	return s, s != "" && utf8.RuneCountInString(s) <= 500 && !strings.ContainsAny(s, "\r\n")
}

func (c *Console) killSwitch(w http.ResponseWriter, r *http.Request, s *session) {
	on := r.PostFormValue("on")
	why, ok := reason(r)
	if !c.switchForm(w, r, s, on, ok) {
		return
	}
	detail := c.who(r, s, map[string]any{"reason": why})
	if err := c.o.Switches.SetKillSwitch(r.Context(), c.o.Ledger, on == "true", detail); err != nil {
		c.failAction(w, r, s, "kill_switch", err)
		return
	}
	c.log.Info("console: kill switch", "by", s.user.Name, "on", on)
	if on == "true" {
		redirect(w, r, "/console/ops", "kill_on")
	} else {
		redirect(w, r, "/console/ops", "kill_off")
	}
}

func (c *Console) dryRun(w http.ResponseWriter, r *http.Request, s *session) {
	channel, on := r.PostFormValue("channel"), r.PostFormValue("on")
	why, ok := reason(r)
	if !c.switchForm(w, r, s, on, ok) {
		return
	}
	if channel != "" && !slices.Contains(c.o.Channels, channel) {
		c.errorPage(w, r, s, http.StatusBadRequest, "Not one of the config's channels.")
		return
	}
	detail := c.who(r, s, map[string]any{"reason": why})
	if err := c.o.Switches.SetDryRun(r.Context(), c.o.Ledger, channel, on == "true", detail); err != nil {
		c.failAction(w, r, s, "dry_run", err)
		return
	}
	c.log.Info("console: dry-run", "by", s.user.Name, "channel", channel, "on", on)
	redirect(w, r, "/console/ops", "dryrun")
}

// reload loads the rule files again; the reload's record names who asked.
// A rule file that does not load is the operator's to fix: its error is
// shown (it names the file and line, never a secret).
func (c *Console) reload(w http.ResponseWriter, r *http.Request, s *session) {
	if c.o.Reload == nil {
		c.errorPage(w, r, s, http.StatusNotFound, "Reloads are not available here.")
		return
	}
	if _, _, err := c.o.Reload(r.Context(), "console ("+s.user.Name+")"); err != nil {
		c.log.Error("console: rules not reloaded", "by", s.user.Name, "err", err)
		c.errorPage(w, r, s, http.StatusConflict, "Rules not reloaded: "+err.Error()+". The running rules stay.")
		return
	}
	c.log.Info("console: rules reloaded", "by", s.user.Name)
	redirect(w, r, "/console/ops", "reload")
}

// switchForm checks a switch form's on (true or false) and reason,
// answering 400 with what is wrong.
func (c *Console) switchForm(w http.ResponseWriter, r *http.Request, s *session, on string, reasonOK bool) bool {
	switch {
	case on != "true" && on != "false":
		c.errorPage(w, r, s, http.StatusBadRequest, "On: want true or false.")
	case !reasonOK:
		c.errorPage(w, r, s, http.StatusBadRequest, "Say why, in one line of at most 500 characters.")
	default:
		return true
	}
	return false
}
