// Package deploy_test checks the deployment files beside it against the
// real binary, as far as this machine allows: the container image's build
// command gives a static binary that serves and answers the image's health
// check (docker_test.go); a signed webhook goes through nginx and Caddy
// over HTTPS into the ledger byte for byte (proxy_test.go); the systemd
// unit is hardened and passes systemd-analyze (systemd_test.go); the alert
// rules pass promtool's checks and unit tests, the rules and the Grafana
// dashboard name only exported metrics, the Alertmanager example routes
// as it says (monitoring_test.go), and an alert goes from Prometheus
// through Alertmanager into the ledger (alertchain_test.go).
//
// The tools (nginx, caddy, systemd-analyze, file, promtool, amtool,
// prometheus, prometheus-alertmanager) come from Debian's
// packages; a test whose tool is missing skips, unless
// LINEGATE_REQUIRE_DEPLOY=1 (CI installs them), which makes it fail.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// linegateBin is the binary built as the Dockerfile builds it
// (dockerBuild), once, by TestMain.
var linegateBin string

// dockerBuild is the Dockerfile's build command; docker_test.go checks
// that the Dockerfile runs exactly this.
const dockerBuild = "CGO_ENABLED=0 go build -trimpath -o /out/linegate ./cmd/linegate"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linegate-deploy")
	if err != nil {
		panic(err)
	}
	linegateBin = filepath.Join(dir, "linegate")
	args := strings.Fields(strings.TrimPrefix(dockerBuild, "CGO_ENABLED=0 "))
	for i, a := range args {
		if a == "/out/linegate" {
			args[i] = linegateBin
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = ".." // the repository, as the Dockerfile's WORKDIR
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n%s", dockerBuild, err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need returns the path of a tool, or skips the test without it (fails
// it under LINEGATE_REQUIRE_DEPLOY=1).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("LINEGATE_REQUIRE_DEPLOY") == "1" {
			t.Fatalf("%s is not installed (LINEGATE_REQUIRE_DEPLOY=1): apt-get install it", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
	return p
}

// testSecret and testToken are the channel's secrets in these tests.
const (
	testSecret = "deploy-test-channel-secret"
	testToken  = "deploy-test-access-token"
	testAdmin  = "deploy-test-admin-token"
)

// installConfig installs deploy/linegate.yaml in dir as an operator would
// in /etc/linegate, beside its secret files and an empty rule set, with
// the data directory in dir/data and the listeners on free loopback
// ports; edit makes further changes. It returns the config's path.
func installConfig(t *testing.T, dir string, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile("linegate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := replaceAll(t, string(b),
		"data_dir: /var/lib/linegate", "data_dir: "+filepath.Join(dir, "data"),
		"listen: 127.0.0.1:8080", "listen: 127.0.0.1:0",
		"admin_listen: 127.0.0.1:8081", "admin_listen: 127.0.0.1:0",
	)
	if edit != nil {
		cfg = edit(cfg)
	}
	files := map[string]string{
		"linegate.yaml": cfg,
		"shop.secret":   testSecret + "\n",
		"shop.token":    testToken + "\n",
		"admin-token":   testAdmin + "\n",
		"rules.yaml":    "rules: []\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The key encryption key, made as the config's comment says.
	if out, err := exec.Command(linegateBin, "keys", "new-kek", "-out", filepath.Join(dir, "kek")).CombinedOutput(); err != nil {
		t.Fatalf("linegate keys new-kek: %v\n%s", err, out)
	}
	return filepath.Join(dir, "linegate.yaml")
}

// replaceAll replaces each old with its new, and fails the test when an
// old is not there: a deployment file changed under the test.
func replaceAll(t *testing.T, s string, oldNew ...string) string {
	t.Helper()
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("%q is no longer in the file: update the test", oldNew[i])
		}
		s = strings.ReplaceAll(s, oldNew[i], oldNew[i+1])
	}
	return s
}

// gateway is a running `linegate serve`.
type gateway struct {
	dir            string
	cmd            *exec.Cmd
	webhook, admin string // host:port
	mu             sync.Mutex
	logs           bytes.Buffer
	done           chan struct{}
}

func (g *gateway) Logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logs.String()
}

// startGateway runs linegate serve with a config and waits for both
// listeners.
func startGateway(t *testing.T, dir, cfg string) *gateway {
	t.Helper()
	g := &gateway{dir: dir, cmd: exec.Command(linegateBin, "serve", "-config", cfg), done: make(chan struct{})}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 2)
	go func() {
		defer close(g.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			g.mu.Lock()
			g.logs.Write(sc.Bytes())
			g.logs.WriteByte('\n')
			g.mu.Unlock()
			var l struct{ Msg, Listener, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				addrs <- [2]string{l.Listener, l.Addr}
			}
		}
		g.cmd.Wait()
	}()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.Logs())
		}
	})
	timeout := time.After(30 * time.Second)
	for g.webhook == "" || g.admin == "" {
		select {
		case a := <-addrs:
			if a[0] == "webhook" {
				g.webhook = a[1]
			} else {
				g.admin = a[1]
			}
		case <-g.done:
			t.Fatalf("gateway exited at start:\n%s", g.Logs())
		case <-timeout:
			t.Fatalf("gateway did not start:\n%s", g.Logs())
		}
	}
	return g
}

// stop ends the gateway gracefully (SIGTERM, as systemd and docker stop
// do), and kills it after 30 seconds.
func (g *gateway) stop() {
	if g.cmd.Process == nil {
		return
	}
	g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

// webhookRecords returns the webhook records of a stopped gateway's
// ledger: metadata and body, decrypted with the KEK beside the config.
func webhookRecords(t *testing.T, dir string) []struct {
	meta *record.Meta
	body []byte
} {
	t.Helper()
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(dir, "data", "ledger.db"), sqlitestore.Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kek, err := keys.LoadKEKFile(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	ring := keys.NewRing(s, kek)
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []struct {
		meta *record.Meta
		body []byte
	}
	for r, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		if err := leaf.UnmarshalBinary(r.Leaf); err != nil {
			t.Fatal(err)
		}
		if leaf.Kind != ledger.KindWebhook || r.Payload == nil {
			continue
		}
		payload, err := ledger.OpenPayload(ctx, ring, r)
		if err != nil {
			t.Fatal(err)
		}
		meta, body, err := record.DecodePayload(payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, struct {
			meta *record.Meta
			body []byte
		}{meta, body})
	}
	return out
}
