package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/ledger"
)

// TestFixtures sends every webhook body, signed, through the real binary:
// the module's own, and LINE's SDK fixtures when the shared corpus is
// there. Each is answered 200 and is in the ledger byte for byte; a wrong
// signature is 401 and recorded as a rejection; a body over the cap is 413;
// and verify passes.
func TestFixtures(t *testing.T) {
	t.Run("testdata", func(t *testing.T) { testFixtures(t, fixtureBodies(t)) })
	t.Run("sdk-java", func(t *testing.T) { testFixtures(t, readBodies(t, corpus.Shared(t, corpus.SDKJava))) })
}

func testFixtures(t *testing.T, fixtures map[string][]byte) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{maxBody: 4096})
	if _, err := os.Stat(filepath.Join(dir, "data", "ledger.db")); (err == nil) == pgE2E {
		t.Fatalf("on PostgreSQL = %v, but data/ledger.db: %v", pgE2E, err)
	}
	for name, body := range fixtures {
		if code := g.post(t, testSecret, body); code != 200 {
			t.Errorf("fixture %s: status %d, want 200", name, code)
		}
	}
	verifyButton := []byte(`{"destination":"Uab012345678901234567890123456789","events":[]}`)
	if code := g.post(t, testSecret, verifyButton); code != 200 {
		t.Errorf("Verify button request: status %d, want 200", code)
	}
	if code := g.post(t, "wrong-secret", fixtures["follow"]); code != 401 {
		t.Errorf("wrong signature: status %d, want 401", code)
	}
	if code := g.post(t, "", fixtures["follow"]); code != 401 {
		t.Errorf("missing signature: status %d, want 401", code)
	}
	big := bytes.Repeat([]byte(" "), 5000)
	if code := g.post(t, testSecret, big); code != 413 {
		t.Errorf("body over the cap: status %d, want 413", code)
	}
	if code, _ := g.get(t, g.webhook+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := g.get(t, g.webhook+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	_, metrics := g.get(t, g.admin+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`linegate_webhook_requests_total{channel="demo",outcome="ok"} %d`, len(fixtures)+1),
		`linegate_webhook_requests_total{channel="demo",outcome="bad_signature"} 1`,
		`linegate_webhook_requests_total{channel="demo",outcome="too_large"} 1`,
		`linegate_webhook_signature_failures_total{channel="demo"} 2`,
		`linegate_webhook_ack_seconds_bucket`,
		`linegate_ledger_append_seconds_bucket`,
		`linegate_ledger_integrate_seconds_bucket`,
		`linegate_ledger_tree_size`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	g.stop()

	recs := readLedger(t, dir)
	found := map[string]bool{}
	rejections := 0
	for _, r := range recs {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			for name, body := range fixtures {
				if bytes.Equal(r.body, body) {
					found[name] = true
					if sig := r.meta.Headers["X-Line-Signature"]; len(sig) != 1 || sig[0] == "" {
						t.Errorf("fixture %s recorded without its signature header", name)
					}
				}
			}
		case ledger.KindRejection:
			rejections++
			if len(r.body) != 0 || r.meta.BodySHA256 == "" {
				t.Errorf("rejection record holds the body or lacks its hash: %+v", r.meta)
			}
		}
	}
	for name := range fixtures {
		if !found[name] {
			t.Errorf("fixture %s is not in the ledger byte for byte", name)
		}
	}
	if rejections != 2 {
		t.Errorf("%d rejection records, want 2", rejections)
	}
	// The graceful stop integrated everything and published it.
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 || !strings.Contains("\n"+out, "\nOK ") || !strings.Contains(out, " 0 awaiting integration") {
		t.Errorf("verify = %d:\n%s", code, out)
	}
	for _, s := range []string{testSecret, "Hello, world", "linen shirt"} { // message text of the SDK's and ours
		if strings.Contains(g.Logs(), s) {
			t.Errorf("the log holds a secret or message text: %q", s)
		}
	}
}

