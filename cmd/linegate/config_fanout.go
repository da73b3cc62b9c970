package main

import (
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/fanout"
)

// FanoutConfig sets the delivery of events to the channels' destinations
// (channels[].destinations), and the single webhook URL.
type FanoutConfig struct {
	// SingleWebhookURL also accepts webhooks at POST /webhook, for every
	// channel: the body's destination (the bot user id) names the
	// channel, whose bot_user_id it must be; the signature is then checked
	// with that channel's secrets. Off by default: one URL per channel
	// (/webhook/{id}) is what auditors prefer, since the URL alone says
	// which channel a request was for.
	SingleWebhookURL bool `yaml:"single_webhook_url"`
	// RulesWhenOwned says what linegate's own rules do on a channel whose
	// reply token a destination owns: "none" (default: they do not run;
	// the owner answers) or "push" (they run, and their messages go by
	// push, never by the owner's reply token).
	RulesWhenOwned string `yaml:"rules_when_owned"`
	// Retries: the first waits about base_delay (default 1s), each next
	// one twice as long, up to max_delay (default 5m), with jitter.
	BaseDelay time.Duration `yaml:"base_delay"`
	MaxDelay  time.Duration `yaml:"max_delay"`
	// The circuit breaker of each destination opens after
	// breaker_failures consecutive failed attempts (default 5); after
	// breaker_cooldown (default 30s) one probe is let through.
	BreakerFailures int           `yaml:"breaker_failures"`
	BreakerCooldown time.Duration `yaml:"breaker_cooldown"`
	// Each failed probe since the last success doubles the cooldown, up
	// to breaker_max_cooldown (default 1h): a destination that stays dead
	// costs a bounded number of attempts, and records, a day.
	BreakerMaxCooldown time.Duration `yaml:"breaker_max_cooldown"`
	// Concurrency is how many requests each destination has in flight
	// at once (default 4); a conversation's events are in one of them at
	// most, so that its order holds.
	Concurrency int `yaml:"concurrency"`
	// Batch is how many events one request to a destination carries at
	// most (default 20), as LINE's own webhooks carry several: a
	// conversation's next ones, in order, and other conversations'.
	Batch int `yaml:"batch"`
	// Linger is how long a destination's worker waits, after it has sent
	// everything that was ready, before it looks again (default 10ms):
	// what arrives meanwhile goes in fewer, fuller requests.
	Linger time.Duration `yaml:"linger"`
}

