package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
)

// kelvinRules is a rule file whose second rule names a day with the
// Kelvin sign (U+212A), which lower-cases to an ASCII "k" of another
// length.
const kelvinRules = "rules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n  - name: office\n    when:\n      hours: {tz: Asia/Tokyo, days: [\"\u212Aon\"], from: \"09:00\", to: \"18:00\"}\n    reply: [{type: text, text: open}]\n"

// TestBadRuleFileNeverCrashes: a rule file with a non-ASCII day name is an
// error naming its file and line, at start (exit 1), on the admin reload
// (400, the connection answered) and on SIGHUP (logged; serve keeps
// running with the rules it had).
func TestBadRuleFileNeverCrashes(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(kelvinRules), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gwConfig{extra: fmt.Sprintf("rules_files: [%q]\n", rulesFile)}
	writeConfig(t, dir, cfg)
	code, out := runCLI(t, "serve", "-config", filepath.Join(dir, "linegate.yaml"))
	if code != 1 || !strings.Contains(out, rulesFile+": line 4: rule \"office\"") || strings.Contains(out, "panic") {
		t.Fatalf("serve with a bad rule file = %d:\n%s", code, out)
	}

	good := strings.Replace(kelvinRules, "\u212Aon", "mon", 1)
	if err := os.WriteFile(rulesFile, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, dir, cfg)
	if err := os.WriteFile(rulesFile, []byte(kelvinRules), 0o600); err != nil {
		t.Fatal(err)
	}
	code, b := adminDo(t, g, "/admin/rules/reload", "")
	if code != http.StatusBadRequest || !strings.Contains(string(b), "line 4") {
		t.Errorf("reload of a bad rule file = %d %s, want 400 naming line 4", code, b)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.Logs(), "rules not reloaded") {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP with a bad rule file logged nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := g.get(t, g.admin+"/healthz"); code != 200 {
		t.Errorf("healthz after SIGHUP = %d", code)
	}
	select {
	case <-g.done:
		t.Fatalf("serve died on SIGHUP:\n%s", g.Logs())
	default:
	}
	g.stop()
}

// fromAddr returns an HTTP client whose connections come from a loopback
// address of their own (127.0.0.0/8 is all loopback on Linux).
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// idleConns opens n connections to the webhook listener's port from the
// loopback address ip, which never send a byte; t's cleanup closes them.
func idleConns(t *testing.T, port, ip string, n int) []net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	var conns []net.Conn
	for range n {
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// postSignedFrom sends an empty signed webhook to the demo channel on the
// webhook listener's port from the loopback address ip, and returns the
// answer's status.
func postSignedFrom(t *testing.T, port, ip string) int {
	t.Helper()
	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	req, err := http.NewRequest("POST", "http://"+net.JoinHostPort("127.0.0.1", port)+"/webhook/demo", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Line-Signature", line.Sign([]byte(testSecret), body))
	resp, err := fromAddr(ip).Do(req)
	if err != nil {
		t.Fatalf("signed webhook: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestConnectionLimits: hundreds of idle connections (from several
// addresses, beyond the per-client and total limits) do not keep a signed
// webhook or /metrics from an answer; connections past the per-client
// limit are closed at once. (The bound is small here; the default is
// 4096 of the 20,000 descriptors a process may have.)
func TestConnectionLimits(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{extra: "connections: {max: 200, per_client: 60, idle_timeout: 30s}\n"})
	addr := strings.TrimPrefix(g.webhook, "http://")
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	// One address's 60 idle connections that never send a byte; a 61st
	// from it is closed at once.
	idleConns(t, port, "127.0.0.1", 60)
	time.Sleep(200 * time.Millisecond)
	extra := idleConns(t, port, "127.0.0.1", 1)[0]
	if err := extra.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("a connection past the per-client limit was kept open (%v)", err)
	}
	// Four more addresses: 300 idle connections in all, more than the
	// listener takes.
	for a := 2; a <= 5; a++ {
		idleConns(t, port, fmt.Sprintf("127.0.0.%d", a), 60)
	}

	start := time.Now()
	if code := postSignedFrom(t, port, "127.0.0.9"); code != 200 {
		t.Errorf("signed webhook beside the idle connections = %d", code)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("signed webhook took %v", took)
	}
	code, metrics := g.get(t, g.admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{`linegate_webhook_connections_refused_total{reason="per_client"}`, "linegate_webhook_connections_evicted_total"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	g.stop()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestIdleConnectionsCannotStarve: a gateway allowed 512 file descriptors,
// and 700 idle connections from several addresses. Without a bound, the
// connections take every descriptor (accept4: too many open files), and a
// signed webhook and /metrics get no answer; with the default bound (half
// the descriptors), both answer at once.
func TestIdleConnectionsCannotStarve(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{nofile: 512})
	_, port, err := net.SplitHostPort(strings.TrimPrefix(g.webhook, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	for a := 1; a <= 7; a++ {
		idleConns(t, port, fmt.Sprintf("127.0.0.%d", a), 100)
	}
	time.Sleep(300 * time.Millisecond)
	if code := postSignedFrom(t, port, "127.0.0.9"); code != 200 {
		t.Errorf("signed webhook beside 700 idle connections = %d", code)
	}
	if code, _ := g.get(t, g.admin+"/metrics"); code != 200 {
		t.Errorf("/metrics = %d", code)
	}
	if strings.Contains(g.Logs(), "too many open files") {
		t.Error("the gateway ran out of file descriptors")
	}
	g.stop()
}

// TestSlowBodiesCannotStarve: 300 connections from several addresses
// (beyond the limit of 200) that each send the headers of a webhook with a
// bad signature and a body of 100,000 bytes, then a byte a second, do not
// keep a signed webhook out: a body slower than a second loses its
// connection to a new one, and the signed webhook is answered 200 within
// a few seconds, before any read timeout ends the slow requests.
func TestSlowBodiesCannotStarve(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{extra: "connections: {max: 200, per_client: 100}\n"})
	_, port, err := net.SplitHostPort(strings.TrimPrefix(g.webhook, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort("127.0.0.1", port)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	head := "POST /webhook/demo HTTP/1.1\r\nHost: x\r\nX-Line-Signature: bad\r\nContent-Length: 100000\r\n\r\n{"
	for a := 1; a <= 6; a++ {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.1.0.%d", a))}, Timeout: 2 * time.Second}
		for range 50 {
			c, err := d.Dial("tcp", target)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			conns = append(conns, c)
			c.Write([]byte(head)) // a refused connection may fail
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	defer func() { close(stop); <-done }()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for _, c := range conns {
					c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					c.Write([]byte(" "))
				}
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)

	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	start := time.Now()
	var lastErr error
	for time.Since(start) < 3*time.Second {
		req, err := http.NewRequest("POST", "http://"+target+"/webhook/demo", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Line-Signature", line.Sign([]byte(testSecret), body))
		resp, err := fromAddr("127.1.0.9").Do(req)
		if err != nil {
			lastErr = err // refused: the listener is full
			time.Sleep(50 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("signed webhook = %d", resp.StatusCode)
		}
		t.Logf("signed webhook answered after %v", time.Since(start).Round(time.Millisecond))
		for _, c := range conns {
			c.Close()
		}
		g.stop()
		return
	}
	t.Fatalf("a signed webhook beside 300 slow bodies got no answer in %v: %v", time.Since(start).Round(time.Millisecond), lastErr)
}

// TestVerifyBundleReadsRegularFilesOnly: verify-bundle on a malicious
// bundle reads only the bundle's regular files: a symbolic link (to a
// file outside, or inside), a named pipe in place of a file, or a linked
// directory (records, anchors) is reported, at once, never followed or
// waited on.
func TestVerifyBundleReadsRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{logExtra: "  anchor_every: 1s\n"})
	sendText(t, g, "U1", "", "hello")
	waitIdle(t, g)
	time.Sleep(1500 * time.Millisecond) // an anchor
	g.stop()
	base := filepath.Join(t.TempDir(), "bundle")
	if code, out := runCLI(t, "export", "-config", g.cfgPath, "-out", base); code != 0 {
		t.Fatalf("export = %d:\n%s", code, out)
	}
	vkey := filepath.Join(dir, "data", "log.vkey")
	if code, out := runCLI(t, "verify-bundle", "-vkey", vkey, base); code != 0 {
		t.Fatalf("verify-bundle of the bundle as exported = %d:\n%s", code, out)
	}
	recs, err := filepath.Glob(filepath.Join(base, "records", "*"))
	if err != nil || len(recs) == 0 {
		t.Fatalf("no records in the bundle: %v", err)
	}
	first := filepath.Base(recs[0])
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("not in the bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(b string) error
	}{
		{"body is a link outside", func(b string) error {
			p := filepath.Join(b, "records", first, "body")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink(outside, p)
		}},
		{"body is a link inside", func(b string) error {
			p := filepath.Join(b, "records", first, "body")
			if err := os.Rename(p, p+".real"); err != nil {
				return err
			}
			return os.Symlink("body.real", p)
		}},
		{"nonce is a named pipe", func(b string) error {
			p := filepath.Join(b, "records", first, "nonce")
			if err := os.Remove(p); err != nil {
				return err
			}
			return syscall.Mkfifo(p, 0o600)
		}},
		{"checkpoint is a named pipe", func(b string) error {
			p := filepath.Join(b, "checkpoint")
			if err := os.Remove(p); err != nil {
				return err
			}
			return syscall.Mkfifo(p, 0o600)
		}},
		{"records is a linked directory", func(b string) error {
			p := filepath.Join(b, "records")
			if err := os.Rename(p, filepath.Join(b, "elsewhere")); err != nil {
				return err
			}
			return os.Symlink("elsewhere", p)
		}},
		{"an anchor is a link", func(b string) error {
			as, err := filepath.Glob(filepath.Join(b, "anchors", "*.checkpoint"))
			if err != nil || len(as) == 0 {
				return fmt.Errorf("no anchor in the bundle: %v", err)
			}
			if err := os.Rename(as[0], as[0]+".real"); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(as[0])+".real", as[0])
		}},
		{"anchors is a linked directory", func(b string) error {
			p := filepath.Join(b, "anchors")
			if err := os.Rename(p, filepath.Join(b, "elsewhere")); err != nil {
				return err
			}
			return os.Symlink("elsewhere", p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := filepath.Join(t.TempDir(), "bundle")
			copyDir(t, base, b)
			if err := tt.change(b); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, linegateBin, "verify-bundle", "-vkey", vkey, b).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatal("verify-bundle hung")
			}
			if err == nil || !strings.Contains(string(out), "not a regular file") {
				t.Errorf("verify-bundle = %v:\n%s\nwant a failure naming the file as not regular", err, out)
			}
		})
	}
}

// TestRejectionFloodBounded: a flood of requests with bad signatures and
// large headers, from many clients, writes a bounded number of small
// rejection records under the rejections class, and a summary of the rest
// (at shutdown at the latest); signed webhooks alongside are recorded.
func TestRejectionFloodBounded(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{extra: "rejections: {per_second: 2, burst: 10, summary_every: 1h}\n"})
	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	pad := strings.Repeat("p", 2900)
	const flood = 400
	var wg sync.WaitGroup
	for c := range 8 {
		client := fromAddr(fmt.Sprintf("127.0.1.%d", c+1))
		wg.Go(func() {
			for range flood / 8 {
				req, err := http.NewRequest("POST", g.webhook+"/webhook/demo", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("X-Line-Signature", "bm90IGEgc2lnbmF0dXJl")
				for i := range 20 {
					req.Header.Set(fmt.Sprintf("X-Pad-%02d", i), pad)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Errorf("flood request = %d", resp.StatusCode)
				}
			}
		})
	}
	for range 5 {
		sendText(t, g, "U1", "", "during the flood")
	}
	wg.Wait()
	g.stop()
	var oneByOne, webhooks int
	var summarised int64
	for _, r := range readLedger(t, dir) {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			webhooks++
		case ledger.KindRejection:
			if r.leaf.Retention != "rejections" {
				t.Errorf("a rejection record under class %q", r.leaf.Retention)
			}
			if r.meta.Suppressed > 0 {
				summarised += r.meta.Suppressed
				continue
			}
			oneByOne++
			if r.meta.HeaderCount < 20 || len(r.meta.Headers) > 12 || r.meta.BodySHA256 == "" {
				t.Errorf("rejection record: %d headers (%d kept), body hash %q", r.meta.HeaderCount, len(r.meta.Headers), r.meta.BodySHA256)
			}
		}
	}
	if webhooks != 5 {
		t.Errorf("%d signed webhooks recorded, want 5", webhooks)
	}
	if oneByOne > 40 {
		t.Errorf("%d rejections recorded one by one: the rate limit did not hold", oneByOne)
	}
	if int64(oneByOne)+summarised != flood {
		t.Errorf("%d recorded one by one + %d in summaries, want %d", oneByOne, summarised, flood)
	}
}
