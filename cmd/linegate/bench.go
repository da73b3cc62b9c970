package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/linegate/linegate/internal/bench"
)

func runBench(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "bench", "[-quick] [-json] [-only GROUPS] [-repo DIR] [-postgres DSN]")
	quick := fs.Bool("quick", false, "run every figure at a smaller size")
	asJSON := fs.Bool("json", false, `print {"results": [...]} as JSON`)
	repo := fs.String("repo", ".", "the repository root, whose bench/peers the suite builds (needs Go)")
	work := fs.String("work", "", "directory for the runs' data (default: a temporary directory on the same disk as it)")
	pg := fs.String("postgres", e.getenv("LINEGATE_TEST_POSTGRES"), "a PostgreSQL server for the figures of replicas on PostgreSQL (default: $LINEGATE_TEST_POSTGRES; none: they are skipped)")
	only := fs.String("only", "", "run only these groups of figures, comma-separated: "+strings.Join(bench.Groups, ", "))
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var groups []string
	if *only != "" {
		groups = strings.Split(*only, ",")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	results, err := bench.Run(ctx, bench.Options{Linegate: self, Repo: *repo, Quick: *quick, WorkDir: *work, Log: e.stderr, Postgres: *pg, Only: groups})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"results": results}); err != nil {
			return err
		}
	} else {
		printTable(e, results)
	}
	var missing []string
	for _, r := range results {
		if r.Error != "" {
			missing = append(missing, r.Name+": "+r.Error)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d figures could not be measured:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
	return nil
}

func printTable(e *env, results []bench.Result) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tlinegate\tpeer\tpeer value\tratio\ttarget\tpass")
	for _, r := range results {
		peer, pv, ratio, pass := "-", "-", "-", "-"
		if r.Peer != "" {
			peer = r.Peer
		}
		if r.PeerValue != nil {
			pv = fmt.Sprintf("%.2f %s", *r.PeerValue, r.Unit)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx", *r.Ratio)
		}
		if r.Pass != nil {
			pass = map[bool]string{true: "yes", false: "NO"}[*r.Pass]
		}
		val := fmt.Sprintf("%.2f %s", r.Value, r.Unit)
		if r.Error != "" {
			val = "ERROR: " + r.Error
		}
		if r.Skipped != "" {
			val = "skipped: " + r.Skipped
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, val, peer, pv, ratio, r.Target, pass)
	}
	tw.Flush()
}
