package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/sim"
)

// signedBody returns a body of n of the benchmark's events and its
// signature with secret.
func signedBody(tb testing.TB, n int, secret string) ([]byte, string) {
	body := (&sim.Conversation{EventsPerBody: n}).Next()
	var cb struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &cb); err != nil || len(cb.Events) != n {
		tb.Fatalf("a body of %d events: %d events, %v", n, len(cb.Events), err)
	}
	return body, line.Sign([]byte(secret), body)
}

// TestParse checks that the peer's SDK takes the benchmark's bodies, and
// refuses one signed with another secret.
func TestParse(t *testing.T) {
	body, sig := signedBody(t, 3, "s")
	r := httptest.NewRequest("POST", "/callback", bytes.NewReader(body))
	r.Header.Set("X-Line-Signature", sig)
	cb, err := webhook.ParseRequest("s", r)
	if err != nil || len(cb.Events) != 3 {
		t.Fatalf("ParseRequest: %v events, %v", cb, err)
	}
	r = httptest.NewRequest("POST", "/callback", bytes.NewReader(body))
	r.Header.Set("X-Line-Signature", sig)
	if _, err := webhook.ParseRequest("other", r); err == nil {
		t.Fatal("a body signed with another secret was taken")
	}
}

// BenchmarkParse measures what the fan-out bench's destinations do with
// each request: LINE's Go SDK checks its signature and parses its events
// (webhook.ParseRequest), for requests of 1, 20 (the fan-out's batch) and
// 100 events. The events metric is the events a request carries: ns/op
// divided by it is the cost of an event.
func BenchmarkParse(b *testing.B) {
	for _, n := range []int{1, 20, 100} {
		body, sig := signedBody(b, n, "s")
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/callback", bytes.NewReader(body))
				r.Header.Set("X-Line-Signature", sig)
				if _, err := webhook.ParseRequest("s", r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}
