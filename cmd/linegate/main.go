// Command linegate is an audit-ready webhook gateway for LINE Official
// Accounts: it verifies LINE's webhooks and records every one in a
// tamper-evident ledger before acknowledging it.
//
// Usage:
//
//	linegate serve  [-config FILE]          run the gateway
//	linegate config check [-config FILE]    check a config without starting anything
//	linegate tail [-config FILE] [-n N] [-f]  follow the ledger, decrypted, one line a record
//	linegate verify [-config FILE | -data DIR]  check the ledger from storage
//	linegate keygen -out DIR [-origin NAME] create a checkpoint key pair
//	linegate export -out DIR [selection]    an evidence bundle, with proofs
//	linegate verify-bundle [-vkey F] DIR    check a bundle offline
//	linegate purge [-dry-run]               delete payloads past their retention
//	linegate hold add|release|list          legal holds
//	linegate webhook get|set|test [-channel ID]  the webhook URL on LINE
//	linegate keys new-kek|rotate|shred      encryption keys: rotation, crypto-shredding
//	linegate migrate-store -from sqlite:PATH -to postgres://...  move to PostgreSQL
//	linegate acknowledge-rollback -reason TEXT  record a restore from backup, so that serve starts
//	linegate token keygen -out DIR          an assertion signing key pair (channel access tokens v2.1)
//	linegate sim api|send|chat [flags]      a LINE platform simulator
//	linegate bench [-quick] [-json]         the benchmark suite, beside its peers
//	linegate version                        the module version, commit and Go version
//
// Every command and subcommand prints its own usage with -h, -help or
// --help, and exits 0 without opening anything.
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
	"strings"
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
	{"config", "check a config: keys, secrets, files, rules, the KEK against the store", runConfig},
	{"tail", "follow the ledger, decrypted: one line a record (or JSON)", runTail},
	{"verify", "recompute and check the ledger from storage", runVerify},
	{"keygen", "create an Ed25519 checkpoint key pair", runKeygen},
	{"export", "write an evidence bundle of selected records, with proofs", runExport},
	{"verify-bundle", "check an evidence bundle offline", runVerifyBundle},
	{"purge", "delete payloads past their retention (unless held)", runPurge},
	{"hold", "legal holds: add, release, list", runHold},
	{"webhook", "the channels' webhook URL on LINE: get, set (with a test and rollback), test", runWebhook},
	{"keys", "encryption at rest: new-kek, rotate (re-wrap data keys), shred (destroy a subject's key)", runKeys},
	{"migrate-store", "move an embedded (SQLite) installation to PostgreSQL, log intact", runMigrateStore},
	{"archive", "object storage under Object Lock: put-bundle (publish an evidence bundle, locked)", runArchive},
	{"acknowledge-rollback", "record that the database was restored to an older tree: the lost records, and why", runAcknowledgeRollback},
	{"console", "the web console: hash-password (a user's password hash, read from standard input)", runConsole},
	{"token", "channel access tokens: keygen (an assertion signing key pair for tokens v2.1)", runToken},
	{"replay", "deliver the recorded events of a time range again to a fan-out destination, as redeliveries", runReplay},
	{"sim", "a LINE platform simulator: fake API, webhook sender, chat", runSim},
	{"bench", "measure linegate beside its peers (run from the repository)", runBench},
	{"version", "print the module version, VCS commit and time, and Go version", runVersion},
}

