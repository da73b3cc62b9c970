package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/linegate/linegate/internal/evidence"
)

func runExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "export", "-out DIR [-config FILE] [-from T] [-to T] [-channel ID] [-user ID] [-message-id ID]")
	configPath := fs.String("config", "", "the serve config whose ledger to export from (default: the built-in example)")
	out := fs.String("out", "", "the bundle directory to create")
	from := fs.String("from", "", "records from this time: 2026-11-26 or RFC 3339 (default: the beginning)")
	to := fs.String("to", "", "records before this time (default: now)")
	channel := fs.String("channel", "", "only this channel")
	user := fs.String("user", "", "only this LINE user's webhooks, and what they caused")
	messageID := fs.String("message-id", "", "only the webhook of this LINE message id, and what it caused")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -out is required", errUsage)
	}
	sel := evidence.Selection{Channel: *channel, User: *user, MessageID: *messageID}
	var err error
	if sel.From, err = parseWhen(*from); err != nil {
		return fmt.Errorf("%w: -from: %v", errUsage, err)
	}
	if sel.To, err = parseWhen(*to); err != nil {
		return fmt.Errorf("%w: -to: %v", errUsage, err)
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	vkey, err := os.ReadFile(vkeyPath(cfg.Log.KeyFile))
	if err != nil {
		return err
	}
	store, err := openBackend(ctx, e, cfg, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	ring, err := openRing(ctx, e, cfg, store, false, nil)
	if err != nil {
		return err
	}
	// One snapshot: every proof against its tree head, while serve writes.
	view, err := store.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer view.Close()
	m, err := evidence.Export(ctx, view, ring, vkey, cfg.Log.AnchorsDir, sel, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d records to %s (tree size %d)", len(m.Records), *out, m.TreeSize)
	if m.Skipped > 0 {
		fmt.Fprintf(e.stdout, "; %d matching records not yet in a checkpoint were left out: export again in a few seconds", m.Skipped)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

// parseWhen reads a date (UTC midnight) or an RFC 3339 time; "" is zero.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("want 2006-01-02 or an RFC 3339 time")
	}
	return t, nil
}

func runVerifyBundle(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "verify-bundle", "[-vkey FILE] DIR")
	vkeyFile := fs.String("vkey", "", "the log's public key you hold; the bundle's own log.vkey must equal it")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: give the bundle directory", errUsage)
	}
	var trusted []byte
	if *vkeyFile != "" {
		var err error
		if trusted, err = os.ReadFile(*vkeyFile); err != nil {
			return err
		}
	}
	m, err := evidence.Verify(fs.Arg(0), trusted)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL %v\n", err)
		return errVerifyFailed
	}
	fmt.Fprintf(e.stdout, "OK %d records verified against the checkpoint of %s at size %d\n", len(m.Records), m.Origin, m.TreeSize)
	if *vkeyFile == "" {
		fmt.Fprintln(e.stdout, "note: checked with the bundle's own log.vkey; give -vkey with the key you hold")
	}
	return nil
}
