package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// linegateBin is the linegate binary that the end-to-end tests run, built once
// by TestMain.
var linegateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linegate-e2e")
	if err != nil {
		panic(err)
	}
	linegateBin = filepath.Join(dir, "linegate")
	if out, err := exec.Command("go", "build", "-o", linegateBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building linegate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testSecret = "test-channel-secret"
	testOrigin = "example.com/linegate/test"
)

// gwConfig is what a test varies in the config.
type gwConfig struct {
	nextSecret string
	secret     string
	maxBody    int64
	maxPages   int64
	public     bool     // log.public
	extra      string   // top-level config lines
	logExtra   string   // lines of the log: section, indented 2 spaces
	chanExtra  string   // lines of the demo channel, indented 4 spaces
	env        []string // extra environment of the process
	database   string   // a PostgreSQL database for this gateway
	nofile     int      // the process's file descriptor limit (0: the machine's)
}

// gateway is a `linegate serve` process on free loopback ports.
type gateway struct {
	t       *testing.T
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	webhook string // http://host:port
	admin   string
	mu      sync.Mutex
	logs    bytes.Buffer
	done    chan struct{}
}

// pgE2E makes every gateway of these tests run on PostgreSQL (a schema of
// its own in the server of LINEGATE_TEST_POSTGRES) rather than SQLite:
// LINEGATE_E2E_POSTGRES=1. CI runs the tests both ways.
var pgE2E = os.Getenv("LINEGATE_E2E_POSTGRES") == "1"

var testDSNs sync.Map // test data directory -> its database

// gatewayDSN returns the database of a test's data directory: "" for
// SQLite.
func gatewayDSN(t *testing.T, dir string) string {
	if !pgE2E {
		return ""
	}
	if v, ok := testDSNs.Load(dir); ok {
		return v.(string)
	}
	dsn := pgtest.Schema(t)
	testDSNs.Store(dir, dsn)
	return dsn
}

// sqliteOnly skips a test that looks into SQLite's files when the gateways
// run on PostgreSQL.
func sqliteOnly(t *testing.T) {
	if pgE2E {
		t.Skip("looks into the SQLite database's files")
	}
}

func writeConfig(t *testing.T, dir string, c gwConfig) string {
	if c.secret == "" {
		c.secret = testSecret
	}
	y := fmt.Sprintf(`data_dir: %s
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
admin_token: test-admin-token
log:
  origin: %s
  checkpoint_interval: 50ms
  public: %v
%slogging:
  format: json
  level: info
`, filepath.Join(dir, "data"), testOrigin, c.public, c.logExtra)
	if c.maxBody > 0 {
		y += fmt.Sprintf("max_body_bytes: %d\n", c.maxBody)
	}
	if c.maxPages > 0 {
		y += fmt.Sprintf("ledger:\n  max_pages: %d\n", c.maxPages)
	}
	y += c.extra
	if !strings.Contains(c.extra, "monitor:") {
		// No polls of LINE's API (its default base is the real one).
		y += "monitor: {webhook_every: 0s, quota_every: 0s}\n"
	}
	if c.database != "" {
		y += fmt.Sprintf("database: %q\n", c.database)
	} else if dsn := gatewayDSN(t, dir); dsn != "" {
		y += fmt.Sprintf("database: %q\n", dsn)
	}
	y += fmt.Sprintf("channels:\n  - id: demo\n    secret: %q\n", c.secret)
	if c.nextSecret != "" {
		y += fmt.Sprintf("    next_secret: %q\n", c.nextSecret)
	}
	y += "    access_token: test-access-token\n" + c.chanExtra
	p := filepath.Join(dir, "linegate.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startGateway runs linegate serve with the config in dir and waits until
// both listeners are up.
func startGateway(t *testing.T, dir string, c gwConfig) *gateway {
	t.Helper()
	g := &gateway{t: t, dir: dir, cfgPath: writeConfig(t, dir, c), done: make(chan struct{})}
	g.cmd = exec.Command(linegateBin, "serve", "-config", g.cfgPath)
	if c.nofile > 0 {
		// A process with fewer file descriptors than this machine gives.
		g.cmd = exec.Command("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, c.nofile), linegateBin, "serve", "-config", g.cfgPath)
	}
	g.cmd.Env = append(os.Environ(), c.env...)
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
				addrs <- [2]string{l.Listener, "http://" + l.Addr}
			}
		}
		g.cmd.Wait()
	}()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
			<-g.done
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.Logs())
		}
	})
	timeout := time.After(20 * time.Second)
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

func (g *gateway) Logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logs.String()
}

// stop sends SIGTERM and waits for a graceful exit.
func (g *gateway) stop() {
	g.t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.t.Fatalf("gateway did not stop on SIGTERM")
	}
}

