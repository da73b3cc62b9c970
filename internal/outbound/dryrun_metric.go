package outbound

import "github.com/prometheus/client_golang/prometheus"

// DryRunGauges returns linegate_dry_run{channel}, one gauge a channel: 1
// while the channel's sends are dry-run (by config, the admin API, or for
// every channel), for dashboards beside linegate_kill_switch.
func (s *Sender) DryRunGauges() []prometheus.Collector {
	var out []prometheus.Collector
	for ch := range s.o.Clients {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        metricPrefix + "dry_run",
			Help:        "1 while the channel's sends are dry-run: recorded as what would have been sent, never sent.",
			ConstLabels: prometheus.Labels{"channel": ch},
		}, func() float64 {
			if s.DryRun(ch) {
				return 1
			}
			return 0
		}))
	}
	return out
}
