package main

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/linegate/linegate/internal/fanout"
)

// runReplay asks the running gateway (its admin API) to deliver the
// recorded events of a time range again to one destination, each marked
// as a redelivery. The gateway reads them from the ledger, records the
// request, and queues them behind what is queued already.
func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "replay", "-destination NAME -from T -to T [-channel ID] [-reason TEXT] [-config FILE] [-admin URL]")
	dest := fs.String("destination", "", "the destination to deliver to again (required)")
	from := fs.String("from", "", "the start of the range, RFC 3339 such as 2026-12-01T09:00:00Z (required; webhooks received at or after it)")
	to := fs.String("to", "", "the end of the range, RFC 3339 (required; webhooks received before it)")
	channel := fs.String("channel", "", "the destination's channel (optional: checked against the destination's)")
	reason := fs.String("reason", "", "why, recorded with the request")
	configPath := fs.String("config", "", "the running gateway's config: its admin_listen and admin token (default: the built-in example)")
	adminURL := fs.String("admin", "", "the gateway's admin listener, such as http://127.0.0.1:8081 (default: the config's admin_listen)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dest == "" || *from == "" || *to == "" {
		return fmt.Errorf("%w: -destination, -from and -to are required", errUsage)
	}
	tf, err := time.Parse(time.RFC3339Nano, *from)
	if err != nil {
		return fmt.Errorf("%w: -from %q: want RFC 3339, such as 2026-12-01T09:00:00Z", errUsage, *from)
	}
	tt, err := time.Parse(time.RFC3339Nano, *to)
	if err != nil {
		return fmt.Errorf("%w: -to %q: want RFC 3339, such as 2026-12-01T10:00:00Z", errUsage, *to)
	}
	if !tf.Before(tt) {
		return fmt.Errorf("%w: -from must be before -to", errUsage)
	}
	admin, err := newAdminClient(e, *configPath, *adminURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var res fanout.ReplayResult
	if err := admin.post(ctx, "/admin/destinations/"+url.PathEscape(*dest)+"/replay",
		fanout.ReplayRequest{From: tf, To: tt, Channel: *channel, Reason: *reason}, &res); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "replay queued: %d events of %d webhooks of channel %s for destination %s, marked as redeliveries (%d left out by its filters, %d unreadable; admin record %d)\n",
		res.Events, res.Webhooks, res.Channel, res.Destination, res.Skipped, res.Unreadable, res.Admin)
	return nil
}
