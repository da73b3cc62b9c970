package main

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sim"
)

// TestReplicasFanout runs three replicas on one PostgreSQL database with a
// destination on the channel, under load spread over all of them, and
// kills (SIGKILL) the replica that delivers mid-run: another takes the
// delivery over, and every event that has an outcome in the ledger
// reaches the destination, the first time of each in the ledger's order
// of its conversation (after the kill, some again: delivery is at least
// once).
func TestReplicasFanout(t *testing.T) {
	if pgE2E {
		t.Skip("on PostgreSQL already: it ran in the first pass")
	}
	const secret = "replicas-crm-secret"
	var crm sink
	srv := httptest.NewServer(crmHandler(secret, &crm))
	defer srv.Close()
	rs := startReplicas(t, 3, gwConfig{
		extra: "fanout:\n  base_delay: 50ms\n  max_delay: 200ms\n",
		chanExtra: fmt.Sprintf(`    destinations:
      - {name: crm, url: %s/hook, allow_http: true, secret: %s}
`, srv.URL, secret),
	})

	load := startLoad(t, &sim.Conversation{Users: 30}, 4, rs.gws)

	// The replica that delivers: the one whose attempts count.
	delivered := func(g *gateway) float64 {
		_, m := g.get(t, g.admin+"/metrics")
		return metricValue(string(m), `linegate_fanout_attempts_total{destination="crm",result="delivered"}`)
	}
	var deliverer *gateway
	for deadline := time.Now().Add(10 * time.Second); deliverer == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no replica delivered to the destination within 10s")
		}
		for _, g := range rs.gws {
			if delivered(g) > 0 {
				deliverer = g
			}
		}
	}
	time.Sleep(2 * time.Second)
	var others []*gateway
	for _, g := range rs.gws {
		if g != deliverer {
			others = append(others, g)
		}
	}
	load.route(others)
	deliverer.kill()
	killedAt := time.Now()
	for deadline := killedAt.Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no other replica delivered within 15s of the kill")
		}
		if delivered(others[0])+delivered(others[1]) > 0 {
			break
		}
	}
	t.Logf("delivery taken over %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	acked := load.end()
	for _, g := range others {
		waitIdle(t, g)
	}

	// Every acknowledged event reaches the destination.
	got := func() map[string]bool {
		crm.mu.Lock()
		defer crm.mu.Unlock()
		m := map[string]bool{}
		for _, e := range crm.events {
			m[e.ID] = true
		}
		return m
	}
	want := len(acked)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		g := got()
		missing := 0
		for id := range acked {
			if !g[id] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events not delivered 30s after the load", missing, want)
		}
	}
	for _, g := range others {
		g.stop()
	}

	// The ledger's order of each conversation, from the outcome records,
	// against the destination's first receipt of each event.
	order := map[string][]string{} // conversation -> webhookEventIds
	convOf := map[string]string{}
	for _, r := range readSharedLedger(t, rs.dsn, filepath.Join(rs.shared, "kek")) {
		if r.leaf.Kind != ledger.KindEvent {
			continue
		}
		var o struct{ Key, Outcome, Conversation string }
		if err := json.Unmarshal(r.body, &o); err != nil {
			t.Fatalf("event record: %v: %s", err, r.body)
		}
		id, ok := strings.CutPrefix(o.Key, "id:")
		if !ok || o.Outcome == "duplicate" {
			continue
		}
		order[o.Conversation] = append(order[o.Conversation], id)
		convOf[id] = o.Conversation
	}
	crm.mu.Lock()
	defer crm.mu.Unlock()
	if len(crm.errs) > 0 {
		t.Errorf("the destination refused: %v", crm.errs[:min(3, len(crm.errs))])
	}
	first := map[string][]string{}
	seen := map[string]bool{}
	again := 0
	for _, e := range crm.events {
		if seen[e.ID] {
			again++
			continue
		}
		seen[e.ID] = true
		c, ok := convOf[e.ID]
		if !ok {
			t.Errorf("event %s delivered without an outcome in the ledger", e.ID)
			continue
		}
		first[c] = append(first[c], e.ID)
	}
	events := 0
	for c, ids := range order {
		events += len(ids)
		if !slices.Equal(first[c], ids) {
			t.Errorf("conversation %s: delivered first %d events in an order other than the ledger's %d (%v... against %v...)",
				c, len(first[c]), len(ids), first[c][:min(3, len(first[c]))], ids[:min(3, len(ids))])
		}
	}
	t.Logf("%d events of %d conversations, %d acknowledged, delivered once each and %d again after the kill", events, len(order), want, again)
	if want < 200 {
		t.Fatalf("only %d events acknowledged", want)
	}
}
