package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/linegate/linegate/internal/canary"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/sim"
)

func init() {
	commands = append(commands, command{"canary", "the runbook's canary: a marker to the canary group and back, through the running gateway", runCanary})
}

// newCanary builds the canary watch of serve: the channels' canary groups,
// sending through the Sender, whose every send it checks for markers, and
// reading the store (state) for what other replicas saw.
func newCanary(cfg *Config, led *ledger.Ledger, state outbound.State, sender *outbound.Sender, log *slog.Logger) *canary.Watch {
	groups, classes := map[string]string{}, map[string]string{}
	for _, ch := range cfg.Channels {
		groups[ch.ID], classes[ch.ID] = ch.CanaryGroup, ch.Retention
	}
	w := canary.New(canary.Options{Groups: groups, Retention: classes, Ledger: led, State: state, Sender: sender, Logger: log})
	sender.InspectSends(w.CheckSend)
	return w
}

func runCanary(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "canary", []subcommand{
		{"run", "push a marker to a channel's canary group and wait for it to come back (exit 1 if it does not)", runCanaryRun},
	}, args)
}

func runCanaryRun(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "canary run", "-channel ID [-config FILE] [-admin URL] [-timeout D]")
	channel := fs.String("channel", "", "the channel whose canary group to test (required)")
	configPath := fs.String("config", "", "the running gateway's config: its admin_listen and admin token (default: the built-in example)")
	adminURL := fs.String("admin", "", "the gateway's admin listener, such as http://127.0.0.1:8081 (default: the config's admin_listen)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the marker to come back (at most 5m)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *channel == "" {
		return fmt.Errorf("%w: -channel is required", errUsage)
	}
	if *timeout <= 0 || *timeout > 5*time.Minute {
		return fmt.Errorf("%w: -timeout %s: want more than 0 and at most 5m", errUsage, *timeout)
	}
	admin, err := newAdminClient(e, *configPath, *adminURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+30*time.Second)
	defer cancel()
	var res canary.Result
	if err := admin.post(ctx, "/admin/canary", map[string]string{"channel": *channel, "timeout": timeout.String()}, &res); err != nil {
		return err
	}
	switch res.Outcome {
	case canary.OK:
		fmt.Fprintf(e.stdout, "canary ok: %s came back from the canary group of channel %s in %.0f ms (sent %s; record %d)\n",
			res.Marker, res.Channel, res.RoundTripMs, bothTimes(res.SentAt), res.Record)
		return nil
	case canary.Timeout:
		fmt.Fprintf(e.stdout, "canary TIMEOUT: %s was pushed to the canary group of channel %s (%s) and did not come back within %s (record %d)\n",
			res.Marker, res.Channel, res.Send, *timeout, res.Record)
	default:
		fmt.Fprintf(e.stdout, "canary FAILED: the push of %s to the canary group of channel %s was %s: %s (record %d)\n",
			res.Marker, res.Channel, res.Send, res.Reason, res.Record)
	}
	return errCanaryFailed
}

// errCanaryFailed is the exit status 1 of a canary that did not come back;
// the command has said why.
var errCanaryFailed = errors.New("the canary did not complete its round trip")

// canaryGroupPattern is a LINE group id, as a canary_group.
var canaryGroupPattern = regexp.MustCompile(`^C[0-9a-f]{32}$`)

// addCanaryGroups makes the canary groups of a gateway config echo
// groups of the simulator, so that `linegate canary run` completes its
// round trip against `linegate sim api -config`: each writes back to the
// channel's webhook URL, or, until one is set, to the config's listener.
func addCanaryGroups(api *sim.API, configPath string) error {
	if configPath == "" {
		return nil
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	for _, ch := range cfg.Channels {
		if ch.CanaryGroup != "" {
			api.AddEchoGroups(sim.EchoGroup{Channel: ch.ID, GroupID: ch.CanaryGroup,
				Endpoint: fmt.Sprintf("%s://%s/webhook/%s", scheme, cfg.Listen, ch.ID)})
		}
	}
	return nil
}