func main() {
	os.Exit(run(context.Background(), &env{os.Stdout, os.Stderr, os.Getenv}, os.Args[1:]))
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(e.stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
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
			name := c.name
			var h *helpHint
			if errors.As(err, &h) {
				name = h.cmd
			}
			msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
			fmt.Fprintf(e.stderr, "linegate %s: %s\nRun 'linegate %s -h' for usage.\n", name, msg, name)
			return 2
		default:
			fmt.Fprintf(e.stderr, "linegate %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "linegate: unknown command %q\n", args[0])
	if s := nearest(args[0], commandNames()); s != "" {
		fmt.Fprintf(e.stderr, "Did you mean 'linegate %s'?\n", s)
	}
	fmt.Fprintln(e.stderr, "Run 'linegate -h' for the commands.")
	return 2
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return names
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: linegate <command> [flags]\n\nCommands:")
	width := 0
	for _, c := range commands {
		width = max(width, len(c.name))
	}
	for _, c := range commands {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'linegate <command> -h' for a command's flags.")
}

// helpHint names the command line whose -h explains a usage error: a
// subcommand ("hold add") rather than its command.
type helpHint struct {
	cmd string
	err error
}

func (h *helpHint) Error() string { return h.err.Error() }
func (h *helpHint) Unwrap() error { return h.err }

// newFlagSet returns a FlagSet whose parse errors are usage errors and
// whose -h (-help, --help) prints its usage to stdout: the synopsis, then
// its own flags, nothing else.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags reports errors itself, once
	fs.Usage = func() {
		fs.SetOutput(e.stdout)
		defer fs.SetOutput(io.Discard)
		fmt.Fprintf(e.stdout, "Usage: linegate %s %s\n", name, synopsis)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(e.stdout, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	return parseArgs(fs, args, 0, "")
}

// parseArgs parses args, which must leave exactly n positional arguments
// (what names them, for the error). -h prints the usage and returns
// flag.ErrHelp, before anything else is looked at.
func parseArgs(fs *flag.FlagSet, args []string, n int, what string) error {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	hint := func(err error) error { return &helpHint{cmd: fs.Name(), err: err} }
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage()
		return err
	case err != nil:
		return hint(fmt.Errorf("%w: %v", errUsage, err))
	}
	// A help flag after a positional argument ("verify-bundle DIR -h")
	// is still a request for help.
	for _, a := range fs.Args() {
		if a == "-h" || a == "-help" || a == "--help" {
			usage()
			return flag.ErrHelp
		}
	}
	switch {
	case fs.NArg() > n && n == 0:
		return hint(fmt.Errorf("%w: unexpected argument %q (flags go before arguments, each as -name value)", errUsage, fs.Arg(0)))
	case fs.NArg() > n:
		return hint(fmt.Errorf("%w: unexpected argument %q after %s", errUsage, fs.Arg(n), what))
	case fs.NArg() < n:
		return hint(fmt.Errorf("%w: give %s", errUsage, what))
	}
	return nil
}

// subcommand is one of a command's subcommands (hold add, keys shred).
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) error
}

// runSubcommand runs the subcommand that args name, or prints the
// command's usage: for -h and friends (exit 0), or for a missing or
// unknown subcommand (a usage error). Nothing is opened before the
// subcommand has parsed its own flags.
func runSubcommand(ctx context.Context, e *env, cmd string, subs []subcommand, args []string) error {
	usage := func(w io.Writer) {
		var names []string
		width := 0
		for _, s := range subs {
			names = append(names, s.name)
			width = max(width, len(s.name))
		}
		fmt.Fprintf(w, "Usage: linegate %s %s [flags]\n\nCommands:\n", cmd, strings.Join(names, "|"))
		for _, s := range subs {
			fmt.Fprintf(w, "  %-*s  %s\n", width, s.name, s.summary)
		}
		fmt.Fprintf(w, "\nRun 'linegate %s <command> -h' for a command's flags.\n", cmd)
	}
	if len(args) == 0 {
		usage(e.stderr)
		return fmt.Errorf("%w: missing %s command", errUsage, cmd)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(e.stdout)
		return flag.ErrHelp
	}
	for _, s := range subs {
		if s.name == args[0] {
			return s.run(ctx, e, args[1:])
		}
	}
	var names []string
	for _, s := range subs {
		names = append(names, s.name)
	}
	if strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: give the %s command (%s) before its flags", errUsage, cmd, strings.Join(names, ", "))
	}
	msg := fmt.Sprintf("unknown %s command %q: want %s", cmd, args[0], strings.Join(names, ", "))
	if s := nearest(args[0], names); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return fmt.Errorf("%w: %s", errUsage, msg)
}
