package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAnchors: anchors are written each period with their consistency
// proofs; verify checks the database against every one, so a database
// restored from an older backup is reported even when the published
// checkpoint file was restored with it; a changed anchor is reported too.
func TestAnchors(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{logExtra: "  anchor_every: 1s\n  anchor_tz: Asia/Tokyo\n"})
	anchorsDir := filepath.Join(dir, "data", "anchors")
	waitAnchors := func(n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			files, err := filepath.Glob(filepath.Join(anchorsDir, "*.checkpoint"))
			if err != nil {
				t.Fatal(err)
			}
			if len(files) >= n {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("fewer than %d anchors", n)
	}
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	waitAnchors(1)
	g.stop()
	backup := t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup) // database and published checkpoint

	g = startGateway(t, dir, gwConfig{logExtra: "  anchor_every: 1s\n  anchor_tz: Asia/Tokyo\n"})
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"m":%d}`, i))
	}
	g.waitTreeSize(t, 40)
	files, err := filepath.Glob(filepath.Join(anchorsDir, "*.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	waitAnchors(len(files) + 2) // one at least after the 40 records
	g.stop()
	code, out := runCLI(t, "verify", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, " anchors") {
		t.Fatalf("verify = %d:\n%s", code, out)
	}
	consistency, err := filepath.Glob(filepath.Join(anchorsDir, "*.consistency"))
	if err != nil || len(consistency) == 0 {
		t.Fatalf("no consistency proofs written: %v", err)
	}
	if fi, err := os.Stat(consistency[0]); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("anchor files are writable: %v", fi.Mode())
	}

	// Restore the database and the published checkpoint from the backup:
	// only the anchors know better.
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm", filepath.Join("published", "checkpoint")} {
		if err := os.Remove(filepath.Join(dir, "data", f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(backup, f)); err == nil {
			if err := os.WriteFile(filepath.Join(dir, "data", f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	code, out = runCLI(t, "verify", "-config", g.cfgPath)
	if code != 1 || !strings.Contains(out, "behind the anchor") {
		t.Errorf("after restoring a backup: verify = %d:\n%s", code, out)
	}

	// A rewritten consistency proof is caught from the files alone: flip a
	// proof hash where there is one (a proof between two different
	// non-empty sizes), else the size it claims.
	target, lineNo, repl := consistency[len(consistency)-1], 3, "new 1"
	for _, f := range consistency {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) > 4 {
			target, lineNo, repl = f, 4, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
			break
		}
	}
	b, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines[lineNo] = repl
	if err := os.Chmod(target, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = runCLI(t, "verify", "-config", g.cfgPath)
	name := strings.TrimSuffix(filepath.Base(target), ".consistency")
	if code != 1 || !strings.Contains(out, "FAIL anchor "+name) {
		t.Errorf("after changing %s: verify = %d:\n%s", filepath.Base(target), code, out)
	}
}