// TestListeners checks what each listener serves: the log's read side on
// the admin listener, and on the webhook listener only when log.public is
// set; admin calls only with the bearer token.
func TestListeners(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			g := startGateway(t, t.TempDir(), gwConfig{public: public})
			want := 404
			if public {
				want = 200
			}
			if code, _ := g.get(t, g.webhook+"/log/checkpoint"); code != want {
				t.Errorf("webhook listener /log/checkpoint = %d, want %d", code, want)
			}
			if code, _ := g.get(t, g.admin+"/log/checkpoint"); code != 200 {
				t.Errorf("admin listener /log/checkpoint = %d", code)
			}
			if code, _ := g.get(t, g.webhook+"/metrics"); code != 404 {
				t.Errorf("webhook listener serves /metrics: %d", code)
			}
			if code, _ := g.get(t, g.admin+"/admin/status"); code != 401 {
				t.Errorf("/admin/status without a token = %d, want 401", code)
			}
			req, err := http.NewRequest("GET", g.admin+"/admin/status", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer test-admin-token")
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("/admin/status with the token = %d", resp.StatusCode)
			}
			req.Header.Set("Authorization", "Bearer wrong")
			if resp, err = httpClient.Do(req); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("/admin/status with a wrong token = %d", resp.StatusCode)
			}
			g.stop()
		})
	}
}

