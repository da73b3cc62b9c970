package sim_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/sim"
)

// TestOpenLoopCountsStalls: a server that takes 20 ms per request, one
// connection, and a schedule of one request every 5 ms. A closed-loop
// measurement would report 20 ms; the open-loop one must count the time
// each request waited for its turn, so its tail grows with the backlog.
func TestOpenLoopCountsStalls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
	}))
	defer srv.Close()
	src, err := sim.NewFixtureSource(corpus.Webhooks(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.Send(context.Background(), srv.Client(), srv.URL, []byte("s"), src, sim.Load{Rate: 200, Concurrency: 1, Count: 40})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() != 40 {
		t.Fatalf("statuses %v", res.Statuses)
	}
	// The last request was due at 195 ms and answered after ~800 ms.
	if p99 := res.Percentile(0.99); p99 < 400*time.Millisecond {
		t.Errorf("open-loop p99 = %v; the backlog was not counted", p99)
	}
	if p0 := res.Percentile(0); p0 < 20*time.Millisecond {
		t.Errorf("fastest request %v, faster than the server", p0)
	}
}

func TestFixtureSource(t *testing.T) {
	dir := corpus.Webhooks(t)
	src, err := sim.NewFixtureSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 2 * src.Len() {
		seen[string(src.Next())]++
	}
	if len(seen) != src.Len() || src.Len() < 30 {
		t.Errorf("%d distinct bodies of %d", len(seen), src.Len())
	}
	for body, n := range seen {
		if n != 2 {
			t.Errorf("sent %d times, want 2: %.80s", n, body)
		}
	}
	if _, err := sim.NewFixtureSource(t.TempDir()); err == nil {
		t.Error("NewFixtureSource accepted a directory without bodies")
	}
	for _, empty := range []*sim.FixtureSource{nil, {}} {
		if b := empty.Next(); b != nil || empty.Len() != 0 {
			t.Errorf("Next on a source without bodies = %q", b)
		}
	}
}

func TestSendSignsLikeLINE(t *testing.T) {
	var bad atomic.Int32
	v := []line.Verifier{line.NewHMACVerifier("secret", []byte("s3cret"))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(r.Body); err != nil {
			t.Errorf("reading the body: %v", err)
		}
		if _, err := line.Check(v, buf.Bytes(), r.Header.Get("X-Line-Signature")); err != nil ||
			r.Header.Get("User-Agent") != "LineBotWebhook/2.0" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			bad.Add(1)
		}
	}))
	defer srv.Close()
	res, err := sim.Send(context.Background(), srv.Client(), srv.URL, []byte("s3cret"), &sim.Conversation{}, sim.Load{Count: 100, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if bad.Load() != 0 || res.OK() != 100 {
		t.Errorf("%d badly signed, %v", bad.Load(), res.Statuses)
	}
}

func TestConversation(t *testing.T) {
	c := &sim.Conversation{Redeliveries: 0.3, Duplicates: 0.2}
	ids := map[string]int{}
	redelivered, dups := 0, 0
	seen := map[string]bool{}
	for range 400 {
		b := c.Next()
		if seen[string(b)] {
			dups++
		}
		seen[string(b)] = true
		if bytes.Contains(b, []byte(`"isRedelivery":true`)) {
			redelivered++
		}
		for _, part := range strings.Split(string(b), `"webhookEventId":"`)[1:] {
			ids[part[:26]]++
		}
		if bytes.ContainsFunc(b, func(r rune) bool { return r > 0x7f }) {
			t.Fatalf("body with raw non-ASCII: LINE escapes it: %s", b)
		}
	}
	if redelivered == 0 || dups == 0 {
		t.Errorf("%d redeliveries, %d duplicates", redelivered, dups)
	}
	repeated := 0
	for _, n := range ids {
		if n > 1 {
			repeated++
		}
	}
	if repeated == 0 || len(ids) < 200 {
		t.Errorf("%d distinct event ids, %d repeated", len(ids), repeated)
	}
}

func TestFormatMessage(t *testing.T) {
	for _, tt := range []struct{ msg, want string }{
		{`{"type":"text","text":"hi"}`, "hi"},
		{`{"type":"sticker","packageId":"446","stickerId":"1988"}`, "[sticker 446/1988]"},
		{`{"type":"flex","altText":"Order A1","contents":{"type":"bubble","body":{"type":"box","contents":[{"type":"text","text":"Shipped"}]},"footer":{"type":"box","contents":[{"type":"button","action":{"type":"postback","label":"Receive","data":"x"}}]}}}`, "[flex] Order A1: Shipped | Receive"},
	} {
		if got := sim.FormatMessage([]byte(tt.msg)); got != tt.want {
			t.Errorf("FormatMessage(%s) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}
