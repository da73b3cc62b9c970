package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/linegate/linegate/internal/console"
)

// stdin is where commands read what must not be an argument (a
// password): the process's standard input.
var stdin io.Reader = os.Stdin

func runConsole(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "console", []subcommand{
		{"hash-password", "read a password from standard input and print its hash, for console.users[].password_hash", runConsoleHashPassword},
	}, args)
}

// maxPassword bounds the password read.
const maxPassword = 1024

func runConsoleHashPassword(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "console hash-password", "[-bcrypt] < password")
	useBcrypt := fs.Bool("bcrypt", false, "a bcrypt hash instead of argon2id (passwords of at most 72 bytes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(e.stderr, "password (echoed; end with Enter): ")
		}
	}
	line, err := bufio.NewReaderSize(io.LimitReader(stdin, maxPassword+2), maxPassword+2).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	password := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	switch {
	case password == "":
		return &helpHint{"console hash-password", fmt.Errorf("%w: no password on standard input: echo -n ... | linegate console hash-password, or type it", errUsage)}
	case len(password) > maxPassword:
		return fmt.Errorf("the password is over %d bytes", maxPassword)
	}
	var h string
	if *useBcrypt {
		h, err = console.HashBcrypt(password)
	} else {
		h, err = console.HashPassword(password)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, h)
	return nil
}
