package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

const simUsage = `Usage: linegate sim <api|send|chat> [flags]

  api    run the fake LINE Messaging API
  send   send signed webhooks to a gateway: fixtures or a synthetic conversation
  chat   type as a LINE user in the terminal and see the bot's replies`

func runSim(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, simUsage)
		return fmt.Errorf("%w: missing sim command", errUsage)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "api":
		return runSimAPI(ctx, e, args[1:])
	case "send":
		return runSimSend(ctx, e, args[1:])
	case "chat":
		return runSimChat(ctx, e, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(e.stdout, simUsage)
		return nil
	}
	fmt.Fprintln(e.stderr, simUsage)
	return fmt.Errorf("%w: unknown sim command %q", errUsage, args[0])
}

// simChannels returns the channels of a gateway config, for the fake API
// to know their tokens and secrets; none without a config.
func simChannels(e *env, configPath string) ([]sim.Channel, error) {
	if configPath == "" {
		return nil, nil
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	var out []sim.Channel
	for _, ch := range cfg.Channels {
		s, err := ch.resolve(e.getenv)
		if err != nil {
			return nil, err
		}
		sc := sim.Channel{ID: ch.ID, Secret: string(s.secret), AccessToken: string(s.token), ClientID: ch.ChannelID, Endpoint: ch.WebhookURL}
		if s.issue != nil && s.issue.Key != nil {
			sc.AssertionKeys = append(sc.AssertionKeys, s.issue.Key.Public())
		}
		out = append(out, sc)
	}
	return out, nil
}

type faultFlags struct{ f sim.Faults }

func (ff *faultFlags) register(fs interface {
	DurationVar(*time.Duration, string, time.Duration, string)
	Float64Var(*float64, string, float64, string)
}) {
	fs.DurationVar(&ff.f.Latency, "latency", 0, "fault injection: latency added to every API call")
	fs.DurationVar(&ff.f.Jitter, "jitter", 0, "fault injection: up to this much more latency, at random")
	fs.Float64Var(&ff.f.ErrorRate, "error-rate", 0, "fault injection: share of API calls answered 500")
	fs.Float64Var(&ff.f.DropRate, "drop-rate", 0, "fault injection: share of API calls whose connection is dropped")
}

func runSimAPI(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sim api", "[-listen ADDR] [-config FILE] [flags]")
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve the fake Messaging API on")
	configPath := fs.String("config", "", "a linegate config whose channels (tokens, secrets) the API knows; without it any bearer token is accepted")
	ttl := fs.Duration("reply-token-ttl", 60*time.Second, "how long a reply token stays valid")
	rateLimit := fs.Float64("rate-limit", 2000, "requests per second per channel and endpoint, beyond which the API answers 429")
	quota := fs.Int64("quota", 0, "each channel's monthly message quota (0: none); past it, pushes answer 429")
	statelessTTL := fs.Duration("stateless-token-ttl", 15*time.Minute, "the lifetime of the stateless channel access tokens of POST /oauth2/v3/token")
	var ff faultFlags
	ff.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	channels, err := simChannels(e, *configPath)
	if err != nil {
		return err
	}
	for i := range channels {
		channels[i].Quota = *quota
	}
	api := sim.NewAPI(sim.Options{Channels: channels, ReplyTokenTTL: *ttl, RateLimit: *rateLimit, Faults: ff.f, StatelessTokenTTL: *statelessTTL})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if err := addCanaryGroups(api, *configPath); err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(e.stderr, "fake LINE Messaging API on http://%s (calls: GET /_sim/calls)\n", ln.Addr())
	return serveUntilDone(ctx, &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}, ln)
}