// DestinationConfig is one destination of a channel: a tool that receives
// the channel's events, signed with its own secret as LINE signs them.
type DestinationConfig struct {
	// Name identifies it (unique across channels): the admin API, the
	// records, the metrics and replay name it.
	Name string `yaml:"name"`
	// URL is https://, or http:// to a loopback IP address with
	// allow_http: true. Redirects are not followed.
	URL       string `yaml:"url"`
	AllowHTTP bool   `yaml:"allow_http"`
	// The destination's own signing secret (not the channel's): exactly
	// one of secret, secret_env, secret_file.
	Secret     string `yaml:"secret"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	// Role is "observer" (default: events without their replyToken) or
	// "reply_owner" (the events with their replyToken; at most one per
	// channel, and linegate's rules then never spend it).
	Role string `yaml:"role"`
	// Filters (empty: all): event types (message, follow, postback...),
	// source types (user, group, room, none), and pipeline outcomes
	// (default: processed, failed, unknown, standby, held, unknown_mode).
	EventTypes  []string `yaml:"event_types"`
	SourceTypes []string `yaml:"source_types"`
	Outcomes    []string `yaml:"outcomes"`
	// Timeout bounds one attempt (default 5s).
	Timeout time.Duration `yaml:"timeout"`
}

// destination builds the fan-out's destination of channel, its secret
// resolved with getenv (nil: not resolved, for the checks).
func (d *DestinationConfig) destination(channel string, getenv func(string) string) (*fanout.Destination, error) {
	fd := &fanout.Destination{Name: d.Name, Channel: channel, URL: d.URL, AllowHTTP: d.AllowHTTP,
		EventTypes: d.EventTypes, SourceTypes: d.SourceTypes, Outcomes: d.Outcomes,
		OwnsReplyToken: d.Role == "reply_owner", Timeout: d.Timeout}
	switch {
	case d.Secret != "":
		fd.SecretID = "secret:" + d.Name
	case d.SecretEnv != "":
		fd.SecretID = "secret_env:" + d.SecretEnv
	case d.SecretFile != "":
		fd.SecretID = "secret_file:" + d.SecretFile
	}
	if getenv != nil {
		s, err := (secretSource{"secret", d.Secret, d.SecretEnv, d.SecretFile}).resolve(getenv, true)
		if err != nil {
			return nil, err
		}
		fd.Secret = s
	}
	return fd, nil
}

// checkFanout checks the destinations and the fan-out settings.
func (c *Config) checkFanout(p *configParser) {
	switch c.Fanout.RulesWhenOwned {
	case "":
		c.Fanout.RulesWhenOwned = "none"
	case "none", "push":
	default:
		p.fail("fanout.rules_when_owned", "%q: want none or push", c.Fanout.RulesWhenOwned)
	}
	for key, v := range map[string]time.Duration{"fanout.base_delay": c.Fanout.BaseDelay, "fanout.max_delay": c.Fanout.MaxDelay,
		"fanout.breaker_cooldown": c.Fanout.BreakerCooldown, "fanout.breaker_max_cooldown": c.Fanout.BreakerMaxCooldown} {
		if v < 0 {
			p.fail(key, "%v: want a positive duration (0: the default)", v)
		}
	}
	if m := c.Fanout.BreakerMaxCooldown; m > 0 && m < max(c.Fanout.BreakerCooldown, 30*time.Second) {
		p.fail("fanout.breaker_max_cooldown", "%v: want at least %v (the larger of breaker_cooldown and 30s)", m, max(c.Fanout.BreakerCooldown, 30*time.Second))
	}
	if c.Fanout.Concurrency < 0 || c.Fanout.Concurrency > 64 {
		p.fail("fanout.concurrency", "%d: want 1 to 64 (0: the default, 4)", c.Fanout.Concurrency)
	}
	if c.Fanout.Linger < 0 || c.Fanout.Linger > time.Second {
		p.fail("fanout.linger", "%v: want 0 to 1s (0: the default, 10ms)", c.Fanout.Linger)
	}
	if c.Fanout.Batch < 0 || c.Fanout.Batch > 100 {
		p.fail("fanout.batch", "%d: want 1 to 100 (0: the default, 20)", c.Fanout.Batch)
	}
	if c.Fanout.BreakerFailures < 0 {
		p.fail("fanout.breaker_failures", "%d: want a positive number (0: the default)", c.Fanout.BreakerFailures)
	}
	names := map[string]string{}
	// A bot user id names one LINE channel, so two channels of the config
	// never share one, with or without the single webhook URL. With it,
	// POST /webhook would route both channels' webhooks to one of them,
	// the other's refused as badly signed (401) and lost. Without it, each
	// channel has its URL, but a bot user id copied onto the wrong channel
	// makes that channel take every genuine webhook of its own for foreign
	// (not answered): refusing it always costs no working config.
	bots := map[string]string{}
	for i := range c.Channels {
		ch := &c.Channels[i]
		owner := ""
		for j := range ch.Destinations {
			d := &ch.Destinations[j]
			path := fmt.Sprintf("channels[%d].destinations[%d]", i, j)
			switch d.Role {
			case "", "observer":
			case "reply_owner":
				if owner != "" {
					p.fail(path+".role", "channel %q has a reply token owner already (%s): at most one destination owns the reply token", ch.ID, owner)
				}
				owner = path
				if c.Proxy != nil && c.Proxy.ReplyOwners[ch.ID] != "" && c.Proxy.ReplyOwners[ch.ID] != d.Name {
					p.fail(path+".role", "proxy.reply_owners names %q as the owner of channel %q's reply tokens, not this destination %q",
						c.Proxy.ReplyOwners[ch.ID], ch.ID, d.Name)
				}
			default:
				p.fail(path+".role", "%q: want observer or reply_owner", d.Role)
			}
			n := 0
			for _, v := range []string{d.Secret, d.SecretEnv, d.SecretFile} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				p.fail(path, "give exactly one of secret, secret_env, secret_file: the destination's own signing secret, not the channel's")
			}
			fd, _ := d.destination(ch.ID, nil)
			if err := fd.Check(); err != nil {
				p.fail(path, "%v", err)
			}
			if first, ok := names[d.Name]; ok && d.Name != "" {
				p.fail(path+".name", "destination %q is named twice (first as %s): names are unique across channels", d.Name, first)
			}
			names[d.Name] = path
		}
		if ch.BotUserID != "" {
			path := fmt.Sprintf("channels[%d].bot_user_id", i)
			if first, ok := bots[ch.BotUserID]; ok {
				p.fail(path, "%s is the bot user id of channel %q already: one LINE channel's bot, configured twice", ch.BotUserID, first)
			}
			bots[ch.BotUserID] = ch.ID
		}
		if c.Fanout.SingleWebhookURL && ch.BotUserID == "" {
			p.fail(fmt.Sprintf("channels[%d].bot_user_id", i), "required with fanout.single_webhook_url: the destination of a webhook names its channel by it")
		}
	}
}

// checkDestinationSecrets resolves the channel's destinations' secrets, as
// serve will: each error names the key, never the value.
func (ch *ChannelConfig) checkDestinationSecrets(cfg *Config, getenv func(string) string) []error {
	var errs []error
	for j := range ch.Destinations {
		if _, err := ch.Destinations[j].destination(ch.ID, getenv); err != nil {
			path := ch.path + fmt.Sprintf(".destinations[%d]", j)
			if cfg.site != nil {
				err = cfg.site.locate(path, err)
			} else {
				err = fmt.Errorf("config: %s: %w", path, err)
			}
			errs = append(errs, err)
		}
	}
	return errs
}

// checkDestinationSecretReuse refuses a destination, or a rule's forward,
// whose secret, resolved as serve resolves it, is a channel's secret or
// next secret (its own channel's or another's): its target could sign
// webhooks linegate takes for LINE's. The secrets are compared in constant time; errors name
// the keys, never a value. Secrets that do not resolve are reported by the
// other checks.
func (cfg *Config) checkDestinationSecretReuse(getenv func(string) string) []error {
	type chanSecret struct {
		channel, key string
		value        []byte
	}
	var secrets []chanSecret
	for _, ch := range cfg.Channels {
		s, err := ch.resolve(getenv)
		if err != nil {
			continue
		}
		for _, cs := range []chanSecret{{ch.ID, "secret", s.secret}, {ch.ID, "next_secret", s.next}} {
			if len(cs.value) > 0 {
				secrets = append(secrets, cs)
			}
		}
	}
	var errs []error
	// The rules' forwards sign with secrets of their own too.
	if set, err := loadRules(&env{getenv: getenv}, cfg); err == nil {
		for _, r := range set.Rules {
			if r.Forward == nil {
				continue
			}
			for _, cs := range secrets {
				if r.Forward.SecretIs(cs.value) {
					errs = append(errs, cfg.site.errorf("rules", "rule %q: its forward's secret is channel %q's %s: its target could sign webhooks linegate takes for LINE's; give it a secret of its own",
						r.Name, cs.channel, cs.key))
					break
				}
			}
		}
	}
	for _, ch := range cfg.Channels {
		for j := range ch.Destinations {
			d, err := ch.Destinations[j].destination(ch.ID, getenv)
			if err != nil || len(d.Secret) == 0 {
				continue
			}
			for _, cs := range secrets {
				if subtle.ConstantTimeCompare(d.Secret, cs.value) != 1 {
					continue
				}
				path := ch.path + fmt.Sprintf(".destinations[%d]", j)
				err := fmt.Errorf("destination %q: its secret is channel %q's %s: a destination holding it could sign webhooks linegate takes for LINE's; give it a secret of its own",
					d.Name, cs.channel, cs.key)
				if cfg.site != nil {
					err = cfg.site.locate(path, err)
				} else {
					err = fmt.Errorf("config: %s: %w", path, err)
				}
				errs = append(errs, err)
				break
			}
		}
	}
	return errs
}
