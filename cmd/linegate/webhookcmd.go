package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
)

func runWebhook(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "webhook", []subcommand{
		{"get", "show the webhook URL LINE has for each channel, and whether it is in use", runWebhookGet},
		{"set", "set a channel's webhook URL on LINE (-test: test it, and put the previous URL back if the test fails)", runWebhookSet},
		{"test", "have LINE send a test webhook to a channel's URL, and print what LINE reports", runWebhookTest},
	}, args)
}

// lineChannel is a channel of the config with its Messaging API client.
type lineChannel struct {
	cfg    *ChannelConfig
	client *outbound.Client
}

// lineChannels returns the config's channels that id selects (all when
// id is ""), each with a client for LINE's API. A channel without an
// access token cannot be asked: it is an error when named, skipped
// otherwise.
func lineChannels(e *env, cfg *Config, id string) ([]lineChannel, error) {
	var out []lineChannel
	for i := range cfg.Channels {
		ch := &cfg.Channels[i]
		if id != "" && ch.ID != id {
			continue
		}
		s, err := ch.resolve(e.getenv)
		if err != nil {
			return nil, err
		}
		if len(s.token) == 0 {
			if id != "" {
				if s.issue != nil {
					return nil, fmt.Errorf("channel %q issues its own short-lived tokens (channel_id), which only serve holds: webhook commands need a channel with access_token; set this channel's webhook in the LINE Developers Console (Messaging API tab)", ch.ID)
				}
				return nil, fmt.Errorf("channel %q has no access token: give access_token_file or access_token_env in its config", ch.ID)
			}
			continue
		}
		out = append(out, lineChannel{ch, channelClient(cfg, ch, s.token)})
	}
	if id != "" && len(out) == 0 {
		return nil, &helpHint{"webhook", fmt.Errorf("%w: channel %q is not in the config", errUsage, id)}
	}
	if len(out) == 0 {
		return nil, errors.New("no channel of the config has an access token")
	}
	return out, nil
}

