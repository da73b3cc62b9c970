package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveRefuses runs linegate serve with a config it must refuse, and
// returns its exit code and output.
func serveRefuses(t *testing.T, cfgPath string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, linegateBin, "serve", "-config", cfgPath).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve did not refuse to start:\n%s", out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// waitIntegrated waits until every record of a gateway is in its tree.
func waitIntegrated(t *testing.T, g *gateway) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		st := status(t, g)
		if st != nil && st["tree_size"] == st["records"] {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("records were not integrated")
}

// TestDataDirLock: one process per SQLite data directory. A second
// gateway exits 1 naming the first (pid, host), even with the lock file
// moved away; migrate-store is refused the same way; the commands that run
// beside a gateway (verify, export, purge, hold, keys rotate and shred)
// keep working; the lock goes with the process, even one killed.
func TestDataDirLock(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	sendText(t, g, "U1", "", "hello")
	waitIdle(t, g)
	waitIntegrated(t, g)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	holder := fmt.Sprintf("pid %d on host %s", g.cmd.Process.Pid, host)

	code, out := serveRefuses(t, g.cfgPath)
	if code != 1 || !strings.Contains(out, holder) {
		t.Errorf("a second serve on the data directory: exit %d, want 1 naming %q:\n%s", code, holder, out)
	}
	// The lock is held on the database itself: with the lock file moved
	// away, a second gateway is refused all the same, naming the first.
	lockFile := filepath.Join(dir, "data", "lock")
	if err := os.Rename(lockFile, lockFile+".moved"); err != nil {
		t.Fatal(err)
	}
	code, out = serveRefuses(t, g.cfgPath)
	if code != 1 || !strings.Contains(out, holder) {
		t.Errorf("a second serve with the lock file moved: exit %d, want 1 naming %q:\n%s", code, holder, out)
	}
	if err := os.Rename(lockFile+".moved", lockFile); err != nil {
		t.Fatal(err)
	}
	if st := status(t, g); st["sequencer"] != true {
		t.Errorf("the first gateway's status: %v", st)
	}

	// Read only, beside the gateway, while nothing is being integrated.
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify beside serve = %d:\n%s", code, out)
	}
	code, out = runCLI(t, "hold", "add", "-config", g.cfgPath, "-channel", "demo", "-reason", "case 1")
	var hold int
	if _, err := fmt.Sscanf(out, "hold %d added", &hold); code != 0 || err != nil {
		t.Fatalf("hold add beside serve = %d:\n%s", code, out)
	}
	for _, args := range [][]string{
		{"export", "-config", g.cfgPath, "-out", filepath.Join(dir, "bundle")},
		{"hold", "list", "-config", g.cfgPath},
		{"hold", "release", "-config", g.cfgPath, "-id", fmt.Sprint(hold)},
		{"purge", "-config", g.cfgPath},
		{"keys", "shred", "-config", g.cfgPath, "-subject", "user:U1"},
		{"keys", "rotate", "-config", g.cfgPath},
	} {
		if code, out := runCLI(t, args...); code != 0 {
			t.Errorf("%s beside serve = %d:\n%s", strings.Join(args[:2], " "), code, out)
		}
	}
	// The gateway goes on, and integrates what the commands recorded.
	sendText(t, g, "U2", "", "still here")
	waitIdle(t, g)
	waitIntegrated(t, g)

	// migrate-store needs the directory to itself: refused before it
	// connects anywhere.
	code, out = runCLI(t, "migrate-store", "-from", "sqlite:"+filepath.Join(dir, "data", "ledger.db"), "-to", "postgres://127.0.0.1:1/none")
	if code != 1 || !strings.Contains(out, holder) {
		t.Errorf("migrate-store beside serve: exit %d, want 1 naming %q:\n%s", code, holder, out)
	}

	// The kernel releases the lock of a killed gateway.
	g.kill()
	g = startGateway(t, dir, gwConfig{})
	if st := status(t, g); st["sequencer"] != true {
		t.Errorf("status after a restart: %v", st)
	}
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestKEKMustUnwrapDataKeys: a gateway whose key encryption key is not the
// one that wrapped the stored data keys refuses to start, naming the KEKs
// of the store and its own; a gateway without a KEK never creates one
// beside data keys made under another.
func TestKEKMustUnwrapDataKeys(t *testing.T) {
	dir := t.TempDir()
	newKEK := func(name string) (string, string) {
		p := filepath.Join(dir, "secrets", name)
		if code, out := runCLI(t, "keys", "new-kek", "-out", p); code != 0 {
			t.Fatalf("keys new-kek = %d: %s", code, out)
		}
		return p, kekID(t, p)
	}
	kekA, idA := newKEK("a.kek")
	g := startGateway(t, dir, gwConfig{extra: fmt.Sprintf("encryption:\n  kek_file: %s\n", kekA)})
	sendText(t, g, "U1", "", "under key A")
	waitIdle(t, g)
	g.stop()

	// A replica that was not given the KEK: no key is created beside the
	// data, and it does not start.
	cfg := writeConfig(t, dir, gwConfig{})
	code, out := serveRefuses(t, cfg)
	if code != 1 || !strings.Contains(out, idA) {
		t.Errorf("serve without the KEK: exit %d, want 1 naming %s:\n%s", code, idA, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "kek")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a KEK was created beside data keys wrapped by another: %v", err)
	}

	// Another KEK: refused, naming the store's and its own.
	kekB, idB := newKEK("b.kek")
	cfg = writeConfig(t, dir, gwConfig{extra: fmt.Sprintf("encryption:\n  kek_file: %s\n", kekB)})
	code, out = serveRefuses(t, cfg)
	if code != 1 || !strings.Contains(out, idA) || !strings.Contains(out, idB) {
		t.Errorf("serve with another KEK: exit %d, want 1 naming %s and %s:\n%s", code, idA, idB, out)
	}
	if code, out := runCLI(t, "verify", "-config", cfg); code != 1 || !strings.Contains(out, idA) {
		t.Errorf("verify with another KEK: exit %d:\n%s", code, out)
	}

	// With A as a previous key (a rotation's first step) it starts, and
	// reads the old subject's key.
	g = startGateway(t, dir, gwConfig{extra: fmt.Sprintf("encryption:\n  kek_file: %s\n  previous_kek_files: [%s]\n", kekB, kekA)})
	sendText(t, g, "U1", "", "under key B")
	waitIdle(t, g)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestDataDirPermissions: under the usual umask (022) the files that hold
// ledger data or keys are 0600, an existing data directory of 0755 becomes
// 0700 (and the gateway says so), and an evidence bundle is the owner's
// alone; the published checkpoints stay readable.
func TestDataDirPermissions(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")

	old := syscall.Umask(0o022) // inherited by the processes started here
	g := startGateway(t, dir, gwConfig{})
	sendText(t, g, "U1", "", "private words")
	waitIdle(t, g)
	code, out := runCLI(t, "export", "-config", g.cfgPath, "-out", bundle)
	syscall.Umask(old)
	if code != 0 {
		t.Fatalf("export = %d: %s", code, out)
	}

	mode := func(p string) fs.FileMode {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(data); m != 0o700 {
		t.Errorf("data directory mode %#o, want 0700", m)
	}
	if !strings.Contains(g.Logs(), "made it 0700") {
		t.Error("the gateway did not log that it changed the data directory's mode")
	}
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm", "kek", "log.key", "lock"} {
		if m := mode(filepath.Join(data, f)); m != 0o600 {
			t.Errorf("%s mode %#o, want 0600", f, m)
		}
	}
	if m := mode(filepath.Join(data, "published", "checkpoint")); m&0o044 != 0o044 {
		t.Errorf("the published checkpoint's mode %#o: it is public", m)
	}
	var bodies int
	err := filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		m := mode(p)
		switch {
		case d.IsDir() && m != 0o700:
			t.Errorf("bundle directory %s mode %#o, want 0700", p, m)
		case !d.IsDir() && m&0o077 != 0:
			t.Errorf("bundle file %s mode %#o, want 0600", p, m)
		}
		if d.Name() == "body" {
			bodies++
		}
		return nil
	})
	if err != nil || bodies == 0 {
		t.Fatalf("bundle: %d bodies, %v", bodies, err)
	}
	g.stop()
}
