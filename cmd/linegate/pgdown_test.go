package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
)

// privatePostgres starts a PostgreSQL server of the test's own (it is
// stopped and started by the test) and returns its DSN and a control
// function: "start" or "stop".
func privatePostgres(t *testing.T) (string, func(string)) {
	t.Helper()
	pgtest.DSN(t) // skips without PostgreSQL, as the other tests do
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("/tmp", "linegate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "postgres.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var dsn string
	ctl := func(what string) {
		cmd := exec.Command(script, what)
		cmd.Env = append(os.Environ(), fmt.Sprintf("PGPORT=%d", port), "PGDATA_DIR="+filepath.Join(dir, "data"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("postgres.sh %s: %v", what, err)
		}
		if what == "start" {
			dsn = strings.TrimSpace(string(out))
		}
	}
	ctl("start")
	t.Cleanup(func() {
		cmd := exec.Command(script, "stop")
		cmd.Env = append(os.Environ(), fmt.Sprintf("PGPORT=%d", port), "PGDATA_DIR="+filepath.Join(dir, "data"))
		cmd.Run()
		os.RemoveAll(dir)
	})
	return dsn, ctl
}

// TestPostgresDown stops PostgreSQL under load: the replicas answer 503
// (never 200) and report not ready while it is down, and recover by
// themselves when it is back; every webhook answered 200 is in the
// ledger, and verify passes.
func TestPostgresDown(t *testing.T) {
	if pgE2E {
		t.Skip("on PostgreSQL already: it ran in the first pass")
	}
	dsn, ctl := privatePostgres(t)
	shared := t.TempDir()
	if code, out := runCLI(t, "keygen", "-out", shared, "-origin", testOrigin); code != 0 {
		t.Fatalf("keygen = %d: %s", code, out)
	}
	if code, out := runCLI(t, "keys", "new-kek", "-out", filepath.Join(shared, "kek")); code != 0 {
		t.Fatalf("keys new-kek = %d: %s", code, out)
	}
	cfg := gwConfig{database: dsn,
		logExtra: fmt.Sprintf("  key_file: %s\n", filepath.Join(shared, "log.key")),
		extra:    fmt.Sprintf("encryption:\n  kek_file: %s\n", filepath.Join(shared, "kek"))}
	gws := []*gateway{startGateway(t, t.TempDir(), cfg), startGateway(t, t.TempDir(), cfg)}

	type result struct {
		id   string
		code int
		at   time.Time
	}
	var mu sync.Mutex
	var results []result
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("01DOWN%d%019d", s, i)
				body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":%q,"deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U%d"},"replyToken":"r","message":{"id":"%d","type":"text","text":"hi","quoteToken":"q"}}]}`,
					time.Now().UnixMilli(), id, i%9, i)
				code, err := postWebhook(gws[i%2].webhook, testSecret, body)
				if err != nil {
					code = 0 // no answer: not acknowledged, as LINE would see it
				}
				mu.Lock()
				results = append(results, result{id, code, time.Now()})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	ready := func(g *gateway) int { code, _ := g.get(t, g.webhook+"/readyz"); return code }
	time.Sleep(time.Second)
	ctl("stop")
	downAt := time.Now()
	time.Sleep(2 * time.Second)
	for _, g := range gws {
		if code := ready(g); code != 503 {
			t.Errorf("/readyz with the database down = %d, want 503", code)
		}
	}
	ctl("start")
	upAt := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for _, g := range gws {
		for ready(g) != 200 {
			if time.Now().After(deadline) {
				t.Fatal("a replica did not become ready again")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	var okBefore, okAfter, unavailable, other int
	acked := map[string]bool{}
	for _, r := range results {
		switch {
		case r.code == 200:
			acked[r.id] = true
			if r.at.Before(downAt) {
				okBefore++
			} else if r.at.After(upAt) {
				okAfter++
			}
		case r.code == 503:
			unavailable++
		default:
			other++
		}
	}
	t.Logf("200 before: %d, after: %d; 503: %d; other (connection errors): %d", okBefore, okAfter, unavailable, other)
	if okBefore == 0 || okAfter == 0 || unavailable == 0 {
		t.Errorf("want 200s before the stop and after the restart, and 503s between")
	}
	for _, g := range gws {
		waitIdle(t, g)
	}
	for _, g := range gws {
		g.stop()
	}
	stored := map[string]bool{}
	for _, r := range readSharedLedger(t, dsn, filepath.Join(shared, "kek")) {
		if r.leaf.Kind == ledger.KindWebhook {
			for _, id := range eventIDs(t, r.body) {
				stored[id] = true
			}
		}
	}
	for id := range acked {
		if !stored[id] {
			t.Errorf("event %s was acknowledged but is not in the ledger", id)
		}
	}
	if code, out := runCLI(t, "verify", "-config", gws[0].cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}
