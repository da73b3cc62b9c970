package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/retention"
)

func runHold(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "hold", []subcommand{
		{"add", "hold records back from deletion: by channel, subject and time range", runHoldAdd},
		{"release", "release a hold by its id", runHoldRelease},
		{"list", "list the holds, active and released", runHoldList},
	}, args)
}

func runHoldAdd(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "hold add", "-reason TEXT [-config FILE] [-channel ID] [-subject user:U...] [-from T] [-to T]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	channel := fs.String("channel", "", "the channel held (default: all)")
	subject := fs.String("subject", "", "the subject held: user:U..., group:C... or room:R... (a bare U..., C... or R... is one too; default: all)")
	from := fs.String("from", "", "records from this time: 2026-11-26 (UTC midnight) or RFC 3339 (default: the beginning)")
	to := fs.String("to", "", "records before this time (default: open)")
	reason := fs.String("reason", "", "why: a case number (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := newHold(*channel, *subject, *from, *to, *reason)
	if err != nil {
		return &helpHint{"hold add", fmt.Errorf("%w: %v", errUsage, err)}
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	n, err := appendAdmin(ctx, store, ring, "legal_hold_added", h.Detail(), h.Subjects(), retention.AddHold{Hold: h})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "hold %d added: %s\n", n, describeHold(h))
	return nil
}

func runHoldRelease(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "hold release", "-id N [-config FILE]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	id := fs.Int64("id", 0, "the hold's id, as hold add and hold list give it (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *id <= 0 {
		return &helpHint{"hold release", fmt.Errorf("%w: -id is required (linegate hold list gives the ids)", errUsage)}
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	hs, err := store.Holds(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(hs, func(h retention.Hold) bool { return h.ID == *id })
	switch {
	case i < 0:
		return fmt.Errorf("there is no hold %d (linegate hold list gives the ids)", *id)
	case hs[i].ReleasedMs != 0:
		fmt.Fprintf(e.stdout, "hold %d was already released at %s; nothing changed\n", *id, bothTimes(time.UnixMilli(hs[i].ReleasedMs)))
		return nil
	}
	at := time.Now()
	if _, err := appendAdmin(ctx, store, ring, "legal_hold_released", map[string]any{"id": *id}, nil,
		retention.ReleaseHold{ID: *id, At: at}); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "hold %d released at %s: %s\n", *id, bothTimes(at), describeHold(hs[i]))
	return nil
}

func runHoldList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "hold list", "[-config FILE] [-json]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	asJSON := fs.Bool("json", false, "print the holds as JSON, times in RFC 3339 (UTC)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, store, _, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	hs, err := store.Holds(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]holdJSON, 0, len(hs))
		for _, h := range hs {
			out = append(out, newHoldJSON(h))
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(hs) == 0 {
		fmt.Fprintln(e.stdout, "no legal holds")
		return nil
	}
	for _, h := range hs {
		state := "active"
		if h.ReleasedMs != 0 {
			state = "released " + bothTimes(time.UnixMilli(h.ReleasedMs))
		}
		fmt.Fprintf(e.stdout, "hold %d (%s): %s\n  added %s\n", h.ID, state, describeHold(h), bothTimes(time.UnixMilli(h.CreatedMs)))
	}
	return nil
}

// holdJSON is a hold as hold list -json prints it: times in RFC 3339
// (UTC), an open end as null.
type holdJSON struct {
	ID       int64   `json:"id"`
	Channel  string  `json:"channel"` // "" for all
	Subject  string  `json:"subject"` // "" for all
	From     *string `json:"from"`
	To       *string `json:"to"`
	Reason   string  `json:"reason"`
	Created  string  `json:"created"`
	Released *string `json:"released"`
}

func newHoldJSON(h retention.Hold) holdJSON {
	t := func(ms int64) *string {
		if ms == 0 {
			return nil
		}
		s := time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
		return &s
	}
	return holdJSON{ID: h.ID, Channel: h.Channel, Subject: h.Subject, From: t(h.FromMs), To: t(h.ToMs),
		Reason: h.Reason, Created: *t(h.CreatedMs), Released: t(h.ReleasedMs)}
}

// describeHold says what a hold covers, for people: times in UTC and in
// the local zone.
func describeHold(h retention.Hold) string {
	channel, subject := "every channel", "every subject"
	if h.Channel != "" {
		channel = "channel " + h.Channel
	}
	if h.Subject != "" {
		subject = h.Subject
	}
	from, to := "the beginning", "open"
	if h.FromMs != 0 {
		from = bothTimes(time.UnixMilli(h.FromMs))
	}
	if h.ToMs != 0 {
		to = bothTimes(time.UnixMilli(h.ToMs))
	}
	return fmt.Sprintf("%s, %s, records from %s to %s; reason %q", channel, subject, from, to, h.Reason)
}

// newHold checks and builds a hold from what the operator gave: a subject
// may be a bare LINE id (U..., C..., R...), and the range must not be
// empty.
func newHold(channel, subject, from, to, reason string) (retention.Hold, error) {
	if subject != "" {
		s, err := parseSubject(subject)
		if err != nil {
			return retention.Hold{}, fmt.Errorf("subject: %v", err)
		}
		subject = s
	}
	if _, _, err := parseRange(from, to); err != nil {
		return retention.Hold{}, err
	}
	return retention.NewHold(channel, subject, from, to, reason, time.Now())
}
