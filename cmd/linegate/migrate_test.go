package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

// TestMigrateStore moves an embedded installation to PostgreSQL: the same
// tree and checkpoints (the gateway serves the last SQLite checkpoint, and
// verify checks the new database against the checkpoint file and anchors
// written before the move), the same encrypted payloads, and it goes on.
func TestMigrateStore(t *testing.T) {
	if pgE2E {
		t.Skip("needs an SQLite installation to move")
	}
	dsn := pgtest.Schema(t)
	dir := t.TempDir()
	w := newReplyWorld(t)
	cfg := w.config(t, dir)
	cfg.logExtra = "  anchor_every: 1s\n"
	g := startGateway(t, dir, cfg)
	for i := range 30 {
		w.send(t, g, "U"+strings.Repeat("1", i%3+1), "message", "hello")
	}
	admin(t, g, "/admin/holds", `{"subject":"user:U1","reason":"case 1"}`)
	waitIdle(t, g)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a, err := filepath.Glob(filepath.Join(dir, "data", "anchors", "*.checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		if len(a) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no anchor written")
		}
	}
	g.stop()
	last, err := os.ReadFile(filepath.Join(dir, "data", "published", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}

	code, out := runCLI(t, "migrate-store", "-from", "sqlite:"+filepath.Join(dir, "data", "ledger.db"), "-to", dsn)
	if code != 0 || !strings.HasPrefix(out, "moved ") {
		t.Fatalf("migrate-store = %d: %s", code, out)
	}
	if code, out := runCLI(t, "migrate-store", "-from", "sqlite:"+filepath.Join(dir, "data", "ledger.db"), "-to", dsn); code == 0 || !strings.Contains(out, "already holds a ledger") {
		t.Errorf("a second move into the same database = %d: %s", code, out)
	}

	cfg.database = dsn
	g = startGateway(t, dir, cfg)
	_, served := g.get(t, g.admin+"/log/checkpoint")
	if !bytes.Equal(served, last) {
		t.Errorf("after the move the gateway serves\n%s\nnot the last checkpoint before it\n%s", served, last)
	}
	lastCP, err := ledger.ParseCheckpoint(string(last))
	if err != nil {
		t.Fatal(err)
	}
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Fatalf("verify after the move = %d:\n%s", code, out)
	}
	// It goes on: the holds and the data keys came along.
	g = startGateway(t, dir, cfg)
	w.send(t, g, "U1", "message", "after the move")
	g.waitTreeSize(t, lastCP.Size+1)
	waitIdle(t, g)
	g.stop()
	if code, out := runCLI(t, "hold", "list", "-config", g.cfgPath); code != 0 || !strings.Contains(out, "case 1") {
		t.Errorf("holds after the move = %d: %s", code, out)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 || strings.Contains(out, " 0 records") {
		t.Errorf("verify after more traffic = %d:\n%s", code, out)
	}
}
