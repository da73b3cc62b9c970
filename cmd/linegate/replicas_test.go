package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/sim"
)

// replicaSet is several gateways on one PostgreSQL database, with the
// same checkpoint key and key encryption key.
type replicaSet struct {
	dsn    string
	shared string
	gws    []*gateway
}

func startReplicas(t *testing.T, n int, cfg gwConfig) *replicaSet {
	t.Helper()
	rs := &replicaSet{dsn: pgtest.Schema(t), shared: t.TempDir()}
	if code, out := runCLI(t, "keygen", "-out", rs.shared, "-origin", testOrigin); code != 0 {
		t.Fatalf("keygen: %s", out)
	}
	if code, out := runCLI(t, "keys", "new-kek", "-out", filepath.Join(rs.shared, "kek")); code != 0 {
		t.Fatalf("new-kek: %s", out)
	}
	cfg.database = rs.dsn
	cfg.logExtra += fmt.Sprintf("  key_file: %s\n", filepath.Join(rs.shared, "log.key"))
	cfg.extra += fmt.Sprintf("encryption:\n  kek_file: %s\n", filepath.Join(rs.shared, "kek"))
	for range n {
		rs.gws = append(rs.gws, startGateway(t, t.TempDir(), cfg))
	}
	return rs
}

// replicaLoad sends the simulator's conversation to the live replicas,
// spread over them, from several senders at once until it ends, and keeps
// the webhookEventIds answered 200 (not those a dead replica failed to
// answer: LINE would deliver them again).
type replicaLoad struct {
	live    atomic.Pointer[[]*gateway]
	mu      sync.Mutex
	acked   map[string]bool
	sent    atomic.Int64
	stop    chan struct{}
	senders sync.WaitGroup
}

