package main

import (
	"context"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/retention"
)

func runPurge(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "purge", "[-config FILE] [-dry-run]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	dry := fs.Bool("dry-run", false, "only report what would be deleted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	now := time.Now()
	rep, err := retention.Purge(ctx, store, ledger.NewWriter(store, ring, nil), ring, cfg.policies(), now, *dry)
	if err != nil {
		return err
	}
	if len(rep.Refused) > 0 {
		fmt.Fprintf(e.stderr, "refused to delete %d payloads whose stored delete-after time is earlier than their class allows (first: record %d): the database was changed, run linegate verify\n",
			len(rep.Refused), rep.Refused[0])
	}
	verb := "deleted"
	if *dry {
		verb = "would delete"
	}
	fmt.Fprintf(e.stdout, "%s %d payloads past their retention at %s; %d kept by legal holds", verb, len(rep.Deleted), bothTimes(now), rep.Held)
	if rep.Unsigned > 0 {
		fmt.Fprintf(e.stdout, "; %d not signed into the log yet, left for a later run", rep.Unsigned)
	}
	fmt.Fprintln(e.stdout)
	return nil
}
