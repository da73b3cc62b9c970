package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	token, err := cfg.adminToken(e.getenv)
	if err != nil {
		return err
	}
	base := *adminURL
	if base == "" {
		base = adminBase(cfg.AdminListen)
	}
	base = strings.TrimSuffix(base, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return fmt.Errorf("%w: -admin %q: want http:// or https://", errUsage, base)
	}
	body, _ := json.Marshal(fanout.ReplayRequest{From: tf, To: tt, Channel: *channel, Reason: *reason})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	u := base + "/admin/destinations/" + *dest + "/replay"
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: -admin or -destination: %v", errUsage, err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("the gateway's admin listener: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var res fanout.ReplayResult
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	fmt.Fprintf(e.stdout, "replay queued: %d events of %d webhooks of channel %s for destination %s, marked as redeliveries (%d left out by its filters, %d unreadable; admin record %d)\n",
		res.Events, res.Webhooks, res.Channel, res.Destination, res.Skipped, res.Unreadable, res.Admin)
	return nil
}