func startLoad(t *testing.T, conv *sim.Conversation, senders int, gws []*gateway) *replicaLoad {
	l := &replicaLoad{acked: map[string]bool{}, stop: make(chan struct{})}
	l.route(gws)
	for s := range senders {
		l.senders.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.mu.Lock()
				body := conv.Next()
				l.mu.Unlock()
				gs := *l.live.Load()
				g := gs[(s+i)%len(gs)]
				code, err := sim.PostWebhook(context.Background(), httpClient, g.webhook+"/webhook/demo", []byte(testSecret), body)
				l.sent.Add(1)
				if err != nil || code != 200 {
					continue
				}
				var cb struct {
					Events []struct{ WebhookEventID string }
				}
				if err := json.Unmarshal(body, &cb); err != nil {
					t.Errorf("synthetic body: %v: %s", err, body)
					return
				}
				l.mu.Lock()
				for _, e := range cb.Events {
					l.acked[e.WebhookEventID] = true
				}
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

// route sends the load to gws from now on.
func (l *replicaLoad) route(gws []*gateway) { l.live.Store(&gws) }

// end stops the senders and returns the events acknowledged.
func (l *replicaLoad) end() map[string]bool {
	close(l.stop)
	l.senders.Wait()
	return l.acked
}

// status returns a replica's /admin/status.
func status(t *testing.T, g *gateway) map[string]any {
	req, err := http.NewRequest("GET", g.admin+"/admin/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/admin/status: %v", err)
	}
	return st
}

// treeSize returns the size of the checkpoint a replica serves.
func treeSize(t *testing.T, g *gateway) uint64 {
	_, cp := g.get(t, g.admin+"/log/checkpoint")
	c, err := ledger.ParseCheckpoint(string(cp))
	if err != nil {
		return 0
	}
	return c.Size
}

// TestReplicas runs three replicas on one database under load from the
// simulator's conversation, then kills (SIGKILL) the one that holds the
// sequencer lease and one other mid-run. No acknowledged webhook is
// missing, no event is answered twice (each reply token is used once, and
// each event has exactly one outcome), the survivor takes the lease over
// and the tree keeps growing within seconds, switches (kill switch,
// dry-run) and rule reloads made through one replica reach the others
// within a second, and verify passes.
func TestReplicas(t *testing.T) {
	if pgE2E {
		t.Skip("on PostgreSQL already: it ran in the first pass")
	}
	w := newReplyWorld(t)
	rs := startReplicas(t, 3, w.config(t, t.TempDir()))

	// The kill switch set on one replica holds on all within a second.
	admin(t, rs.gws[1], "/admin/kill-switch", `{"on": true, "reason": "test"}`)
	deadline := time.Now().Add(1500 * time.Millisecond)
	for _, g := range rs.gws {
		for status(t, g)["kill_switch"] != true {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s did not see the kill switch", g.admin)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	admin(t, rs.gws[2], "/admin/kill-switch", `{"on": false}`)
	// So does dry-run.
	admin(t, rs.gws[0], "/admin/dry-run", `{"channel": "demo", "on": true}`)
	deadline = time.Now().Add(1500 * time.Millisecond)
	for _, g := range rs.gws {
		for fmt.Sprint(status(t, g)["dry_run"]) != "map[demo:true]" {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s did not see dry-run: %v", g.admin, status(t, g)["dry_run"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	admin(t, rs.gws[1], "/admin/dry-run", `{"channel": "demo", "on": false}`)
	// A rules reload on one replica: the others reload within a second.
	admin(t, rs.gws[0], "/admin/rules/reload", "")
	deadline = time.Now().Add(1500 * time.Millisecond)
	for _, g := range rs.gws[1:] {
		for !strings.Contains(g.Logs(), `"trigger":"another replica"`) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s did not reload its rules", g.admin)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)

	// Load: the simulator's synthetic conversation, with reply tokens the
	// fake API honours, spread over the live replicas, for a few seconds.
	load := startLoad(t, &sim.Conversation{Users: 40, ReplyToken: func() string { return w.api.IssueReplyToken("") }}, 6, rs.gws)
	time.Sleep(3 * time.Second)

	// Kill the sequencer and one other.
	var holder, other, survivor *gateway
	for _, g := range rs.gws {
		if status(t, g)["sequencer"] == true && holder == nil {
			holder = g
		}
	}
	if holder == nil {
		t.Fatal("no replica holds the sequencer lease")
	}
	for _, g := range rs.gws {
		if g != holder {
			if other == nil {
				other = g
			} else {
				survivor = g
			}
		}
	}
	load.route([]*gateway{survivor}) // the load balancer's health checks take them out
	holder.kill()
	other.kill()
	sizeAtKill := treeSize(t, survivor)
	killedAt := time.Now()
	for treeSize(t, survivor) <= sizeAtKill {
		if time.Since(killedAt) > 10*time.Second {
			t.Fatalf("the tree did not grow within 10s of the kills (size %d)", sizeAtKill)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("tree grew past %d %v after the kills", sizeAtKill, time.Since(killedAt).Round(time.Millisecond))
	if status(t, survivor)["sequencer"] != true {
		t.Error("the survivor does not hold the sequencer lease")
	}
	time.Sleep(2 * time.Second)
	acked := load.end()
	waitIdle(t, survivor) // after the dead replicas' claims expire
	survivor.stop()

	// Read everything back from the database.
	recs := readSharedLedger(t, rs.dsn, filepath.Join(rs.shared, "kek"))
	stored := map[string]bool{}
	outcomes := map[string]int{}
	for _, r := range recs {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			for _, id := range eventIDs(t, r.body) {
				stored[id] = true
			}
		case ledger.KindEvent:
			var o struct{ Key string }
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatalf("event record: %v: %s", err, r.body)
			}
			outcomes[o.Key]++
		}
	}
	if len(acked) < 200 {
		t.Fatalf("only %d events acknowledged of %d requests", len(acked), load.sent.Load())
	}
	var missing, twice, none int
	for id := range acked {
		if !stored[id] {
			missing++
		}
		switch outcomes["id:"+id] {
		case 0:
			none++
		case 1:
		default:
			twice++
		}
	}
	if missing > 0 || twice > 0 || none > 0 {
		t.Errorf("of %d acknowledged events: %d missing from the ledger, %d with several outcomes, %d with none", len(acked), missing, twice, none)
	}
	used := map[string]int{}
	for _, c := range w.api.Calls() {
		var req struct{ ReplyToken string }
		if c.Path == "/v2/bot/message/reply" && c.Status == 200 && json.Unmarshal(c.Body, &req) == nil {
			used[req.ReplyToken]++
		}
	}
	for tok, k := range used {
		if k > 1 {
			t.Errorf("reply token %s answered %d times", tok, k)
		}
	}
	if len(used) == 0 {
		t.Error("no replies at all")
	}
	if p := w.apiCalls("/v2/bot/message/push"); p != 0 {
		t.Errorf("%d pushes: replies fell back to pushes", p)
	}
	t.Logf("%d requests, %d events acknowledged, %d replies, %d records", load.sent.Load(), len(acked), len(used), len(recs))
	if code, out := runCLI(t, "verify", "-config", survivor.cfgPath); code != 0 || !strings.Contains("\n"+out, "\nOK ") {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}
