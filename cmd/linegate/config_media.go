package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/linegate/linegate/internal/media"
)

// MediaConfig keeps the content of image, video, audio and file messages
// (docs/MEDIA.md). Off by default: on, linegate calls LINE's data API for
// every such message.
type MediaConfig struct {
	// Enabled fetches and records message content behind the
	// acknowledgement.
	Enabled bool `yaml:"enabled"`
	// DataAPIBase is LINE's data API, where content is fetched (default
	// https://api-data.line.me); a channel's line_data_api_base overrides
	// it.
	DataAPIBase string `yaml:"data_api_base"`
	// StoreMaxBytes is the largest content kept in the database when
	// object storage is configured (default 8 MiB); without object
	// storage all content is kept in the database.
	StoreMaxBytes int64 `yaml:"store_max_bytes"`
	// MaxBytes bounds the content fetched (default 64 MiB): larger content
	// is recorded as too large, with its size, and not kept.
	MaxBytes int64 `yaml:"max_bytes"`
	// Attempts bounds the tries of one fetch (default 5), the first
	// retry after RetryBase (default 1s), doubling up to 30s.
	Attempts  int           `yaml:"attempts"`
	RetryBase time.Duration `yaml:"retry_base"`
	// TranscodeWait bounds the wait for LINE's preparation of a video or
	// audio (default 2m), polled every TranscodePoll (default 1s).
	TranscodeWait time.Duration `yaml:"transcode_wait"`
	TranscodePoll time.Duration `yaml:"transcode_poll"`
	// Every is how often the worker looks for new messages when idle
	// (default 1s).
	Every time.Duration `yaml:"every"`
	// FetchExternal fetches content that users' apps host themselves
	// (contentProvider external) from the hosts in ExternalHosts
	// ("host:port" or "host"); otherwise only its URLs are recorded.
	FetchExternal bool     `yaml:"fetch_external"`
	ExternalHosts []string `yaml:"external_hosts"`
	// SentImageHosts, when not empty, has the images that rules send
	// (image messages) fetched from these hosts at send time and their
	// SHA-256 recorded with the send; an image elsewhere is recorded as
	// not fetched. It works whether or not media is enabled.
	SentImageHosts []string `yaml:"sent_image_hosts"`
	// SentImageMaxBytes bounds each sent image fetched (default 10 MiB).
	SentImageMaxBytes int64 `yaml:"sent_image_max_bytes"`
	// SentImageTimeout bounds each fetch (default 5s): it delays the send.
	SentImageTimeout time.Duration `yaml:"sent_image_timeout"`
}

// checkMedia checks the media section and the channels' unsend policies.
func (c *Config) checkMedia(p *configParser) {
	m := &c.Media
	if m.StoreMaxBytes < 0 || m.MaxBytes < 0 || m.Attempts < 0 || m.RetryBase < 0 || m.TranscodeWait < 0 || m.TranscodePoll < 0 || m.Every < 0 {
		p.fail("media", "store_max_bytes, max_bytes, attempts, retry_base, transcode_wait, transcode_poll and every must be 0 (the default) or more")
	}
	for key, hosts := range map[string][]string{"media.external_hosts": m.ExternalHosts, "media.sent_image_hosts": m.SentImageHosts} {
		for _, h := range hosts {
			if h == "" {
				p.fail(key, "an empty host: want host or host:port")
			} else if !validHostEntry(h) {
				p.fail(key, "%q: want host or host:port", h)
			}
		}
	}
	if m.SentImageMaxBytes < 0 || m.SentImageTimeout < 0 {
		p.fail("media", "sent_image_max_bytes and sent_image_timeout must be 0 (the default) or more")
	}
	if m.FetchExternal && len(m.ExternalHosts) == 0 {
		p.fail("media.fetch_external", "on, but media.external_hosts is empty: list the hosts content may be fetched from")
	}
	for i := range c.Channels {
		switch c.Channels[i].Unsend {
		case "", "keep", "delete":
		default:
			p.fail(fmt.Sprintf("channels[%d].unsend", i), "%q: want keep (the default) or delete", c.Channels[i].Unsend)
		}
	}
}

// validHostEntry reports whether e is "host" or "host:port": a DNS name
// or an IP address, and a port number.
func validHostEntry(e string) bool {
	host, port, err := net.SplitHostPort(e)
	if err != nil {
		host, port = e, ""
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	return net.ParseIP(host) != nil || validHostName(host)
}

// validHostName reports whether h looks like a DNS name.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '.' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// mediaChannels returns the worker's view of the channels: where their
// content is, and their tokens.
func mediaChannels(cfg *Config, secrets map[string]channelSecrets) map[string]media.Channel {
	out := map[string]media.Channel{}
	for _, ch := range cfg.Channels {
		s := secrets[ch.ID]
		base := ch.LineDataAPIBase
		if base == "" {
			base = cfg.Media.DataAPIBase
		}
		tok := func(ctx context.Context) ([]byte, error) {
			if s.tokens != nil {
				return s.tokens.Token(ctx)
			}
			return s.token, nil
		}
		out[ch.ID] = media.Channel{DataAPIBase: base, Token: tok, Unsend: ch.Unsend}
	}
	return out
}

// startMedia starts the media worker when media.enabled is on, or a
// channel's unsend policy is delete: it keeps content (and applies the
// unsend policies) from the messages received from now on, after the
// cursor it left at its last run.
func (g *instance) startMedia(ctx context.Context, secrets map[string]channelSecrets) error {
	cfg := g.cfg
	unsendDelete := false
	for _, ch := range cfg.Channels {
		unsendDelete = unsendDelete || ch.Unsend == "delete"
	}
	if !cfg.Media.Enabled && !unsendDelete {
		return nil
	}
	minKeep := map[string]time.Duration{}
	for class, p := range cfg.policies() {
		minKeep[class] = p.MinKeep
	}
	if g.blobs == nil {
		var err error
		if g.blobs, err = openMediaBlobs(cfg); err != nil {
			return err
		}
	}
	m := cfg.Media
	w := media.New(media.Options{
		Log: g.store, Settings: g.store, Commit: g.led, Sealer: g.ring,
		Channels:     mediaChannels(cfg, secrets),
		DisableFetch: !cfg.Media.Enabled, Subjects: g.store, MinKeep: minKeep,
		Blobs:    g.blobs,
		StoreMax: m.StoreMaxBytes, MaxBytes: m.MaxBytes, Attempts: m.Attempts, RetryBase: m.RetryBase,
		TranscodeWait: m.TranscodeWait, TranscodePoll: m.TranscodePoll,
		FetchExternal: m.FetchExternal, ExternalHosts: media.Fence(m.ExternalHosts),
		Keep: cfg.keep(), Logger: g.log,
	})
	if err := w.Init(ctx); err != nil {
		return err
	}
	if g.reg != nil {
		g.reg.MustRegister(w.Collectors()...)
	}
	every := m.Every
	if every <= 0 {
		every = time.Second
	}
	g.bg.Go(func() { w.Run(g.bgCtx, every, g.led.Sequencing) })
	return nil
}

// sentImages returns the outbound sender's annotation that hashes the
// images rules send, or nil when media.sent_image_hosts is empty.
func sentImages(cfg *Config) func(ctx context.Context, channel string, body []byte) map[string]string {
	m := cfg.Media
	if len(m.SentImageHosts) == 0 {
		return nil
	}
	return media.SentImages{Fence: media.Fence(m.SentImageHosts), MaxBytes: m.SentImageMaxBytes, Timeout: m.SentImageTimeout}.Annotate
}