// TestSecretRotation: with next_secret set, both secrets are accepted; once
// the rotation is over, the old one is refused.
func TestSecretRotation(t *testing.T) {
	dir := t.TempDir()
	body := []byte(`{"destination":"U1","events":[]}`)
	g := startGateway(t, dir, gwConfig{secret: "old"})
	if a, b := g.post(t, "old", body), g.post(t, "new", body); a != 200 || b != 401 {
		t.Errorf("before rotation: old %d, new %d; want 200, 401", a, b)
	}
	g.stop()
	g = startGateway(t, dir, gwConfig{secret: "old", nextSecret: "new"})
	if a, b := g.post(t, "old", body), g.post(t, "new", body); a != 200 || b != 200 {
		t.Errorf("during rotation: old %d, new %d; want 200, 200", a, b)
	}
	g.stop()
	g = startGateway(t, dir, gwConfig{secret: "new"})
	if a, b := g.post(t, "old", body), g.post(t, "new", body); a != 401 || b != 200 {
		t.Errorf("after rotation: old %d, new %d; want 401, 200", a, b)
	}
	g.stop()
	var verifiers []string
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindWebhook {
			verifiers = append(verifiers, r.meta.Verifier)
		}
	}
	if got := strings.Join(verifiers, ","); got != "secret,secret,next_secret,secret" {
		t.Errorf("verifiers recorded: %s", got)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestSIGKILLUnderLoad kills the gateway with SIGKILL while 32 clients send
// webhooks; after a restart every request that was answered 200 is in the
// ledger, and verify passes.
func TestSIGKILLUnderLoad(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	var mu sync.Mutex
	acked := map[string]bool{}
	var sent atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Appendf(nil, `{"destination":"U1","events":[{"type":"message","webhookEventId":"w%d-%d"}]}`, w, i)
				sent.Add(1)
				code, err := postWebhook(g.webhook, testSecret, body)
				if err != nil {
					return // the gateway died under us
				}
				if code == 200 {
					mu.Lock()
					acked[string(body)] = true
					mu.Unlock()
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 2000 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.kill()
	close(stop)
	wg.Wait()
	if len(acked) < 100 {
		t.Fatalf("only %d requests acknowledged before the kill", len(acked))
	}

	g = startGateway(t, dir, gwConfig{})
	g.stop()
	stored := map[string]bool{}
	for _, r := range readLedger(t, dir) {
		stored[string(r.body)] = true
	}
	missing := 0
	for body := range acked {
		if !stored[body] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged requests are missing from the ledger", missing, len(acked))
	}
	t.Logf("%d sent, %d acknowledged before SIGKILL, %d records after restart", sent.Load(), len(acked), len(stored))
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify after restart = %d:\n%s", code, out)
	}
}

// TestLedgerFull fills the database to its configured cap: requests that
// cannot be made durable get 503 (never 200), readiness fails, and every
// request answered 200 is in the ledger. Raising the cap recovers.
func TestLedgerFull(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{maxPages: 60})
	var acked [][]byte
	got503 := false
	for i := 0; i < 5000 && !got503; i++ {
		body := fmt.Appendf(nil, `{"destination":"U1","events":[{"type":"message","n":%d,"pad":"%s"}]}`, i, strings.Repeat("x", 400))
		switch code := g.post(t, testSecret, body); code {
		case 200:
			acked = append(acked, body)
		case 503:
			got503 = true
		default:
			t.Fatalf("status %d", code)
		}
	}
	if !got503 {
		t.Fatal("no 503 from a full database")
	}
	if code, _ := g.get(t, g.webhook+"/readyz"); code != 503 {
		t.Errorf("/readyz on a full database = %d, want 503", code)
	}
	g.stop()
	stored := map[string]bool{}
	for _, r := range readLedger(t, dir) {
		stored[string(r.body)] = true
	}
	for _, b := range acked {
		if !stored[string(b)] {
			t.Fatalf("request answered 200 is missing from the ledger")
		}
	}
	g = startGateway(t, dir, gwConfig{})
	if code := g.post(t, testSecret, []byte(`{"events":[]}`)); code != 200 {
		t.Errorf("after raising the cap: status %d, want 200", code)
	}
	if code, _ := g.get(t, g.webhook+"/readyz"); code != 200 {
		t.Errorf("/readyz after raising the cap = %d", code)
	}
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestKeygen checks the key files keygen writes, and that it never
// overwrites a key.
func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	if code, out := runCLI(t, "keygen", "-out", dir, "-origin", "example.com/k"); code != 0 {
		t.Fatalf("keygen = %d: %s", code, out)
	}
	fi, err := os.Stat(filepath.Join(dir, "log.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log.key: %v, mode %v", err, fi.Mode())
	}
	skey, err := os.ReadFile(filepath.Join(dir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := os.ReadFile(filepath.Join(dir, "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.NewSigner(skey); err != nil {
		t.Errorf("log.key: %v", err)
	}
	v, err := ledger.NewVerifier(vkey)
	if err != nil || v.Name() != "example.com/k" {
		t.Errorf("log.vkey: %v, %v", v, err)
	}
	if code, _ := runCLI(t, "keygen", "-out", dir); code != 1 {
		t.Errorf("keygen over an existing key: exit %d, want 1", code)
	}
	if code, _ := runCLI(t, "keygen"); code != 2 {
		t.Errorf("keygen without -out: exit %d, want 2", code)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for name, y := range map[string]string{
		"unknown key":   "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchanels: []\n",
		"two secrets":   "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchannels: [{id: x, secret: a, secret_env: B}]\n",
		"no secret":     "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchannels: [{id: x}]\n",
		"no origin":     "data_dir: " + dir + "\nchannels: [{id: x, secret: a}]\n",
		"duplicate id":  "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchannels: [{id: x, secret: a}, {id: x, secret: b}]\n",
		"unset env var": "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchannels: [{id: x, secret_env: LINEGATE_TEST_UNSET}]\n",
		"bad bot id":    "data_dir: " + dir + "\nlog: {origin: a.b/c}\nchannels: [{id: x, secret: a, bot_user_id: U1}]\n",
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := runCLI(t, "serve", "-config", p)
		if code != 1 || !strings.Contains(out, "config") {
			t.Errorf("%s: exit %d, output %q; want exit 1 naming the config", name, code, out)
		}
	}
}