// channelClient returns a Messaging API client for a channel.
func channelClient(cfg *Config, ch *ChannelConfig, token []byte) *outbound.Client {
	base := ch.LineAPIBase
	if base == "" {
		base = cfg.LineAPIBase
	}
	return &outbound.Client{Base: base, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// oneChannel returns the channel a command that changes something acts
// on: the one named, or the config's only one.
func oneChannel(e *env, cfg *Config, id, cmd string) (lineChannel, error) {
	if id == "" && len(cfg.Channels) > 1 {
		return lineChannel{}, &helpHint{cmd, fmt.Errorf("%w: the config has %d channels: give -channel ID", errUsage, len(cfg.Channels))}
	}
	chs, err := lineChannels(e, cfg, id)
	if err != nil {
		return lineChannel{}, err
	}
	return chs[0], nil
}

func runWebhookGet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "webhook get", "[-config FILE] [-channel ID] [-json]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	channel := fs.String("channel", "", "the channel (default: every channel with an access token)")
	asJSON := fs.Bool("json", false, "print JSON: one object a channel")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	chs, err := lineChannels(e, cfg, *channel)
	if err != nil {
		return err
	}
	type result struct {
		Channel    string `json:"channel"`
		Endpoint   string `json:"endpoint"`
		Active     bool   `json:"active"`
		Configured string `json:"configured,omitempty"`
		Matches    *bool  `json:"matches,omitempty"`
		RequestID  string `json:"x_line_request_id,omitempty"`
		Error      string `json:"error,omitempty"`
	}
	var out []result
	failed := 0
	for _, ch := range chs {
		ep, x, err := ch.client.WebhookEndpoint(ctx)
		r := result{Channel: ch.cfg.ID, Endpoint: ep.Endpoint, Active: ep.Active, Configured: ch.cfg.WebhookURL, RequestID: x.RequestID}
		var ae *outbound.APIError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			// No URL was ever set.
		case err != nil:
			r.Error = err.Error()
			failed++
		}
		if r.Configured != "" && r.Error == "" {
			m := r.Endpoint == r.Configured
			r.Matches = &m
		}
		out = append(out, r)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		for _, r := range out {
			switch {
			case r.Error != "":
				fmt.Fprintf(e.stdout, "%s: %s\n", r.Channel, r.Error)
				continue
			case r.Endpoint == "":
				fmt.Fprintf(e.stdout, "%s: no webhook URL set on LINE (not in use)\n", r.Channel)
			default:
				state := "in use"
				if !r.Active {
					state = `NOT in use ("Use webhook" is off in the LINE Developers Console)`
				}
				fmt.Fprintf(e.stdout, "%s: %s, %s\n", r.Channel, r.Endpoint, state)
			}
			if r.Matches != nil && !*r.Matches {
				fmt.Fprintf(e.stdout, "  not the configured webhook_url %s\n", r.Configured)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d channels could not be read from LINE", failed, len(out))
	}
	return nil
}

func runWebhookTest(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "webhook test", "[-config FILE] [-channel ID] [-url URL]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	channel := fs.String("channel", "", "the channel (required when the config has more than one)")
	url := fs.String("url", "", "the URL to test (default: the one LINE has)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	ch, err := oneChannel(e, cfg, *channel, "webhook test")
	if err != nil {
		return err
	}
	w := webhookAction{e: e, ctx: ctx, store: store, ring: ring, ch: ch}
	res, err := w.test(*url, *url)
	if err != nil {
		return err
	}
	if !res.Success {
		return fmt.Errorf("the webhook test failed: %s", describeTest(res))
	}
	return nil
}

func runWebhookSet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "webhook set", "[-config FILE] [-channel ID] [-url URL] [-test] -reason TEXT")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	channel := fs.String("channel", "", "the channel (required when the config has more than one)")
	url := fs.String("url", "", "the new webhook URL (default: the channel's webhook_url)")
	test := fs.Bool("test", false, "test the new URL at once, and put the previous one back if the test fails (a blue/green switch)")
	reason := fs.String("reason", "", "why: a change or incident number (recorded)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	ch, err := oneChannel(e, cfg, *channel, "webhook set")
	if err != nil {
		return err
	}
	target := *url
	if target == "" {
		target = ch.cfg.WebhookURL
	}
	if target == "" {
		return &helpHint{"webhook set", fmt.Errorf("%w: give -url, or webhook_url in channel %q's config", errUsage, ch.cfg.ID)}
	}
	w := webhookAction{e: e, ctx: ctx, store: store, ring: ring, ch: ch, reason: *reason}
	// The URL LINE has now: the one to go back to.
	prev, _, err := ch.client.WebhookEndpoint(ctx)
	var ae *outbound.APIError
	if err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
		return fmt.Errorf("reading the current webhook URL: %w", err)
	}
	if err := w.set("webhook_set", target, prev.Endpoint); err != nil {
		return err
	}
	if !*test {
		return nil
	}
	res, err := w.test("", target)
	if err == nil && res.Success {
		return nil
	}
	why := "the test could not be made"
	if err == nil {
		why = describeTest(res)
	}
	if prev.Endpoint == "" {
		return fmt.Errorf("the new webhook URL failed its test (%s), and there was no previous URL to put back: %s stays set", why, target)
	}
	fmt.Fprintf(e.stdout, "%s: the new URL failed its test: putting %s back\n", ch.cfg.ID, prev.Endpoint)
	// LINE may fail a call for a moment (a 5xx, a lost connection) just
	// when the new URL failed: the previous URL is put back with retries,
	// each attempt recorded, before the command gives up with the broken
	// URL in place.
	for attempt, wait := 1, 500*time.Millisecond; ; attempt, wait = attempt+1, wait*2 {
		if err = w.set("webhook_rollback", prev.Endpoint, target, "failed_test", why, "attempt", fmt.Sprint(attempt)); err == nil {
			break
		}
		if attempt == rollbackAttempts {
			return fmt.Errorf("the new webhook URL failed its test (%s), and putting the previous one back failed %d times: %s stays set: %w", why, attempt, target, err)
		}
		fmt.Fprintf(e.stdout, "%s: putting %s back failed (%v): again in %v\n", ch.cfg.ID, prev.Endpoint, err, wait)
		select {
		case <-w.ctx.Done():
			return fmt.Errorf("the new webhook URL failed its test (%s), and putting the previous one back was interrupted: %s stays set: %w", why, target, err)
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("the new webhook URL failed its test (%s): the previous URL %s is back", why, prev.Endpoint)
}

// rollbackAttempts is how often webhook set -test tries to put the
// previous URL back (over about 15 seconds).
const rollbackAttempts = 6

// webhookAction makes a webhook change or test on LINE and records it.
type webhookAction struct {
	e      *env
	ctx    context.Context
	store  backend
	ring   ledger.Sealer
	ch     lineChannel
	reason string
}

// set sets the channel's webhook URL to endpoint and records it (action
// webhook_set or webhook_rollback), with the URL it replaces and extra
// detail (key, value pairs).
func (w *webhookAction) set(action, endpoint, replaced string, extra ...string) error {
	x, err := w.ch.client.SetWebhookEndpoint(w.ctx, endpoint)
	detail := w.detail(x)
	detail["endpoint"], detail["previous"], detail["ok"] = endpoint, replaced, err == nil
	for i := 0; i+1 < len(extra); i += 2 {
		detail[extra[i]] = extra[i+1]
	}
	if err != nil {
		detail["error"] = err.Error()
	}
	if _, rerr := appendAdmin(w.ctx, w.store, w.ring, action, detail, nil); rerr != nil {
		return errors.Join(err, fmt.Errorf("recording %s: %w", action, rerr))
	}
	if err != nil {
		return fmt.Errorf("setting the webhook URL: %w", err)
	}
	fmt.Fprintf(w.e.stdout, "%s: webhook URL set to %s (x-line-request-id %s)\n", w.ch.cfg.ID, endpoint, x.RequestID)
	return nil
}

// test has LINE test the URL given, or the one set, prints what LINE
// reports, and records it (action webhook_test), with the URL tested
// when it is known.
func (w *webhookAction) test(endpoint, tested string) (outbound.WebhookTest, error) {
	res, x, err := w.ch.client.TestWebhookEndpoint(w.ctx, endpoint)
	detail := w.detail(x)
	if tested != "" {
		detail["endpoint"] = tested
	}
	if err != nil {
		detail["error"] = err.Error()
	} else {
		detail["success"], detail["status_code"], detail["line_reason"], detail["line_detail"], detail["timestamp"] =
			res.Success, res.StatusCode, res.Reason, res.Detail, res.Timestamp
	}
	if _, rerr := appendAdmin(w.ctx, w.store, w.ring, "webhook_test", detail, nil); rerr != nil {
		return res, errors.Join(err, fmt.Errorf("recording webhook_test: %w", rerr))
	}
	if err != nil {
		return res, fmt.Errorf("testing the webhook URL: %w", err)
	}
	state := "OK"
	if !res.Success {
		state = "FAILED"
	}
	fmt.Fprintf(w.e.stdout, "%s: webhook test %s: %s (x-line-request-id %s)\n", w.ch.cfg.ID, state, describeTest(res), x.RequestID)
	return res, nil
}

// detail is what every webhook record carries: the channel, why, and
// LINE's answer.
func (w *webhookAction) detail(x outbound.Exchange) map[string]any {
	d := map[string]any{"channel": w.ch.cfg.ID, "status": x.Status}
	if x.RequestID != "" {
		d["x_line_request_id"] = x.RequestID
	}
	if w.reason != "" {
		d["reason"] = w.reason
	}
	return d
}

// describeTest says what LINE reported of a webhook test.
func describeTest(t outbound.WebhookTest) string {
	return fmt.Sprintf("status %d, reason %s, detail %q", t.StatusCode, t.Reason, t.Detail)
}
