package main

import (
	"github.com/linegate/linegate/internal/outbound"
)

// quotaBudgets returns the channels' quota budgets.
func quotaBudgets(cfg *Config) map[string]float64 {
	m := map[string]float64{}
	for _, ch := range cfg.Channels {
		if ch.QuotaBudget > 0 {
			m[ch.ID] = ch.QuotaBudget
		}
	}
	return m
}

// startMonitor starts the polls of LINE's API (webhook endpoint, clock,
// quota) for the channels with an access token, with the sender's
// clients, and registers their metrics.
func (g *instance) startMonitor() {
	webhookEvery, quotaEvery := g.cfg.Monitor.intervals()
	var chs []outbound.MonitorChannel
	for _, ch := range g.cfg.Channels {
		c := g.sender.Client(ch.ID)
		if c == nil || (len(c.Token) == 0 && c.Tokens == nil) {
			g.log.Info("monitor: channel without an access token: its webhook endpoint and quota are not watched", "channel", ch.ID)
			continue
		}
		chs = append(chs, outbound.MonitorChannel{ID: ch.ID, Client: c, WebhookURL: ch.WebhookURL})
	}
	m := outbound.NewMonitor(outbound.MonitorOptions{Channels: chs, WebhookEvery: webhookEvery, QuotaEvery: quotaEvery,
		Sender: g.sender, Ledger: g.led, Logger: g.log})
	g.reg.MustRegister(m.Collectors()...)
	ctx := g.bgCtx
	g.bg.Go(func() { m.Run(ctx) })
}
