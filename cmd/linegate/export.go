package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
)

func runExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "export", "-out DIR [-config FILE] [-format bundle|rsmf|eml|jsonl] [-from T] [-to T] [-channel ID] [-user U...] [-message-id ID]")
	configPath := fs.String("config", "", "the serve config whose ledger to export from (default: the built-in example)")
	out := fs.String("out", "", "the bundle directory to create (required; must not exist)")
	from := fs.String("from", "", "records from this time: 2026-11-26 (UTC midnight) or RFC 3339 (default: the beginning)")
	to := fs.String("to", "", "records before this time, same forms (default: open, up to the latest checkpoint)")
	channel := fs.String("channel", "", "only this channel")
	user := fs.String("user", "", "only this LINE user's webhooks, and what they caused: U... or user:U...")
	messageID := fs.String("message-id", "", "only the webhook of this LINE message id, and what it caused")
	format := fs.String("format", "bundle", "bundle (the evidence bundle alone), or rsmf, eml or jsonl for review platforms, written into the bundle under exports/ and listed in exports.json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkExportFormat(*format); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -out is required", errUsage)
	}
	sel := evidence.Selection{Channel: *channel, MessageID: *messageID}
	if *user != "" {
		s, err := parseSubject(*user)
		if err != nil || !strings.HasPrefix(s, "user:") {
			return fmt.Errorf("%w: -user %q: want a LINE user id: U... or user:U...", errUsage, *user)
		}
		sel.User = s
	}
	var err error
	if sel.From, sel.To, err = parseRange(*from, *to); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	src, done, err := openEvidenceSource(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer done()
	m, err := evidence.Export(ctx, src.view, src.ring, src.vkey, src.cfg.Log.AnchorsDir, sel, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d records to %s (tree size %d)\n", len(m.Records), *out, m.TreeSize)
	if err := addCosigned(ctx, e, src, *out, m.Records); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "  selected: %s\n", describeSelection(sel))
	if m.Skipped > 0 {
		fmt.Fprintf(e.stdout, "  %d matching records not yet in a checkpoint were left out: export again in a few seconds\n", m.Skipped)
	}
	if len(m.Records) == 0 {
		fmt.Fprintln(e.stdout, "  no record matched: check the range (a date is UTC midnight), the channel and the ids")
	}
	return writeReviewExport(ctx, e, src.cfg, *out, src.vkey, *format)
}

// describeSelection says what an export selected, for people: times in
// UTC and in the local zone.
func describeSelection(sel evidence.Selection) string {
	from, to := "the beginning", "open"
	if !sel.From.IsZero() {
		from = bothTimes(sel.From)
	}
	if !sel.To.IsZero() {
		to = bothTimes(sel.To)
	}
	s := fmt.Sprintf("records from %s to %s", from, to)
	if sel.Channel != "" {
		s += ", channel " + sel.Channel
	}
	if sel.User != "" {
		s += ", " + sel.User
	}
	if sel.MessageID != "" {
		s += ", message " + sel.MessageID
	}
	return s
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
		return time.Time{}, fmt.Errorf("%q: want a date such as 2026-11-26 (UTC midnight) or an RFC 3339 time such as 2026-11-26T09:00:00+07:00", s)
	}
	return t, nil
}

// parseRange reads -from and -to: either may be open (""), and from must
// be before to.
func parseRange(from, to string) (time.Time, time.Time, error) {
	f, err := parseWhen(from)
	if err != nil {
		return f, f, fmt.Errorf("-from %v", err)
	}
	t, err := parseWhen(to)
	if err != nil {
		return f, t, fmt.Errorf("-to %v", err)
	}
	if !f.IsZero() && !t.IsZero() && !f.Before(t) {
		return f, t, fmt.Errorf("-from %s is not before -to %s: the range is empty", bothTimes(f), bothTimes(t))
	}
	return f, t, nil
}

// bothTimes formats t in UTC (RFC 3339) and, when the local zone is
// another, in local time too.
func bothTimes(t time.Time) string {
	u := t.UTC().Format(time.RFC3339Nano)
	l := t.Local()
	if _, off := l.Zone(); off == 0 {
		return u
	}
	return u + " (" + l.Format("2006-01-02 15:04:05.999 MST") + " local)"
}

// parseSubject reads a subject (line.ParseSubject: user:U..., group:C...,
// room:R..., or the bare LINE id), as the CLI's flags take it.
func parseSubject(s string) (string, error) {
	subj, ok := line.ParseSubject(s)
	if !ok || subj == ledger.SubjectSystem {
		return "", fmt.Errorf("%q: want user:U..., group:C... or room:R... (or the bare LINE id)", subj)
	}
	return subj, nil
}

func runVerifyBundle(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "verify-bundle", "[-vkey FILE] [-witness-quorum K -witness-key VKEY...] DIR")
	vkeyFile := fs.String("vkey", "", "the log's public key you hold; the bundle's own log.vkey must equal it")
	wf := addWitnessFlags(fs, false)
	if err := parseArgs(fs, args, 1, "the bundle directory"); err != nil {
		return err
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
	if err := verifyBundleExports(e, fs.Arg(0), m); err != nil {
		return err
	}
	vkey := trusted
	if vkey == nil {
		if vkey, err = os.ReadFile(filepath.Join(fs.Arg(0), "log.vkey")); err != nil {
			return err
		}
	}
	if err := wf.verifyBundleWitnesses(e, fs.Arg(0), vkey, m.Records); err != nil {
		return err
	}
	if *vkeyFile == "" {
		fmt.Fprintln(e.stdout, "note: checked with the bundle's own log.vkey; give -vkey with the key you hold")
	}
	return nil
}
