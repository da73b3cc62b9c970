package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// TestPipelineSIGKILL kills the gateway while it ingests and processes
// under load, restarts it, and counts the effects: every acknowledged event
// has exactly one "processed" outcome, and no event has two.
func TestPipelineSIGKILL(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	var mu sync.Mutex
	acked := map[string]bool{} // webhookEventId
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now().UnixMilli()
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Two events per request, from two users.
				id1, id2 := fmt.Sprintf("01KILL%04d%06dA", w, i), fmt.Sprintf("01KILL%04d%06dB", w, i)
				body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[`+
					`{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"%s","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U%d"},"replyToken":"r","message":{"id":"%d%d1","type":"text","text":"hi","quoteToken":"q"}},`+
					`{"type":"follow","mode":"active","timestamp":%d,"webhookEventId":"%s","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"V%d"},"replyToken":"r","follow":{"isUnblocked":false}}]}`,
					start, id1, w, w, i, start, id2, w)
				code, err := postWebhook(g.webhook, testSecret, body)
				if err != nil {
					return
				}
				if code == 200 {
					mu.Lock()
					acked[id1], acked[id2] = true, true
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
		if n >= 3000 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.kill()
	close(stop)
	wg.Wait()
	before := 0
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindEvent {
			before++
		}
	}
	t.Logf("at the kill: %d events acknowledged, %d outcomes recorded", len(acked), before)

	g = startGateway(t, dir, gwConfig{})
	waitIdle(t, g)
	g.stop()
	processed := map[string]int{}
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindEvent {
			continue
		}
		var o struct{ Key, Outcome string }
		if err := json.Unmarshal(r.body, &o); err != nil {
			t.Fatal(err)
		}
		if o.Outcome == "processed" {
			processed[o.Key]++
		}
	}
	missing, twice := 0, 0
	for id := range acked {
		if processed["id:"+id] == 0 {
			missing++
		}
	}
	for _, n := range processed {
		if n > 1 {
			twice++
		}
	}
	if missing > 0 || twice > 0 {
		t.Errorf("%d acknowledged events never processed, %d processed twice (of %d acknowledged)", missing, twice, len(acked))
	}
	t.Logf("%d events acknowledged before SIGKILL; %d processed once", len(acked), len(processed))
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestPipelineDestination: a channel that names its bot (bot_user_id)
// records a webhook for another bot as foreign, with the flag, and never
// answers it; its own are processed.
func TestPipelineDestination(t *testing.T) {
	dir := t.TempDir()
	const ours, theirs = "U0123456789abcdef0123456789abcdef", "Ufedcba9876543210fedcba9876543210"
	g := startGateway(t, dir, gwConfig{chanExtra: "    bot_user_id: " + ours + "\n"})
	now := time.Now().UnixMilli()
	for _, dest := range []string{ours, theirs} {
		body := fmt.Appendf(nil, `{"destination":%q,"events":[{"type":"follow","mode":"active","timestamp":%d,"webhookEventId":"01DEST%s","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"r","follow":{"isUnblocked":false}}]}`,
			dest, now, dest[1:9])
		if code := g.post(t, testSecret, body); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	waitIdle(t, g)
	g.stop()
	got := map[string]string{}
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindEvent {
			continue
		}
		var o struct {
			Key, Outcome string
			Flags        []string
		}
		if err := json.Unmarshal(r.body, &o); err != nil {
			t.Fatal(err)
		}
		got[o.Key] = fmt.Sprint(o.Outcome, o.Flags)
	}
	want := map[string]string{"id:01DEST" + ours[1:9]: "processed[]", "id:01DEST" + theirs[1:9]: "foreign[foreign:destination]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
}
