// Command linegate is an audit-ready webhook gateway for LINE Official
// Accounts: it verifies LINE's webhooks and records every one in a
// tamper-evident ledger before acknowledging it.
//
// Usage:
//
//	linegate serve  [-config FILE]          run the gateway
//	linegate verify [-config FILE | -data DIR]  check the ledger from storage
//	linegate keygen -out DIR [-origin NAME] create a checkpoint key pair
//	linegate export -out DIR [selection]    an evidence bundle, with proofs
//	linegate verify-bundle [-vkey F] DIR    check a bundle offline
//	linegate purge [-dry-run]               delete payloads past their retention
//	linegate hold add|release|list          legal holds
//	linegate keys new-kek|rotate|shred      encryption keys: rotation, crypto-shredding
//	linegate migrate-store -from sqlite:PATH -to postgres://...  move to PostgreSQL
//	linegate acknowledge-rollback -reason TEXT  record a restore from backup, so that serve starts
//	linegate sim api|send|chat [flags]      a LINE platform simulator
//	linegate bench [-quick] [-json]         the benchmark suite, beside its peers
//
// Exit codes: 0 success, 1 failure (including a ledger that fails
// verification), 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// errUsage marks an error caused by how the command was called.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may use of the outside world; main owns it, so
// that tests can run subcommands in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

var commands = []command{
	{"serve", "run the gateway", runServe},
	{"verify", "recompute and check the ledger from storage", runVerify},
	{"keygen", "create an Ed25519 checkpoint key pair", runKeygen},
	{"export", "write an evidence bundle of selected records, with proofs", runExport},
	{"verify-bundle", "check an evidence bundle offline", runVerifyBundle},
	{"purge", "delete payloads past their retention (unless held)", runPurge},
	{"hold", "legal holds: add, release, list", runHold},
	{"keys", "encryption at rest: new-kek, rotate (re-wrap data keys), shred (destroy a subject's key)", runKeys},
	{"migrate-store", "move an embedded (SQLite) installation to PostgreSQL, log intact", runMigrateStore},
	{"acknowledge-rollback", "record that the database was restored to an older tree: the lost records, and why", runAcknowledgeRollback},
	{"sim", "a LINE platform simulator: fake API, webhook sender, chat", runSim},
	{"bench", "measure linegate beside its peers (run from the repository)", runBench},
}

func main() {
	os.Exit(run(context.Background(), &env{os.Stdout, os.Stderr, os.Getenv}, os.Args[1:]))
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(e.stderr, "linegate %s: %v\nRun 'linegate %s -h' for usage.\n", c.name, err, c.name)
			return 2
		default:
			fmt.Fprintf(e.stderr, "linegate %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "linegate: unknown command %q\n", args[0])
	usage(e.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: linegate <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'linegate <command> -h' for a command's flags.")
}

// newFlagSet returns a FlagSet whose parse errors are usage errors.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("linegate "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: linegate %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
