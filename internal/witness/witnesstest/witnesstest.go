// Package witnesstest runs a real tlog-witness for tests: the
// transparency-dev omniwitness, with SQLite persistence, on a loopback port
// and a temporary directory, configured to witness one log. The binary is
// named by LINEGATE_TEST_WITNESS_BIN; without it the tests skip, unless
// LINEGATE_REQUIRE_WITNESS=1 (CI), where they fail.
package witnesstest

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Witness is a running witness.
type Witness struct {
	URL  string // the base of its tlog-witness API
	VKey string // its verifier key (Ed25519; cosignature/v1 signatures)
	Name string
}

// Start starts a witness named name that witnesses the log of origin
// whose checkpoint verifier key is logVKey; it stops when t ends.
func Start(t testing.TB, name, origin, logVKey string) *Witness {
	t.Helper()
	bin := os.Getenv("LINEGATE_TEST_WITNESS_BIN")
	if bin == "" {
		if os.Getenv("LINEGATE_REQUIRE_WITNESS") == "1" {
			t.Fatal("LINEGATE_REQUIRE_WITNESS=1 but LINEGATE_TEST_WITNESS_BIN names no witness binary (omniwitness)")
		}
		t.Skip("no witness: set LINEGATE_TEST_WITNESS_BIN to an omniwitness binary")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LINEGATE_TEST_WITNESS_BIN: %v", err)
	}
	dir := t.TempDir()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "witness.key")
	if err := os.WriteFile(keyFile, []byte(skey), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := fmt.Sprintf("Logs:\n  - Origin: %q\n    PublicKey: %q\n    URL: %q\n", origin, logVKey, "http://127.0.0.1/unused")
	logsFile := filepath.Join(dir, "logs.yaml")
	if err := os.WriteFile(logsFile, []byte(logs), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--listen", addr, "--metrics_listen", "", "--private_key_path", keyFile,
		"--db_file", filepath.Join(dir, "witness.db"), "--additional_logs", logsFile, "--logtostderr")
	logf, err := os.Create(filepath.Join(dir, "witness.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("witness log:\n%s", b)
		}
	})
	w := &Witness{URL: "http://" + addr, VKey: vkey, Name: name}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// A GET of the POST-only endpoint: any answer means it serves.
		resp, err := http.Get(w.URL + "/add-checkpoint")
		if err == nil {
			resp.Body.Close()
			return w
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the witness did not start: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
