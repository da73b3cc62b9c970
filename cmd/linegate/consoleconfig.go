package main

import (
	"fmt"
	"net/url"
	"time"

	"github.com/linegate/linegate/internal/console"
)

// ConsoleConfig configures the web console, served on the admin listener
// under /console/ (docs/CONSOLE.md). Without it, there is no console.
type ConsoleConfig struct {
	// Users may log in, each with a role: agent (the inbox of its
	// channels), auditor (verify, checkpoint, anchors, holds, deletion
	// requests, evidence bundles), operator (kill switch, dry-run, rules,
	// LINE's webhook endpoint and quota, the pipeline) or admin (all of
	// it, every channel).
	Users []ConsoleUser `yaml:"users"`
	// SecureCookie marks the session cookie Secure (HTTPS only) though
	// the admin listener speaks plain HTTP: set it when TLS ends in a
	// proxy in front of the console. A request over TLS gets it anyway.
	SecureCookie bool `yaml:"secure_cookie"`
	// PublicURL is the console's address as browsers see it, such as
	// https://console.example.com/console/, when a proxy's differs from
	// the Host the console receives: state-changing requests must come
	// from its origin (scheme, host and port). Default: the request's
	// own host.
	PublicURL string `yaml:"public_url"`
	// IdleTimeout ends a session unused this long (default 30m); MaxAge
	// ends any session this long after its login (default 12h).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	MaxAge      time.Duration `yaml:"max_age"`
	// LoginFailures failed logins within LoginWindow make a user name,
	// or a remote address, wait until the window has passed: 429 with
	// Retry-After (defaults 5 and 1m).
	LoginFailures int           `yaml:"login_failures"`
	LoginWindow   time.Duration `yaml:"login_window"`
	// TrustedProxies are the CIDRs (or addresses) of the proxies in
	// front of the console: only from them is X-Forwarded-For read, for
	// the login limits and the records' remote address (docs/CONSOLE.md).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// BundleMinFreeMB is the free space (MiB) the data directory's file
	// system must keep for an evidence bundle to start (default 512).
	BundleMinFreeMB int64 `yaml:"bundle_min_free_mb"`
}

// ConsoleUser is a person who may log into the console.
type ConsoleUser struct {
	Name string `yaml:"name"`
	// Role is agent, auditor, operator or admin.
	Role string `yaml:"role"`
	// PasswordHash is the password's argon2id hash in the PHC string
	// format, or a bcrypt hash: `linegate console hash-password` makes
	// one. Never the password itself.
	PasswordHash string `yaml:"password_hash"`
	// Channels are the channels whose conversations an agent answers
	// (agents only; an admin sees every channel).
	Channels []string `yaml:"channels"`
}

// checkConsole checks the console's settings and users.
func (c *Config) checkConsole(p *configParser) {
	cc := c.Console
	if cc == nil {
		return
	}
	if len(cc.Users) == 0 {
		p.fail("console.users", "no user: list the people who may log in (or remove console:)")
	}
	if cc.IdleTimeout < 0 || cc.MaxAge < 0 || cc.LoginWindow < 0 {
		p.fail("console", "idle_timeout, max_age and login_window: want positive durations such as 30m")
	}
	if cc.PublicURL != "" {
		if _, err := cc.origin(); err != nil {
			p.fail("console.public_url", "%q: want an http(s) URL such as https://console.example.com/console/", cc.PublicURL)
		}
	}
	if _, err := console.ParseTrustedProxies(cc.TrustedProxies); err != nil {
		p.fail("console.trusted_proxies", "%v: want CIDRs such as 10.0.0.0/8 or addresses", err)
	}
	if cc.BundleMinFreeMB < 0 || cc.BundleMinFreeMB > 1<<30 {
		p.fail("console.bundle_min_free_mb", "%d: want a number of MiB (default 512)", cc.BundleMinFreeMB)
	}
	if cc.LoginFailures < 0 {
		p.fail("console.login_failures", "%d: want a positive number (default 5)", cc.LoginFailures)
	}
	if err := console.CheckUsers(cc.users(), channelIDs(c)); err != nil {
		p.fail("console", "%v", err)
	}
}

// origin is the origin of the public URL ("" when none is set).
func (cc *ConsoleConfig) origin() (string, error) {
	if cc.PublicURL == "" {
		return "", nil
	}
	u, err := url.Parse(cc.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("not an http(s) URL")
	}
	return u.Scheme + "://" + u.Host, nil
}

// users returns the console's users.
func (cc *ConsoleConfig) users() []console.User {
	var us []console.User
	for _, u := range cc.Users {
		us = append(us, console.User{Name: u.Name, Role: console.Role(u.Role), Hash: u.PasswordHash, Channels: u.Channels})
	}
	return us
}