// serveUntilDone serves on ln until ctx ends, then shuts srv down.
func serveUntilDone(ctx context.Context, srv *http.Server, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// webhookTarget resolves the webhook URL and secret from flags or a config.
func webhookTarget(e *env, url, secret, configPath, channel string) (string, []byte, error) {
	if configPath == "" {
		if url == "" || secret == "" {
			return "", nil, fmt.Errorf("%w: give -config, or -url and -secret", errUsage)
		}
		return url, []byte(secret), nil
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return "", nil, err
	}
	for _, ch := range cfg.Channels {
		if channel != "" && ch.ID != channel {
			continue
		}
		s, err := ch.resolve(e.getenv)
		if err != nil {
			return "", nil, err
		}
		if url == "" {
			scheme := "http"
			if cfg.TLS != nil {
				scheme = "https"
			}
			url = fmt.Sprintf("%s://%s/webhook/%s", scheme, cfg.Listen, ch.ID)
		}
		if secret != "" {
			return url, []byte(secret), nil
		}
		return url, s.secret, nil
	}
	return "", nil, fmt.Errorf("channel %q is not in %s", channel, configPath)
}

func runSimSend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sim send", "(-config FILE [-channel ID] | -url URL -secret S) [flags]")
	url := fs.String("url", "", "the gateway's webhook URL")
	secret := fs.String("secret", "", "the channel secret to sign with")
	configPath := fs.String("config", "", "take the URL and secret from a linegate config")
	channel := fs.String("channel", "", "the channel of the config (default: the first)")
	dir := fs.String("dir", "", "replay the *.json webhook bodies of this directory (default: a synthetic conversation)")
	rate := fs.Float64("rate", 0, "requests per second, open loop; 0 sends as fast as answered (closed loop)")
	conc := fs.Int("concurrency", 32, "connections")
	count := fs.Int("count", 0, "requests to send")
	duration := fs.Duration("duration", 0, "how long to send")
	users := fs.Int("users", 100, "synthetic: distinct users")
	events := fs.Int("events", 1, "synthetic: events per request")
	redeliveries := fs.Float64("redeliveries", 0, "synthetic: share of events redelivered (isRedelivery, same webhookEventId)")
	duplicates := fs.Float64("duplicates", 0, "synthetic: share of requests sent twice")
	apiURL := fs.String("api", "", "a running `linegate sim api` to take reply tokens from, so that replies succeed")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *count <= 0 && *duration <= 0 {
		return fmt.Errorf("%w: give -count or -duration", errUsage)
	}
	target, key, err := webhookTarget(e, *url, *secret, *configPath, *channel)
	if err != nil {
		return err
	}
	var src sim.Source
	if *dir != "" {
		if src, err = sim.NewFixtureSource(*dir); err != nil {
			return err
		}
	} else {
		conv := &sim.Conversation{Users: *users, EventsPerBody: *events, Redeliveries: *redeliveries, Duplicates: *duplicates}
		if *apiURL != "" {
			conv.ReplyToken = remoteReplyToken(*apiURL)
		}
		src = conv
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}}
	res, err := sim.Send(ctx, client, target, key, src, sim.Load{Rate: *rate, Concurrency: *conc, Count: *count, Duration: *duration})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"sent": res.Sent, "statuses": res.Statuses, "errors": res.Errors, "elapsed_s": res.Elapsed.Seconds(),
			"throughput_rps": res.Throughput(), "p50_ms": ms(res.Percentile(0.5)), "p99_ms": ms(res.Percentile(0.99)),
			"p999_ms": ms(res.Percentile(0.999)), "max_ms": ms(res.Percentile(1)),
		})
	}
	var st []string
	for code, n := range res.Statuses {
		st = append(st, fmt.Sprintf("%d×%d", n, code))
	}
	fmt.Fprintf(e.stdout, "sent %d in %v (%.0f/s): %s, %d errors\nlatency p50 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms\n",
		res.Sent, res.Elapsed.Round(time.Millisecond), res.Throughput(), strings.Join(st, " "), res.Errors,
		ms(res.Percentile(0.5)), ms(res.Percentile(0.99)), ms(res.Percentile(0.999)), ms(res.Percentile(1)))
	if res.Errors > 0 || res.OK() != res.Sent {
		return fmt.Errorf("%d of %d requests were not answered 200", res.Sent-res.OK(), res.Sent)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// remoteReplyToken takes reply tokens from a running fake API.
func remoteReplyToken(apiURL string) func() string {
	c := &http.Client{Timeout: 5 * time.Second}
	return func() string {
		resp, err := c.Post(strings.TrimSuffix(apiURL, "/")+"/_sim/reply-tokens", "application/json", nil)
		if err != nil {
			return "unavailable"
		}
		defer resp.Body.Close()
		var v struct{ ReplyToken string }
		json.NewDecoder(resp.Body).Decode(&v)
		return v.ReplyToken
	}
}

func runSimChat(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sim chat", "[-config FILE] [-channel ID] [-api-listen ADDR] [flags]")
	configPath := fs.String("config", "", "the running gateway's config (default: the built-in example)")
	channel := fs.String("channel", "", "the channel to chat with (default: the first)")
	url := fs.String("url", "", "the gateway's webhook URL (default: from the config)")
	secret := fs.String("secret", "", "the channel secret (default: from the config)")
	apiListen := fs.String("api-listen", "127.0.0.1:8090", "where to serve the fake Messaging API the gateway replies to (its line_api_base)")
	user := fs.String("user", "U"+strings.Repeat("0", 31)+"1", "the LINE user id you chat as")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the bot's answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cp := *configPath
	if cp == "" && *url == "" {
		cp = builtinConfig
	}
	target, key, err := webhookTarget(e, *url, *secret, cp, *channel)
	if err != nil {
		return err
	}
	var channels []sim.Channel
	if cp != "" {
		if channels, err = simChannels(e, cp); err != nil {
			return err
		}
	}
	api := sim.NewAPI(sim.Options{Channels: channels})
	ln, err := net.Listen("tcp", *apiListen)
	if err != nil {
		return fmt.Errorf("fake Messaging API: %w", err)
	}
	go serveUntilDone(ctx, &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}, ln)
	dest := sim.BotUserID(path.Base(target))
	return sim.Chat(ctx, os.Stdin, e.stdout, sim.ChatOptions{
		WebhookURL: target, Secret: key, API: api, User: *user, Destination: dest, Wait: *wait,
	})
}
