package outbound

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/prometheus/client_golang/prometheus"
)

// MonitorChannel is a channel the Monitor watches.
type MonitorChannel struct {
	ID     string
	Client *Client
	// WebhookURL is the URL LINE should send this channel's webhooks to;
	// "" does not check it.
	WebhookURL string
}

// MonitorOptions configures a Monitor.
type MonitorOptions struct {
	Channels []MonitorChannel
	// WebhookEvery is how often each channel's webhook endpoint is read
	// (default 1m); QuotaEvery its quota and consumption (default 5m).
	// Negative disables the poll.
	WebhookEvery, QuotaEvery time.Duration
	// Sender, when set, is told each channel's quota, to hold promotional
	// pushes back past the budget; Ledger records when that starts and
	// stops.
	Sender *Sender
	Ledger Committer
	Logger *slog.Logger
	Now    func() time.Time
}

// Monitor polls LINE's API for what the runbook watches: whether each
// channel's webhook is in use and points where it should (the "webhook
// disabled" signal), LINE's clock against ours, and the month's quota.
// A failed poll is logged, rate limited, and the next one tries again.
type Monitor struct {
	o     MonitorOptions
	fails *oplog.Limiter

	active, matches, checked, drift *prometheus.GaugeVec
}

// NewMonitor returns a Monitor; Run starts it.
func NewMonitor(o MonitorOptions) *Monitor {
	if o.WebhookEvery == 0 {
		o.WebhookEvery = time.Minute
	}
	if o.QuotaEvery == 0 {
		o.QuotaEvery = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Monitor{o: o, fails: oplog.NewLimiter(o.Logger, oplog.Every)}
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "webhook_endpoint_active",
		Help: `1 while LINE has the channel's webhook in use ("Use webhook" on), 0 when not or when no URL is set.`,
	}, []string{"channel"})
	m.matches = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "webhook_endpoint_url_matches",
		Help: "1 while the webhook URL LINE has for the channel is its configured webhook_url, 0 when not (channels with a webhook_url only).",
	}, []string{"channel"})
	m.checked = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "webhook_endpoint_checked_timestamp_seconds",
		Help: "When the channel's webhook endpoint was last read from LINE, Unix seconds.",
	}, []string{"channel"})
	m.drift = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "clock_drift_seconds",
		Help: "LINE's clock (the Date of its API's answers) minus the local clock, seconds, from the last poll; accurate to about half a second.",
	}, []string{"channel"})
	return m
}

// Collectors returns the Monitor's metrics.
func (m *Monitor) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.active, m.matches, m.checked, m.drift}
}

// Run polls at once, then at the configured intervals, until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if m.o.WebhookEvery > 0 {
		wg.Go(func() {
			m.PollWebhooks(ctx)
			periodic.Every(ctx, m.o.WebhookEvery, m.PollWebhooks)
		})
	}
	if m.o.QuotaEvery > 0 {
		wg.Go(func() {
			m.PollQuotas(ctx)
			periodic.Every(ctx, m.o.QuotaEvery, m.PollQuotas)
		})
	}
	wg.Wait()
}

// PollWebhooks reads each channel's webhook endpoint once.
func (m *Monitor) PollWebhooks(ctx context.Context) {
	for _, ch := range m.o.Channels {
		ep, x, err := ch.Client.WebhookEndpoint(ctx)
		m.observeClock(ch.ID, x)
		var ae *APIError
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			ep = WebhookEndpoint{} // no URL set: not in use
		default:
			if ctx.Err() == nil {
				m.fail(ch.ID, "webhook_poll_failed", "reading the webhook endpoint from LINE failed", err)
			}
			continue
		}
		m.active.WithLabelValues(ch.ID).Set(b2f(ep.Active && ep.Endpoint != ""))
		if ch.WebhookURL != "" {
			m.matches.WithLabelValues(ch.ID).Set(b2f(ep.Endpoint == ch.WebhookURL))
		}
		m.checked.WithLabelValues(ch.ID).Set(float64(m.o.Now().UnixMilli()) / 1000)
	}
}

// PollQuotas reads each channel's quota and consumption once, and tells
// the Sender.
func (m *Monitor) PollQuotas(ctx context.Context) {
	for _, ch := range m.o.Channels {
		q, x, err := ch.Client.Quota(ctx)
		m.observeClock(ch.ID, x)
		if err != nil {
			if ctx.Err() == nil {
				m.fail(ch.ID, "quota_poll_failed", "reading the message quota from LINE failed", err)
			}
			continue
		}
		c, x, err := ch.Client.QuotaConsumption(ctx)
		m.observeClock(ch.ID, x)
		if err != nil {
			if ctx.Err() == nil {
				m.fail(ch.ID, "quota_poll_failed", "reading the message quota consumption from LINE failed", err)
			}
			continue
		}
		if m.o.Sender == nil {
			continue
		}
		if err := m.o.Sender.UpdateQuota(ctx, m.o.Ledger, ch.ID, q.Limit(), c.TotalUsage); err != nil && ctx.Err() == nil {
			m.fail(ch.ID, "quota_hold_unrecorded", "recording the quota hold failed", err)
		}
	}
}

func (m *Monitor) observeClock(channel string, x Exchange) {
	if d, ok := x.ClockDrift(); ok {
		m.drift.WithLabelValues(channel).Set(d.Seconds())
	}
}

func (m *Monitor) fail(channel, class, msg string, err error) {
	m.fails.Log(slog.LevelWarn, oplog.Key{Class: class, Channel: channel}, msg, "err", err.Error())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
