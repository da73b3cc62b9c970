package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/incident"
)

func init() {
	commands = append(commands, command{"incident", "an incident's timeline (Markdown and JSON) with an evidence bundle of its records", runIncident})
}

func runIncident(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "incident", []subcommand{
		{"export", "write the timeline of a period, and the evidence bundle of every record it cites", runIncidentExport},
	}, args)
}

func runIncidentExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "incident export", "-from T [-to T] -out DIR [-config FILE] [-channel ID]")
	configPath := fs.String("config", "", "the serve config whose ledger to read (default: the built-in example)")
	out := fs.String("out", "", "the directory to create (required; must not exist): timeline.md, timeline.json, evidence/")
	from := fs.String("from", "", "the incident's start: an RFC 3339 time such as 2026-12-02T09:00:00Z, or a date (UTC midnight) (required)")
	to := fs.String("to", "", "its end, same forms (default: open, up to the latest checkpoint)")
	channel := fs.String("channel", "", "only this channel's records (and the admin actions of all channels but the others)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -out is required", errUsage)
	}
	if *from == "" {
		return fmt.Errorf("%w: -from is required: the incident's start", errUsage)
	}
	f, t, err := parseRange(*from, *to)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// One snapshot: the timeline and the bundle's proofs are of one tree.
	src, done, err := openEvidenceSource(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer done()
	tl, err := incident.Build(ctx, src.view, src.ring, src.cfg.Log.Origin, incident.Selection{From: f, To: t, Channel: *channel})
	if err != nil {
		return err
	}
	if err := os.Mkdir(*out, 0o700); err != nil {
		return err
	}
	tl.Evidence = "evidence"
	m, err := evidence.Export(ctx, src.view, src.ring, src.vkey, src.cfg.Log.AnchorsDir,
		evidence.Selection{From: f, To: t, Records: tl.Records()}, filepath.Join(*out, tl.Evidence))
	if err != nil {
		return err
	}
	if len(m.Records) != len(tl.Records()) {
		return fmt.Errorf("the evidence bundle holds %d records of the timeline's %d", len(m.Records), len(tl.Records()))
	}
	if err := addCosigned(ctx, e, src, filepath.Join(*out, tl.Evidence), m.Records); err != nil {
		return err
	}
	for name, write := range map[string]func(*os.File) error{
		"timeline.json": func(f *os.File) error { return tl.WriteJSON(f) },
		"timeline.md":   func(f *os.File) error { return tl.WriteMarkdown(f) },
	} {
		f, err := os.OpenFile(filepath.Join(*out, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	tot := tl.Totals
	fmt.Fprintf(e.stdout, "incident timeline of %s to %s: %d entries, %d records in %s (tree size %d)\n",
		bothTimesOrOpen(f), bothTimesOrOpen(t), len(tl.Entries), len(m.Records), *out, m.TreeSize)
	fmt.Fprintf(e.stdout, "  %d admin actions, %d alerts, %d signature failures, %d webhooks answered 503, %d Messaging API errors, %d 429s\n",
		tot.AdminActions, tot.Alerts, tot.SignatureFailures, tot.Unavailable, tot.LineAPIErrors, tot.LineAPIRateLimits)
	fmt.Fprintf(e.stdout, "  check the evidence: linegate verify-bundle -vkey log.vkey %s\n", filepath.Join(*out, tl.Evidence))
	if n := notYetCheckpointed(ctx, src.store, m.TreeSize); n > 0 {
		fmt.Fprintf(e.stdout, "  %d records appended after the checkpoint were left out: export again in a few seconds for them\n", n)
	}
	return nil
}

// bothTimesOrOpen is bothTimes, or "open" for a zero time.
func bothTimesOrOpen(t time.Time) string {
	if t.IsZero() {
		return "open"
	}
	return bothTimes(t)
}

// notYetCheckpointed counts the records after the checkpoint of size n.
func notYetCheckpointed(ctx context.Context, store backend, n uint64) uint64 {
	c, err := store.Count(ctx)
	if err != nil || c < n {
		return 0
	}
	return c - n
}
