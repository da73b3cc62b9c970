package main

import (
	"fmt"
	"net/url"
	"time"
)

// MonitorConfig is how often serve reads from LINE's API what the runbook
// watches: each channel's webhook endpoint (is it in use, is it the
// channel's webhook_url; LINE's clock against ours) and its message quota
// and consumption.
type MonitorConfig struct {
	// WebhookEvery is the webhook endpoint poll (default 1m; 0s: none).
	WebhookEvery *time.Duration `yaml:"webhook_every"`
	// QuotaEvery is the quota poll (default 5m; 0s: none).
	QuotaEvery *time.Duration `yaml:"quota_every"`
}

// intervals returns the polls' intervals, negative for none.
func (m MonitorConfig) intervals() (webhook, quota time.Duration) {
	webhook, quota = time.Minute, 5*time.Minute
	if m.WebhookEvery != nil {
		webhook = *m.WebhookEvery
	}
	if m.QuotaEvery != nil {
		quota = *m.QuotaEvery
	}
	if webhook == 0 {
		webhook = -1
	}
	if quota == 0 {
		quota = -1
	}
	return webhook, quota
}

// ChannelLineConfig is what a channel's config says of its settings on
// LINE's side (inline in ChannelConfig).
type ChannelLineConfig struct {
	// WebhookURL is the URL LINE should send the channel's webhooks to,
	// such as https://gw.example.com/webhook/shop: what `linegate webhook
	// set` sets by default, and what the monitor checks LINE has.
	WebhookURL string `yaml:"webhook_url"`
	// QuotaBudget is the share of the monthly message quota (0 to 1, such
	// as 0.9) past which promotional pushes are held back, so that the
	// rest is left for transactional messages; 0 (default): no budget.
	QuotaBudget float64 `yaml:"quota_budget"`
}

// checkMonitor checks the monitor and the channels' LINE settings.
func (c *Config) checkMonitor(p *configParser) {
	if d := c.Monitor.WebhookEvery; d != nil && *d < 0 {
		p.fail("monitor.webhook_every", "%v: want a duration such as 1m (0s: no poll)", *d)
	}
	if d := c.Monitor.QuotaEvery; d != nil && *d < 0 {
		p.fail("monitor.quota_every", "%v: want a duration such as 5m (0s: no poll)", *d)
	}
	for i := range c.Channels {
		ch := &c.Channels[i]
		at := func(key string) string { return fmt.Sprintf("channels[%d].%s", i, key) }
		if ch.WebhookURL != "" {
			if u, err := url.Parse(ch.WebhookURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(ch.WebhookURL) > 500 {
				p.fail(at("webhook_url"), "%q: want an https URL of at most 500 characters, such as https://gw.example.com/webhook/%s", ch.WebhookURL, ch.ID)
			}
		}
		if ch.QuotaBudget < 0 || ch.QuotaBudget > 1 {
			p.fail(at("quota_budget"), "%v: want a share of the quota between 0 and 1, such as 0.9 (0: no budget)", ch.QuotaBudget)
		}
	}
}
