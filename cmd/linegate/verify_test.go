package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// runInProcess runs linegate with args in this process, and returns its
// exit code, stdout and stderr.
func runInProcess(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &env{&stdout, &stderr, os.Getenv}, args)
	return code, stdout.String(), stderr.String()
}

// TestVerifyDuringTraffic runs verify again and again while `sim send`
// drives webhooks into the gateway at 200/s: every run verifies, none
// cries wolf. (Verify used to read the tree head, the tiles and the
// records at different moments, and failed on a tile that had grown
// meanwhile.) On PostgreSQL too, with LINEGATE_E2E_POSTGRES=1.
func TestVerifyDuringTraffic(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim := exec.CommandContext(ctx, linegateBin, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret,
		"-count", "100000", "-rate", "200")
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Wait()
	defer cancel()
	g.waitTreeSize(t, 100)

	// At least 30 runs, and for at least 4 s: runs are quick, and the
	// tree must grow under them.
	vkey := filepath.Join(dir, "data", "log.vkey")
	okLine := regexp.MustCompile(`^OK (\d+) records \((\d+) in the tree`)
	var sizes []uint64
	failures, runs := 0, 0
	for start := time.Now(); runs < 30 || time.Since(start) < 4*time.Second; runs++ {
		i := runs
		code, out, errOut := runInProcess("verify", "-config", g.cfgPath, "-vkey", vkey)
		m := okLine.FindStringSubmatch(out)
		if code != 0 || m == nil {
			if failures++; failures <= 3 {
				t.Errorf("verify %d during traffic = %d:\n%s%s", i, code, out, errOut)
			}
			continue
		}
		n, err := strconv.ParseUint(m[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, n)
	}
	cancel()
	if failures > 0 {
		t.Fatalf("%d of %d verifications during traffic failed", failures, runs)
	}
	if distinct := slices.Compact(slices.Clone(sizes)); len(distinct) < 10 {
		t.Errorf("tree sizes seen %v: the log hardly grew during the verifications", distinct)
	}
	t.Logf("%d verifications during traffic, tree sizes %d to %d", runs, sizes[0], sizes[len(sizes)-1])
}

// verifyFixture is a stopped gateway's data directory to verify, with its
// config.
func verifyFixture(t *testing.T) (base, cfgPath string) {
	t.Helper()
	base = t.TempDir()
	g := startGateway(t, base, gwConfig{})
	for i := range 300 {
		body := fmt.Appendf(nil, `{"destination":"U1","events":[{"type":"message","n":%d,"source":{"type":"user","userId":"U%d"}}]}`, i, i%5)
		if code := g.post(t, testSecret, body); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	g.waitTreeSize(t, 300)
	g.stop()
	return base, g.cfgPath
}

// fileStates returns, for each file of dir, its size, modification time
// and SHA-256.
func fileStates(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ent := range ents {
		if ent.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := ent.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[ent.Name()] = fmt.Sprintf("%d bytes, mtime %d, sha256 %x", fi.Size(), fi.ModTime().UnixNano(), sha256.Sum256(b))
	}
	return out
}

// TestVerifyReadOnly: verify opens the SQLite database read-only. It
// changes no byte, mtime or file of the data directory (no -wal, no -shm),
// and it verifies a database its user may only read, in a directory its
// user may not write (as root, it runs as nobody to make that so).
func TestVerifyReadOnly(t *testing.T) {
	sqliteOnly(t)
	base, cfgPath := verifyFixture(t)
	data := filepath.Join(base, "data")
	if _, err := os.Stat(filepath.Join(data, "ledger.db-wal")); err == nil {
		t.Fatal("a stopped gateway left a WAL: the test needs none")
	}
	before := fileStates(t, data)
	code, out, errOut := runInProcess("verify", "-config", cfgPath)
	if code != 0 || !strings.HasPrefix(out, "OK ") {
		t.Fatalf("verify = %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning: trusting "+filepath.Join(data, "log.vkey")) {
		t.Errorf("verify without -vkey gave no warning that it trusts the data directory's key:\n%s", errOut)
	}
	if after := fileStates(t, data); !mapsEqual(before, after) {
		t.Errorf("verify changed the data directory:\nbefore %v\nafter  %v", before, after)
	}

	// A copy that its user may only read: files 0444 (0400 when not
	// root), directory 0555 (0500). Root may write anyway: it runs the
	// binary as nobody.
	ro := filepath.Join(t.TempDir(), "ro")
	copyDir(t, data, ro)
	vkey, kek := filepath.Join(t.TempDir(), "log.vkey"), filepath.Join(t.TempDir(), "kek")
	copyFile(t, filepath.Join(data, "log.vkey"), vkey)
	copyFile(t, filepath.Join(data, "kek"), kek)
	asRoot := os.Geteuid() == 0
	fileMode, dirMode := os.FileMode(0o400), os.FileMode(0o500)
	if asRoot {
		fileMode, dirMode = 0o444, 0o555
	}
	chmod := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{vkey, kek} {
		chmod(p, 0o444)
		chmod(filepath.Dir(p), 0o755)
		chmod(filepath.Dir(filepath.Dir(p)), 0o755)
	}
	if err := filepath.Walk(ro, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		return os.Chmod(p, fileMode)
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(ro, "published"), filepath.Join(ro, "anchors"), ro} {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			continue // no anchors yet
		}
		chmod(d, dirMode)
	}
	chmod(filepath.Dir(ro), 0o755)
	chmod(filepath.Dir(filepath.Dir(ro)), 0o755)
	t.Cleanup(func() {
		filepath.Walk(ro, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	roBefore := fileStates(t, ro)
	cmd := exec.Command(linegateBin, "verify", "-data", ro, "-vkey", vkey, "-kek", kek)
	if asRoot {
		bin := filepath.Join(filepath.Dir(vkey), "linegate")
		copyFile(t, linegateBin, bin)
		chmod(bin, 0o555)
		cmd.Path, cmd.Args[0] = bin, bin
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	outb, err := cmd.CombinedOutput()
	if err != nil || !bytes.HasPrefix(outb, []byte("OK ")) {
		t.Fatalf("verify of a read-only copy: %v:\n%s", err, outb)
	}
	if bytes.Contains(outb, []byte("warning: trusting")) {
		t.Errorf("verify -vkey warned that it trusts the data directory's key:\n%s", outb)
	}
	if after := fileStates(t, ro); !mapsEqual(roBefore, after) {
		t.Errorf("verify changed the read-only copy:\nbefore %v\nafter  %v", roBefore, after)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setUserVersion sets the schema version of a data directory's database.
func setUserVersion(t *testing.T, data string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}

func userVersion(t *testing.T, data string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "ledger.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVerifyPinsKeySchemaAndKEK: verify refuses a schema version other
// than its own instead of migrating it; -vkey pins the key the auditor
// holds; without a KEK it checks the structure, and says what it did not.
func TestVerifyPinsKeySchemaAndKEK(t *testing.T) {
	sqliteOnly(t)
	base, _ := verifyFixture(t)
	data := filepath.Join(base, "data")
	vkey := filepath.Join(data, "log.vkey")
	current := userVersion(t, data)

	t.Run("schema version", func(t *testing.T) {
		for _, tt := range []struct {
			version int
			want    string
		}{
			{current + 1, fmt.Sprintf("database schema version %d is newer than this linegate's (%d)", current+1, current)},
			{current - 1, fmt.Sprintf("database schema version %d is older than this linegate's (%d), and a read-only open does not migrate", current-1, current)},
		} {
			dir := t.TempDir()
			copyDir(t, data, dir)
			setUserVersion(t, dir, tt.version)
			code, out, errOut := runInProcess("verify", "-data", dir, "-vkey", vkey)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("verify of schema version %d = %d:\n%s%s\nwant exit 1 and %q", tt.version, code, out, errOut, tt.want)
			}
			if v := userVersion(t, dir); v != tt.version {
				t.Errorf("verify changed the schema version %d to %d", tt.version, v)
			}
		}
	})

	t.Run("vkey", func(t *testing.T) {
		if code, out, errOut := runInProcess("verify", "-data", data, "-vkey", vkey); code != 0 || strings.Contains(errOut, "warning: trusting") {
			t.Errorf("verify -vkey with the log's key = %d:\n%s%s", code, out, errOut)
		}
		// A key of the same name, not the one that signed.
		_, other, err := note.GenerateKey(rand.Reader, testOrigin)
		if err != nil {
			t.Fatal(err)
		}
		wrong := filepath.Join(t.TempDir(), "other.vkey")
		if err := os.WriteFile(wrong, []byte(other+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runInProcess("verify", "-data", data, "-vkey", wrong)
		if code != 1 || !regexp.MustCompile(`(?m)^FAIL (tree head|anchor \S+|published checkpoint file): checkpoint signature`).MatchString(out) {
			t.Errorf("verify -vkey with another key = %d:\n%s%s\nwant exit 1 naming the checkpoint whose signature does not verify", code, out, errOut)
		}
	})

	t.Run("without KEK", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, data, dir)
		if err := os.Remove(filepath.Join(dir, "kek")); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runInProcess("verify", "-data", dir, "-vkey", vkey)
		if code != 0 || !strings.HasPrefix(out, "OK ") || !regexp.MustCompile(`NOT CHECKED: payload commitments: \d+ payloads sealed, not opened`).MatchString(out) {
			t.Fatalf("verify without a KEK = %d:\n%s%s\nwant OK, and the payloads not opened", code, out, errOut)
		}
		// The structure is still checked: a tile, a leaf.
		for _, tt := range []struct {
			name, sql, where string
		}{
			{"level-0 tile byte", flip("tiles", "data", "level = 0 AND idx = 0", 40), "FAIL record 1 (tile 0/0)"},
			{"level-1 tile byte", flip("tiles", "data", "level = 1 AND idx = 0", 0), "FAIL tile 1/0"},
			{"leaf byte", flip("records", "leaf", "idx = 42", 20), "FAIL record 42 (tile 0/0)"},
		} {
			d := t.TempDir()
			copyDir(t, dir, filepath.Join(d, "data"))
			execSQL(t, d, tt.sql)
			code, out, errOut := runInProcess("verify", "-data", filepath.Join(d, "data"), "-vkey", vkey)
			if code != 1 || !strings.Contains(out, tt.where) {
				t.Errorf("%s, without a KEK: verify = %d:\n%s%s\nwant exit 1 naming %q", tt.name, code, out, errOut, tt.where)
			}
		}
	})

	t.Run("with KEK", func(t *testing.T) {
		code, out, errOut := runInProcess("verify", "-data", data, "-vkey", vkey)
		if code != 0 || strings.Contains(out, "NOT CHECKED") {
			t.Errorf("verify with the KEK = %d:\n%s%s", code, out, errOut)
		}
	})
}
