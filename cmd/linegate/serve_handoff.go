package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/rules"
)

// HandoffConfig is a channel's human handoff (docs/HANDOFF.md): when a
// conversation a person owns goes back to the bot by itself, and whom to
// tell that one waits for a person.
type HandoffConfig struct {
	// Idle is how long a conversation a person owns may stay without an
	// event or a human reply before it returns to the bot (default 30m).
	Idle time.Duration `yaml:"idle"`
	// ConsoleURL, if set, is linked from notifications (the console's
	// address as agents reach it).
	ConsoleURL string `yaml:"console_url"`
	// NotifyIDs puts the conversation's LINE id in notifications; by
	// default they name it by pseudonym (sha256:...) alone. They never
	// hold message text.
	NotifyIDs bool `yaml:"notify_ids"`
	// Notify are the webhooks told when a rule hands a conversation off.
	Notify []NotifyTargetConfig `yaml:"notify"`
}

// NotifyTargetConfig is a notification webhook.
type NotifyTargetConfig struct {
	// Name names the target in the ledger's records (never its URL).
	Name string `yaml:"name"`
	// Kind is "slack" (a Slack-compatible incoming webhook: {"text": ...})
	// or "json" (the notification's fields as JSON).
	Kind string `yaml:"kind"`
	// The URL (Slack's hold a secret): exactly one of url and url_env (an
	// environment variable).
	URL    string `yaml:"url"`
	URLEnv string `yaml:"url_env"`
}

// defaultHandoffIdle is the idle time of a channel that sets none.
const defaultHandoffIdle = 30 * time.Minute

// checkHandoff checks the channels' handoff sections and sets defaults.
func (c *Config) checkHandoff(p *configParser) {
	for i := range c.Channels {
		ch := &c.Channels[i]
		h := ch.Handoff
		if h == nil {
			continue
		}
		at := ch.path + ".handoff"
		if h.Idle < 0 || (h.Idle > 0 && h.Idle < time.Second) {
			p.fail(at+".idle", "%v: want a duration of at least 1s, such as 30m (default 30m)", h.Idle)
		}
		if h.ConsoleURL != "" {
			if u, err := url.Parse(h.ConsoleURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				p.fail(at+".console_url", "%q: want an http(s) URL", h.ConsoleURL)
			}
		}
		names := map[string]bool{}
		for j, t := range h.Notify {
			tp := fmt.Sprintf("%s.notify[%d]", at, j)
			if t.Name == "" {
				p.fail(tp+".name", "required: the name the ledger's records give the target")
			} else if names[t.Name] {
				p.fail(tp+".name", "%q is listed twice", t.Name)
			}
			names[t.Name] = true
			if t.Kind != "slack" && t.Kind != "json" {
				p.fail(tp+".kind", "%q: want slack or json", t.Kind)
			}
			if (t.URL == "") == (t.URLEnv == "") {
				p.fail(tp+".url", "give exactly one of url and url_env")
			}
			if t.URL != "" {
				if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					// Never the value: a Slack URL holds its secret.
					p.fail(tp+".url", "not an http(s) URL")
				}
			}
		}
	}
}

// handoffChannels resolves the channels' handoff options (notification
// URLs from the environment).
func handoffChannels(e *env, cfg *Config) (map[string]handoff.ChannelOptions, error) {
	out := map[string]handoff.ChannelOptions{}
	for _, ch := range cfg.Channels {
		o := handoff.ChannelOptions{Retention: ch.Retention, Idle: defaultHandoffIdle}
		if h := ch.Handoff; h != nil {
			if h.Idle > 0 {
				o.Idle = h.Idle
			}
			o.ConsoleURL, o.NotifyIDs = h.ConsoleURL, h.NotifyIDs
			for j, t := range h.Notify {
				u := t.URL
				if t.URLEnv != "" {
					if u = e.getenv(t.URLEnv); u == "" {
						return nil, fmt.Errorf("config: %s.handoff.notify[%d].url_env: environment variable %s is not set", ch.path, j, t.URLEnv)
					}
				}
				o.Notify = append(o.Notify, handoff.Target{Name: t.Name, Kind: t.Kind, URL: u})
			}
		}
		out[ch.ID] = o
	}
	return out, nil
}

// newHandoff builds the handoff service over the gateway's store, ledger,
// key ring and sender, and gives the rule engine its handoff action.
func (g *instance) newHandoff(e *env) error {
	chans, err := handoffChannels(e, g.cfg)
	if err != nil {
		return err
	}
	g.handoff = handoff.New(handoff.Options{Store: g.store, Ledger: g.led, Sealer: g.ring, Sender: g.sender,
		Channels: chans, Logger: g.log})
	g.engine.SetHandoffs(g.handoff)
	return nil
}

// gateHandoff puts the handoff gate before the rules: events of
// conversations a person owns are held for them, the consent keywords
// alone applied.
func (g *instance) gateHandoff(next pipeline.Action) pipeline.Action {
	return g.handoff.Gate(next, func(ctx context.Context, it *pipeline.Item, ev *line.Event) error {
		return g.engine.Consent(ctx, rules.Delivery{Key: it.Key, Channel: it.Channel, Destination: it.Destination,
			Retention: it.Retention, Subjects: it.Subjects, Record: it.Record, ReceivedMs: it.ReceivedMs, Header: it.Header}, ev)
	})
}

// startHandoffJobs starts the idle returns and the notifications.
func (g *instance) startHandoffJobs() {
	every := time.Minute
	for _, ch := range g.cfg.Channels {
		if h := ch.Handoff; h != nil && h.Idle > 0 {
			every = min(every, max(h.Idle/4, 500*time.Millisecond))
		}
	}
	ctx := g.bgCtx
	g.bg.Go(func() { g.handoff.RunIdle(ctx, every) })
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a notification goes where it is configured to, and no further
	}}
	g.bg.Go(func() { g.handoff.RunNotifications(ctx, time.Second, client) })
}
