package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"golang.org/x/mod/sumdb/note"
)

// The gateway holds the log to what it published: a database restored
// from an older backup, cut back, or changed at the right edge of its tree
// is refused at start, and a restore is accepted only once it is
// acknowledged, on the record.

// anchorsEverySecond writes an anchor every second.
const anchorsEverySecond = "  anchor_every: 1s\n  anchor_tz: Asia/Tokyo\n"

// serveExit runs serve, which must refuse to start, and returns its exit
// code and output.
func serveExit(t *testing.T, cfgPath string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, linegateBin, "serve", "-config", cfgPath).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve started:\n%s", out)
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

// fileSize returns the tree size of a checkpoint file.
func fileSize(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ledger.ParseCheckpoint(strings.SplitN(string(b), "\n\n", 2)[0] + "\n")
	if err != nil {
		t.Fatal(err)
	}
	return c.Size
}

// restoreDB puts the database of a backup of the data directory in place,
// and nothing else.
func restoreDB(t *testing.T, backup, dir string) {
	t.Helper()
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm"} {
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
}

// countAnchors returns the number of anchors written.
func countAnchors(t *testing.T, dir string) int {
	files, err := filepath.Glob(filepath.Join(dir, "data", "anchors", "*.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// waitForAnchors waits until at least n anchors are written.
func waitForAnchors(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for countAnchors(t, dir) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d anchors", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// grownAfterBackup runs a gateway that takes 20 webhooks, backs the data
// directory up, then runs it again for 20 more, and stops it. It returns
// the backup and the sizes of the tree at the backup and at the end.
func grownAfterBackup(t *testing.T, dir string, c gwConfig) (backup string, old, cur uint64) {
	t.Helper()
	g := startGateway(t, dir, c)
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	if c.logExtra != "" {
		waitForAnchors(t, dir, 1)
	}
	g.stop()
	backup = t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup)
	old = fileSize(t, filepath.Join(backup, "published", "checkpoint"))

	g = startGateway(t, dir, c)
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"m":%d}`, i))
	}
	g.waitTreeSize(t, old+20)
	if c.logExtra != "" {
		waitForAnchors(t, dir, countAnchors(t, dir)+2) // one at least after the 20 records
	}
	g.stop()
	return backup, old, fileSize(t, filepath.Join(dir, "data", "published", "checkpoint"))
}

// TestServeRefusesRestoredBackup: an older copy of the database put back,
// the newer checkpoint file kept: serve refuses to start, naming both
// sizes and the way out, and leaves the checkpoint file alone; verify
// fails too.
func TestServeRefusesRestoredBackup(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	backup, old, cur := grownAfterBackup(t, dir, gwConfig{})
	published, err := os.ReadFile(filepath.Join(dir, "data", "published", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	restoreDB(t, backup, dir)
	cfg := filepath.Join(dir, "linegate.yaml")

	code, out := serveExit(t, cfg)
	want := fmt.Sprintf("the database's tree (size %d) is behind the published checkpoint file (size %d)", old, cur)
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "linegate acknowledge-rollback -config "+cfg) {
		t.Errorf("serve = exit %d:\n%s\nwant exit 1 naming %q and acknowledge-rollback", code, out, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data", "published", "checkpoint")); err != nil || string(b) != string(published) {
		t.Errorf("serve overwrote the published checkpoint (%v)", err)
	}
	if code, out := runCLI(t, "verify", "-config", cfg); code != 1 || !strings.Contains(out, "behind the published checkpoint file") {
		t.Errorf("verify = exit %d:\n%s", code, out)
	}
}

// cutBack deletes the records of a stopped gateway's database from a
// stored checkpoint's size on, and sets the tree head back to that
// checkpoint, as someone with write access to the file could. It returns
// that size.
func cutBack(t *testing.T, dir string) uint64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size uint64
	var cp []byte
	// The checkpoint before the last.
	if err := db.QueryRow(`SELECT size, checkpoint FROM checkpoints
		WHERE size > 0 AND size < (SELECT MAX(size) FROM checkpoints) ORDER BY seq DESC LIMIT 1`).Scan(&size, &cp); err != nil {
		t.Fatal(err)
	}
	c, err := ledger.ParseCheckpoint(strings.SplitN(string(cp), "\n\n", 2)[0] + "\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprintf("DELETE FROM records WHERE idx >= %d", size),
		fmt.Sprintf("DELETE FROM checkpoints WHERE size > %d", size),
		fmt.Sprintf("UPDATE tree_head SET size = %d, hash = x'%x', checkpoint = x'%x'", size, c.Hash, cp),
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return size
}

// TestServeRefusesCutBack: the last records deleted and the tree head set
// back to an older checkpoint of the log, whose signature holds: the
// checkpoint file shows it.
func TestServeRefusesCutBack(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for i := range 40 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
		if i == 19 {
			g.waitTreeSize(t, 20) // a checkpoint to cut back to
		}
	}
	g.waitTreeSize(t, 40)
	g.stop()
	cur := fileSize(t, filepath.Join(dir, "data", "published", "checkpoint"))
	size := cutBack(t, dir)
	code, out := serveExit(t, g.cfgPath)
	want := fmt.Sprintf("the database's tree (size %d) is behind the published checkpoint file (size %d)", size, cur)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("serve = exit %d:\n%s\nwant exit 1 naming %q", code, out, want)
	}
}

// TestServeRefusesRollbackWithAnchors: the database and the checkpoint
// file both restored from a backup: the anchors written since show it,
// and the gateway writes no anchor over the rolled-back tree.
func TestServeRefusesRollbackWithAnchors(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	c := gwConfig{logExtra: anchorsEverySecond}
	backup, old, _ := grownAfterBackup(t, dir, c)
	restoreDB(t, backup, dir)
	b, err := os.ReadFile(filepath.Join(backup, "published", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "published", "checkpoint"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	anchors := countAnchors(t, dir)

	code, out := serveExit(t, filepath.Join(dir, "linegate.yaml"))
	want := fmt.Sprintf("the database's tree (size %d) is behind the anchor ", old)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("serve = exit %d:\n%s\nwant exit 1 naming %q", code, out, want)
	}
	time.Sleep(1500 * time.Millisecond) // an anchor period
	if n := countAnchors(t, dir); n != anchors {
		t.Errorf("%d anchors written over the rolled-back tree", n-anchors)
	}
}

// TestServeRefusesChangedEdgeTile: a hash changed in the tile at the right
// edge of the tree, which the next integration would extend.
func TestServeRefusesChangedEdgeTile(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	g.stop()
	execSQL(t, dir, flip("tiles", "data", "level = 0 AND idx = 0", 5*32+3))
	code, out := serveExit(t, g.cfgPath)
	if want := "tile 0/0: hash 5 differs from the leaf hash of record 5"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("serve = exit %d:\n%s\nwant exit 1 naming %q", code, out, want)
	}
}

// TestServeRefusesForgedTreeHead: a tree head whose checkpoint another
// key signed.
func TestServeRefusesForgedTreeHead(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for i := range 10 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 10)
	g.stop()
	s := openStore(t, dir)
	head, err := s.TreeHead(context.Background())
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := note.Sign(&note.Note{Text: ledger.FormatCheckpoint(testOrigin, head.Size, head.Hash)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	execSQL(t, dir, fmt.Sprintf("UPDATE tree_head SET checkpoint = x'%x'", forged))
	code, out := serveExit(t, g.cfgPath)
	if want := fmt.Sprintf("the stored tree head (size %d): checkpoint signature", head.Size); code != 1 || !strings.Contains(out, want) {
		t.Errorf("serve = exit %d:\n%s\nwant exit 1 naming %q", code, out, want)
	}
}

// TestAcknowledgeRollback: a restore acknowledged on the record lets serve
// start again; the gateway anchors past the lost anchors, and verify
// passes, reporting the loss.
func TestAcknowledgeRollback(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	c := gwConfig{logExtra: anchorsEverySecond}
	backup, old, cur := grownAfterBackup(t, dir, c)
	restoreDB(t, backup, dir)
	cfg := filepath.Join(dir, "linegate.yaml")
	if code, out := serveExit(t, cfg); code != 1 {
		t.Fatalf("serve = exit %d:\n%s", code, out)
	}

	if code, out := runCLI(t, "acknowledge-rollback", "-config", cfg); code != 2 || !strings.Contains(out, "-reason") {
		t.Errorf("acknowledge-rollback without a reason = exit %d:\n%s", code, out)
	}
	const reason = "disk failure; restored the backup of 02:00 (INC-42)"
	code, out := runCLI(t, "acknowledge-rollback", "-config", cfg, "-reason", reason)
	m := regexp.MustCompile(`rollback acknowledged by record (\d+): records (\d+)\.\.(\d+) lost`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("acknowledge-rollback = exit %d:\n%s", code, out)
	}
	if m[2] != fmt.Sprint(old) || m[3] != fmt.Sprint(cur-1) {
		t.Errorf("acknowledge-rollback: %s, want records %d..%d lost", out, old, cur-1)
	}
	// Not yet in the tree: verify cannot count on it.
	if code, out := runCLI(t, "verify", "-config", cfg); code != 1 || !strings.Contains(out, "not yet in the tree") {
		t.Errorf("verify before serve = exit %d:\n%s", code, out)
	}

	anchors := countAnchors(t, dir)
	g := startGateway(t, dir, c)
	for i := range 5 {
		if code := g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"after":%d}`, i)); code != 200 {
			t.Fatalf("webhook after the acknowledged rollback: %d", code)
		}
	}
	g.waitTreeSize(t, old+6)
	waitForAnchors(t, dir, anchors+1) // past the lost anchors
	g.stop()

	code, out = runCLI(t, "verify", "-config", cfg)
	want := fmt.Sprintf("ACKNOWLEDGED LOSS: records %d..%d of the published checkpoint file (size %d), acknowledged by record %s: %s",
		old, cur-1, cur, m[1], reason)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "ACKNOWLEDGED LOSS: records "+fmt.Sprint(old)+"..") ||
		strings.Count(out, "ACKNOWLEDGED LOSS") < 2 {
		t.Errorf("verify = exit %d:\n%s\nwant exit 0 with %q and the lost anchors", code, out, want)
	}
	// The next start needs no acknowledgement any more.
	g = startGateway(t, dir, c)
	g.stop()
}