// kill sends SIGKILL: no drain, no final checkpoint.
func (g *gateway) kill() {
	g.cmd.Process.Kill()
	<-g.done
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// post sends body to the demo channel signed with secret ("" for none).
func (g *gateway) post(t testing.TB, secret string, body []byte) int {
	t.Helper()
	code, err := postWebhook(g.webhook, secret, body)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func postWebhook(base, secret string, body []byte) (int, error) {
	req, err := http.NewRequest("POST", base+"/webhook/demo", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "LineBotWebhook/2.0")
	if secret != "" {
		req.Header.Set("X-Line-Signature", line.Sign([]byte(secret), body))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (g *gateway) get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// waitTreeSize polls the served checkpoint until the tree has at least n
// records, and returns it.
func (g *gateway) waitTreeSize(t testing.TB, n uint64) []byte {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		_, cp := g.get(t, g.admin+"/log/checkpoint")
		if c, err := ledger.ParseCheckpoint(string(cp)); err == nil && c.Size >= n {
			return cp
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("tree did not reach size %d", n)
	return nil
}

// storedRecord is a record read back from the database.
type storedRecord struct {
	leaf     ledger.Leaf
	meta     *record.Meta
	body     []byte
	subjects []string // whose data keys sealed it
}

// testRing returns the key ring of a test gateway's data directory, whose
// key encryption key serve created.
func testRing(t testing.TB, dir string, s keys.Store) *keys.Ring {
	t.Helper()
	k, err := keys.LoadKEKFile(filepath.Join(dir, "data", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	return keys.NewRing(s, k)
}

// readLedger reads every record of the data directory's database.
func readLedger(t testing.TB, dir string) []storedRecord {
	t.Helper()
	s := openStore(t, dir)
	defer s.Close()
	return readStore(t, s, testRing(t, dir, s))
}

// readSharedLedger reads every record of replicas' PostgreSQL database,
// whose key encryption key is in kekFile.
func readSharedLedger(t testing.TB, dsn, kekFile string) []storedRecord {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kek, err := keys.LoadKEKFile(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	return readStore(t, s, keys.NewRing(s, kek))
}

// readStore reads and decrypts every record of a store.
func readStore(t testing.TB, s backend, ring *keys.Ring) []storedRecord {
	t.Helper()
	ctx := context.Background()
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRecord
	for r, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		var sr storedRecord
		if err := sr.leaf.UnmarshalBinary(r.Leaf); err != nil {
			t.Fatalf("record %d: %v", r.Index, err)
		}
		if r.Payload == nil {
			out = append(out, sr) // deleted: the leaf alone
			continue
		}
		payload, err := ledger.OpenPayload(ctx, ring, r)
		if err != nil {
			t.Fatalf("record %d: %v", r.Index, err)
		}
		if sr.meta, sr.body, err = record.DecodePayload(payload); err != nil {
			t.Fatalf("record %d: %v", r.Index, err)
		}
		sr.subjects = ledger.Subjects(r.Keys)
		out = append(out, sr)
	}
	return out
}

// eventIDs returns the webhookEventIds of a webhook body.
func eventIDs(t testing.TB, body []byte) []string {
	t.Helper()
	var cb struct {
		Events []struct{ WebhookEventID string }
	}
	if err := json.Unmarshal(body, &cb); err != nil {
		t.Fatalf("webhook body: %v: %s", err, body)
	}
	var ids []string
	for _, e := range cb.Events {
		ids = append(ids, e.WebhookEventID)
	}
	return ids
}

// runCLI runs the linegate binary and returns its exit code and output.
func runCLI(t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(linegateBin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// fixtureBodies returns the module's own webhook bodies (corpus.Webhooks),
// by file name without .json.
func fixtureBodies(t testing.TB) map[string][]byte {
	t.Helper()
	return readBodies(t, corpus.Webhooks(t))
}

// readBodies returns the webhook bodies (*.json) of dir, by file name
// without .json.
func readBodies(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no webhook bodies in %s: %v", dir, err)
	}
	out := make(map[string][]byte)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	return out
}

// openStore opens a test gateway's database, SQLite or PostgreSQL.
func openStore(t testing.TB, dir string) backend {
	t.Helper()
	var s backend
	var err error
	if v, ok := testDSNs.Load(dir); ok {
		s, err = pgstore.Open(context.Background(), v.(string), pgstore.Options{})
	} else {
		// Shared: tests read beside a running gateway, which holds the lock.
		s, err = sqlitestore.Open(context.Background(), filepath.Join(dir, "data", "ledger.db"), sqlitestore.Options{Shared: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitIdle waits until the gateway's pipeline has processed everything.
func waitIdle(t testing.TB, g *gateway) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, err := http.NewRequest("GET", g.admin+"/admin/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer test-admin-token")
		resp, err := httpClient.Do(req)
		if err == nil {
			var st struct {
				PipelineIdle bool `json:"pipeline_idle"`
			}
			err := json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("/admin/status: %v", err)
			}
			if st.PipelineIdle {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the pipeline never became idle")
}
