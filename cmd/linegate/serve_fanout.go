package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/proxy"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// fanoutRun is the fan-out of a running gateway: its destinations'
// workers, started before the pipeline (which queues for them) and
// stopped after it, before the ledger closes.
type fanoutRun struct {
	f    *fanout.Fanout
	push bool // rules_when_owned: push
	stop context.CancelFunc
	done chan struct{}
}

// newFanout builds the fan-out from the channels' destinations and starts
// its workers; with none configured it is nil, and every hook below does
// nothing.
func (g *instance) newFanout(e *env) error {
	cfg := g.cfg
	var ds []*fanout.Destination
	bots := map[string]string{}
	for _, ch := range cfg.Channels {
		bots[ch.ID] = ch.BotUserID
		for j := range ch.Destinations {
			d, err := ch.Destinations[j].destination(ch.ID, e.getenv)
			if err != nil {
				return fmt.Errorf("config: channel %q: destination %q: %w", ch.ID, ch.Destinations[j].Name, err)
			}
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return nil
	}
	store, ok := g.store.(fanout.Store)
	if !ok {
		return fmt.Errorf("fanout: the store cannot keep the destinations' queue")
	}
	var lease ledger.Lease
	if ls, ok := g.store.(interface{ FanoutLease() *pgstore.Lease }); ok {
		l := ls.FanoutLease()
		g.release = append(g.release, l.Release)
		lease = l
	}
	f, err := fanout.New(fanout.Options{
		Destinations: ds, Store: store, Log: g.led.Background(), Ledger: g.store, Sealer: g.ring, BotUserIDs: bots, Lease: lease, Table: lease != nil,
		BaseDelay: cfg.Fanout.BaseDelay, MaxDelay: cfg.Fanout.MaxDelay,
		BreakerFailures: cfg.Fanout.BreakerFailures, BreakerCooldown: cfg.Fanout.BreakerCooldown, Concurrency: cfg.Fanout.Concurrency,
		BreakerMaxCooldown: cfg.Fanout.BreakerMaxCooldown,
		Batch:              cfg.Fanout.Batch,
		Linger:             cfg.Fanout.Linger,
		Logger:             g.log,
	})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// The cursors are read, and started for new destinations, before the
	// pipeline completes anything.
	ictx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.Init(ictx); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	g.fan = &fanoutRun{f: f, push: cfg.Fanout.RulesWhenOwned == "push", stop: stop, done: make(chan struct{})}
	go func() { f.Run(ctx); close(g.fan.done) }()
	g.log.Info("fan-out started", "destinations", len(ds))
	return nil
}

// fanoutPipeline hooks the fan-out into the pipeline's options: the events
// are queued for the destinations with their outcomes, and the rules never
// spend a reply token a destination owns.
func (g *instance) fanoutPipeline(o *pipeline.Options) {
	if g.fan == nil {
		return
	}
	o.Follow = g.fan.f.Follow
	o.Completed = g.fan.f.Completed // without Table (replicas), none
	o.Action = g.fan.f.Action(o.Action, g.fan.push)
}

// fanoutCollectors returns the fan-out's metrics.
func (g *instance) fanoutCollectors() []prometheus.Collector {
	if g.fan == nil {
		return nil
	}
	return g.fan.f.Collectors()
}

// fanoutRoutes adds the destinations' admin endpoints.
func (g *instance) fanoutRoutes(mux *http.ServeMux) {
	if g.fan == nil {
		mux.HandleFunc("/admin/destinations", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no destinations are configured\n", http.StatusNotFound)
		})
		return
	}
	g.fan.f.Routes(mux)
}

// singleURLBots returns the ingress's bot user id -> channel map for the
// single webhook URL, or nil when it is off.
func singleURLBots(cfg *Config) map[string]string {
	if !cfg.Fanout.SingleWebhookURL {
		return nil
	}
	m := map[string]string{}
	for _, ch := range cfg.Channels {
		m[ch.BotUserID] = ch.ID
	}
	return m
}

// stopFanout stops the workers, once: each finishes and records the
// attempt in hand. What is queued is delivered after the next start.
func (g *instance) stopFanout() {
	if g.fan != nil && g.fan.stop != nil {
		g.fan.stop()
		<-g.fan.done
		g.fan.stop = nil
	}
}

// summarizeDelivery is tail's line for a delivery to a fan-out destination.
func summarizeDelivery(what string, b *record.Outbound) string {
	s := fmt.Sprintf("%s to destination %s: %s", what, b.Destination, b.Outcome)
	if len(b.Events) > 1 {
		s = fmt.Sprintf("%s and %d more to destination %s: %s", what, len(b.Events)-1, b.Destination, b.Outcome)
	}
	if b.Redelivery {
		s += " (redelivery)"
	}
	if b.Status != 0 {
		s += fmt.Sprintf(", HTTP %d in %.0f ms", b.Status, b.LatencyMs)
	}
	if b.Error != "" {
		s += ", " + b.Error
	}
	if b.Outcome == "dropped" && b.Reason != "" {
		s += " (" + b.Reason + ")"
	}
	if a := b.Extra["attempt"]; a != "" && a != "1" {
		s += ", attempt " + a
	}
	return s
}

// replyOwners is what the Messaging API proxy asks before a tool's reply:
// the destination with role reply_owner of the channel, or else the one
// proxy.reply_owners names (config check refuses the two disagreeing).
func (g *instance) replyOwners(static map[string]string) proxy.ReplyOwners {
	if g.fan == nil {
		return proxy.StaticReplyOwners(static)
	}
	return fanoutOwners{f: g.fan.f, static: static}
}

type fanoutOwners struct {
	f      *fanout.Fanout
	static map[string]string
}

func (o fanoutOwners) ReplyOwner(channel string) string {
	if name := o.f.ReplyOwner(channel); name != "" {
		return name
	}
	return o.static[channel]
}
