package main

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// copyDir copies a data directory, file by file.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// execSQL runs SQL against a copy's database directly, as an attacker
// with write access to the file would. A statement of the form
// "FLIP table col where i" flips the low bit of byte i (0-based) of a blob.
func execSQL(t *testing.T, dir string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if f, ok := strings.CutPrefix(s, "FLIP "); ok {
			var table, col, where string
			var i int
			parts := strings.SplitN(f, " ", 3)
			table, col = parts[0], parts[1]
			where, idx, _ := strings.Cut(parts[2], " @")
			if _, err := fmt.Sscan(idx, &i); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
			var b []byte
			if err := db.QueryRow(fmt.Sprintf("SELECT %s FROM %s WHERE %s", col, table, where)).Scan(&b); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
			b[i] ^= 1
			s = fmt.Sprintf("UPDATE %s SET %s = x'%x' WHERE %s", table, col, b, where)
		}
		res, err := db.Exec(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			t.Fatalf("%s changed nothing: %v", s, err)
		}
	}
}

// flip returns an execSQL statement that flips a bit of byte i of a blob.
func flip(table, col, where string, i int) string {
	return fmt.Sprintf("FLIP %s %s %s @%d", table, col, where, i)
}

// TestVerifyDetectsTampering changes the stored ledger in every way an
// attacker with access to the database could, and checks that verify exits
// 1 and names the place.
func TestVerifyDetectsTampering(t *testing.T) {
	sqliteOnly(t)
	base := t.TempDir()
	g := startGateway(t, base, gwConfig{})
	for i := range 600 {
		body := fmt.Appendf(nil, `{"destination":"U1","events":[{"type":"message","n":%d,"source":{"type":"user","userId":"U%d"}}]}`, i, i%7)
		if code := g.post(t, testSecret, body); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	g.waitTreeSize(t, 600)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", filepath.Join(base, "linegate.yaml")); code != 0 {
		t.Fatalf("untouched ledger: verify = %d:\n%s", code, out)
	}

	tests := []struct {
		name  string
		sql   []string
		where string // what the output must name
	}{
		// Payloads are sealed with their leaf as associated data: a changed
		// payload, or a changed leaf, no longer decrypts.
		{"payload byte", []string{flip("records", "payload", "idx = 100", 30)}, "FAIL record 100: payload does not decrypt"},
		{"nonce byte", []string{flip("records", "nonce", "idx = 101", 3)}, "FAIL record 101: payload does not match"},
		{"leaf commitment byte", []string{flip("records", "leaf", "idx = 300", 20)}, "FAIL record 300: payload does not decrypt"},
		{"leaf time byte", []string{flip("records", "leaf", "idx = 301", 9)}, "FAIL record 301: payload does not decrypt"},
		{"leaf channel byte", []string{flip("records", "leaf", "idx = 302", 12)}, "FAIL record 302: payload does not decrypt"},
		{"data keys destroyed without a deletion record", []string{"DELETE FROM subject_keys WHERE subject != 'system'"},
			"payload does not decrypt: ledger: the payload's data key was destroyed"},
		{"sealed payload moved to another record", []string{
			"UPDATE records SET payload = (SELECT payload FROM records WHERE idx = 21) WHERE idx = 20"}, "FAIL record 20: payload does not decrypt"},
		{"level-0 tile byte", []string{flip("tiles", "data", "level = 0 AND idx = 1", 40)}, "FAIL record 257 (tile 0/1)"},
		{"level-1 tile byte", []string{flip("tiles", "data", "level = 1 AND idx = 0", 33)}, "FAIL tile 1/0"},
		{"tile truncated", []string{"UPDATE tiles SET data = substr(data, 1, 32*10) WHERE level = 0 AND idx = 2"}, "FAIL tile 0/2"},
		{"tree head hash", []string{flip("tree_head", "hash", "id = 0", 5)}, "FAIL tree head"},
		{"tree head size", []string{"UPDATE tree_head SET size = size - 1"}, "FAIL tree head"},
		{"tree head checkpoint", []string{flip("tree_head", "checkpoint", "id = 0", 30)}, "FAIL tree head"},
		{"checkpoint history", []string{flip("checkpoints", "checkpoint", "seq = 3", 30)}, "FAIL checkpoint 3"},
		{"record deleted", []string{"DELETE FROM records WHERE idx = 50"}, "FAIL record 50: missing"},
		{"last record deleted", []string{"DELETE FROM records WHERE idx = 599"}, "FAIL record 599: missing"},
		{"payload deleted", []string{"UPDATE records SET payload = NULL, nonce = NULL WHERE idx = 7"}, "FAIL record 7: payload missing"},
		{"record replaced consistently", []string{
			// A new payload, nonce and leaf: the tiles still hold the old leaf.
			"UPDATE records SET payload = (SELECT payload FROM records WHERE idx = 11), nonce = (SELECT nonce FROM records WHERE idx = 11), leaf = (SELECT leaf FROM records WHERE idx = 11), keys = (SELECT keys FROM records WHERE idx = 11) WHERE idx = 10",
		}, "FAIL record 10 (tile 0/0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, base, dir)
			execSQL(t, dir, tt.sql...)
			code, out := runCLI(t, "verify", "-data", filepath.Join(dir, "data"))
			if code != 1 || !strings.Contains(out, tt.where) {
				t.Errorf("verify = exit %d:\n%s\nwant exit 1 naming %q", code, out, tt.where)
			}
		})
	}
}

// TestVerifyDetectsRollback restores an older copy of the database after
// more webhooks were acknowledged: the checkpoint published outside the
// database shows it.
func TestVerifyDetectsRollback(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	g.stop()
	backup := t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup)

	g = startGateway(t, dir, gwConfig{})
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"m":%d}`, i))
	}
	g.waitTreeSize(t, 40)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Fatalf("before rollback: verify = %d:\n%s", code, out)
	}
	// Roll the database back; the published checkpoint stays.
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
	code, out := runCLI(t, "verify", "-config", g.cfgPath)
	if code != 1 || !strings.Contains(out, "behind the published checkpoint") {
		t.Errorf("after rollback: verify = %d:\n%s\nwant exit 1 naming the rollback", code, out)
	}
}
