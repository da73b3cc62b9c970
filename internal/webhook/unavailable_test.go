package webhook_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/webhook"
)

// outageAppender fails every append while down, as a ledger that cannot
// write.
type outageAppender struct {
	down    atomic.Bool
	mu      sync.Mutex
	entries []ledger.Entry
}

func (o *outageAppender) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	if o.down.Load() {
		return 0, ledger.ErrPushback
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.entries = append(o.entries, e)
	return uint64(len(o.entries) - 1), nil
}

// TestUnavailableSummarised: signed webhooks answered 503 while the ledger
// cannot write are counted, and once it writes again a summary record
// says how many (reason "summary: unavailable"): summaries that failed
// meanwhile keep their counts for the next one.
func TestUnavailableSummarised(t *testing.T) {
	app := &outageAppender{}
	app.down.Store(true)
	h := webhook.New(webhook.Options{
		Ledger:     app,
		Channels:   []webhook.Channel{{ID: "c1", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("s1"))}}},
		Rejections: webhook.RejectionPolicy{SummaryEvery: 20 * time.Millisecond},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.RunRejectionSummaries(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	body := []byte(`{"destination":"U1","events":[]}`)
	for range 3 {
		req := httptest.NewRequest("POST", "/webhook/c1", bytes.NewReader(body))
		req.Header.Set("x-line-signature", line.Sign([]byte("s1"), body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 503 {
			t.Fatalf("signed webhook with the ledger down = %d, want 503", rec.Code)
		}
		time.Sleep(30 * time.Millisecond) // summaries fail in between
	}
	app.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	var total int64
	for time.Now().Before(deadline) && total < 3 {
		time.Sleep(20 * time.Millisecond)
		total = 0
		app.mu.Lock()
		for _, e := range app.entries {
			meta, _, err := record.DecodePayload(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind != ledger.KindRejection || meta.Reason != "summary: unavailable" || e.Channel != "c1" {
				t.Errorf("unexpected record: %s %q", e.Kind, meta.Reason)
				continue
			}
			total += meta.Suppressed
		}
		app.mu.Unlock()
	}
	if total != 3 {
		t.Errorf("summaries count %d webhooks answered 503, want 3", total)
	}
}
