package webhook_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
	"github.com/linegate/linegate/internal/webhook"
	"golang.org/x/mod/sumdb/note"
)

type fixture struct {
	h     *webhook.Handler
	l     *ledger.Ledger
	store *sqlitestore.Store
}

func newFixture(t testing.TB, maxBody int64) *fixture {
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(ctx, store, ledger.Options{Origin: "example.com/test", Signer: signer, Verifier: verifier, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	t.Cleanup(func() {
		if err := l.Close(ctx); err != nil {
			t.Error(err)
		}
		store.Close()
	})
	h := webhook.New(webhook.Options{
		Ledger:  l,
		MaxBody: maxBody,
		Channels: []webhook.Channel{{ID: "c1", Verifiers: []line.Verifier{
			line.NewHMACVerifier("secret", []byte("s1")), line.NewHMACVerifier("next_secret", []byte("s2"))}}},
	})
	return &fixture{h, l, store}
}

func (f *fixture) records(t testing.TB) []ledger.Record {
	n, err := f.store.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rs []ledger.Record
	for r, err := range f.store.Records(context.Background(), 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// waitRecords waits until the ledger holds n records (rejections are
// recorded after the answer) and returns them.
func (f *fixture) waitRecords(t testing.TB, n int) []ledger.Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs := f.records(t)
		if len(rs) >= n || time.Now().After(deadline) {
			return rs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHandler(t *testing.T) {
	body := []byte(`{"destination":"U0123","events":[{"type":"message","message":{"type":"text","text":"\uD83E\uDD28"}}]}`)
	big := bytes.Repeat([]byte("x"), 2048)
	tests := []struct {
		name    string
		method  string
		path    string
		body    []byte
		sig     string
		status  int
		kind    ledger.Kind // record expected, 0 for none
		verifer string
	}{
		{"ok", "POST", "/webhook/c1", body, line.Sign([]byte("s1"), body), 200, ledger.KindWebhook, "secret"},
		{"next secret", "POST", "/webhook/c1", body, line.Sign([]byte("s2"), body), 200, ledger.KindWebhook, "next_secret"},
		{"verify button", "POST", "/webhook/c1", []byte(`{"destination":"U1","events":[]}`), line.Sign([]byte("s1"), []byte(`{"destination":"U1","events":[]}`)), 200, ledger.KindWebhook, "secret"},
		{"bad signature", "POST", "/webhook/c1", body, line.Sign([]byte("nope"), body), 401, ledger.KindRejection, ""},
		{"missing signature", "POST", "/webhook/c1", body, "", 401, ledger.KindRejection, ""},
		{"unknown channel", "POST", "/webhook/c9", body, line.Sign([]byte("s1"), body), 404, 0, ""},
		{"too large", "POST", "/webhook/c1", big, line.Sign([]byte("s1"), big), 413, 0, ""},
		{"wrong method", "GET", "/webhook/c1", nil, "", 405, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 1024)
			req := httptest.NewRequest(tt.method, tt.path, bytes.NewReader(tt.body))
			if tt.sig != "" {
				req.Header.Set("x-line-signature", tt.sig)
			}
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			rs := f.waitRecords(t, min(int(tt.kind), 1))
			if tt.kind == 0 {
				if len(rs) != 0 {
					t.Fatalf("%d records, want none", len(rs))
				}
				return
			}
			if len(rs) != 1 {
				t.Fatalf("%d records, want 1", len(rs))
			}
			var leaf ledger.Leaf
			if err := leaf.UnmarshalBinary(rs[0].Leaf); err != nil {
				t.Fatal(err)
			}
			if leaf.Kind != tt.kind || leaf.Channel != "c1" {
				t.Errorf("leaf = %+v", leaf)
			}
			meta, got, err := record.DecodePayload(rs[0].Payload)
			if err != nil {
				t.Fatal(err)
			}
			if tt.kind == ledger.KindWebhook {
				if !bytes.Equal(got, tt.body) {
					t.Errorf("stored body %q, want %q", got, tt.body)
				}
				if meta.Verifier != tt.verifer || meta.Headers["X-Line-Signature"][0] != tt.sig {
					t.Errorf("meta = %+v", meta)
				}
			} else {
				if len(got) != 0 || meta.BodySize != int64(len(tt.body)) || len(meta.BodySHA256) != 64 || meta.Reason == "" {
					t.Errorf("rejection record: body %q, meta %+v", got, meta)
				}
			}
		})
	}
}

// TestHandlerNoPersonalDataInRejection checks that a rejected body is not
// stored: only its hash is.
func TestHandlerNoPersonalDataInRejection(t *testing.T) {
	f := newFixture(t, 1<<20)
	body := []byte(`{"events":[{"message":{"text":"secret-phone-0312345678"}}]}`)
	req := httptest.NewRequest("POST", "/webhook/c1", bytes.NewReader(body))
	req.Header.Set("x-line-signature", line.Sign([]byte("wrong"), body))
	f.h.ServeHTTP(httptest.NewRecorder(), req)
	for _, r := range f.waitRecords(t, 1) {
		if bytes.Contains(r.Payload, []byte("0312345678")) {
			t.Fatal("rejected body text was stored")
		}
	}
}

// memAppender keeps entries in memory. The fuzz target uses it instead of
// the SQLite ledger because Go's fuzzer tracks coverage over the whole
// binary, and the SQLite driver's size slows it to a crawl; TestHandler
// covers the same path over the real ledger.
type memAppender struct {
	mu      sync.Mutex
	entries []ledger.Entry
}

func (m *memAppender) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = append(m.entries, e)
	return uint64(len(m.entries) - 1), nil
}

// wait returns the entries once there are n (rejections are appended
// after the answer), or after a second.
func (m *memAppender) wait(n int) []ledger.Entry {
	deadline := time.Now().Add(time.Second)
	for {
		m.mu.Lock()
		es := slices.Clone(m.entries)
		m.mu.Unlock()
		if len(es) >= n || time.Now().After(deadline) {
			return es
		}
		time.Sleep(time.Millisecond)
	}
}

// FuzzRequest sends arbitrary requests through the whole ingress path: no
// input may crash it, every answer is one of the documented ones, a 200
// means the exact body was appended, and a 401 means a rejection was.
func FuzzRequest(f *testing.F) {
	f.Add("c1", []byte(`{"destination":"U1","events":[]}`), true, "")
	f.Add("c1", []byte(`{"events":[{"type":"follow"}]}`), false, "AAAA")
	f.Add("c%2F1", []byte("x"), true, "")
	f.Add("c9", []byte{0xff, 0}, true, "")
	f.Fuzz(func(t *testing.T, channel string, body []byte, sign bool, header string) {
		app := &memAppender{}
		h := webhook.New(webhook.Options{Ledger: app, MaxBody: 4096, Channels: []webhook.Channel{
			{ID: "c1", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("s1"))}}}})
		if sign {
			header = line.Sign([]byte("s1"), body)
		}
		req, err := http.NewRequest("POST", "http://gw/webhook/"+channel, bytes.NewReader(body))
		if err != nil {
			return // not a request an HTTP client could send
		}
		req.Header.Set("x-line-signature", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			if len(app.entries) != 1 || app.entries[0].Kind != ledger.KindWebhook {
				t.Fatalf("200 with entries %v", app.entries)
			}
			if _, got, err := record.DecodePayload(app.entries[0].Payload); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("200 but the body appended is %q, %v", got, err)
			}
		case 401:
			if es := app.wait(1); len(es) != 1 || es[0].Kind != ledger.KindRejection {
				t.Fatalf("401 with entries %v", es)
			}
		case 404, 405, 413, 400, 301, 307, 308:
			if len(app.entries) != 0 {
				t.Fatalf("%d with entries appended", rec.Code)
			}
		default:
			t.Fatalf("status %d for channel %q", rec.Code, channel)
		}
		if strings.Contains(rec.Body.String(), "s1") {
			t.Fatal("secret in response")
		}
	})
}

// countingAppender counts entries by kind and their payload bytes.
type countingAppender struct {
	mu      sync.Mutex
	entries []ledger.Entry
}

func (c *countingAppender) Append(_ context.Context, e ledger.Entry) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
	return uint64(len(c.entries) - 1), nil
}

// TestRejectionFloodIsBounded: requests with bad signatures and large
// headers are answered 401 at once and recorded within bounds: at most the
// burst and the rate one by one, each record small whatever the headers,
// under the short retention class, and the rest counted in a summary
// record; signed webhooks sent alongside are recorded in full.
func TestRejectionFloodIsBounded(t *testing.T) {
	app := &countingAppender{}
	h := webhook.New(webhook.Options{
		Ledger:     app,
		Channels:   []webhook.Channel{{ID: "c1", Retention: "th-pdpa", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("s1"))}}},
		Rejections: webhook.RejectionPolicy{PerSecond: 1, Burst: 10, SummaryEvery: time.Hour},
	})
	body := []byte(`{"destination":"U1","events":[]}`)
	huge := strings.Repeat("h", 60<<10)
	const flood = 500
	for i := range flood {
		req := httptest.NewRequest("POST", "/webhook/c1", bytes.NewReader(body))
		req.RemoteAddr = fmt.Sprintf("192.0.2.%d:1234", i%250) // many clients: none is slowed down
		req.Header.Set("x-line-signature", line.Sign([]byte("wrong"), body))
		for j := range 20 {
			req.Header.Set(fmt.Sprintf("X-Pad-%02d", j), huge)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Fatalf("flood request %d = %d", i, rec.Code)
		}
		if i%100 == 0 {
			req := httptest.NewRequest("POST", "/webhook/c1", bytes.NewReader(body))
			req.Header.Set("x-line-signature", line.Sign([]byte("s1"), body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("signed webhook during the flood = %d", rec.Code)
			}
		}
	}
	if err := h.FlushRejections(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		app.mu.Lock()
		n := len(app.entries)
		app.mu.Unlock()
		if n >= 5+10+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	var webhooks, oneByOne int
	var summarised int64
	for _, e := range app.entries {
		switch e.Kind {
		case ledger.KindWebhook:
			webhooks++
		case ledger.KindRejection:
			if e.Retention != "rejections" {
				t.Errorf("rejection record under class %q", e.Retention)
			}
			if len(e.Payload) > 8<<10 {
				t.Errorf("a rejection record of %d bytes", len(e.Payload))
			}
			meta, _, err := record.DecodePayload(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if meta.Suppressed > 0 {
				summarised += meta.Suppressed
				continue
			}
			oneByOne++
			if meta.HeaderCount < 20 || meta.HeaderBytes < 20*60<<10 || len(meta.Headers) > 12 {
				t.Errorf("rejection meta: %d headers of %d bytes, %d kept", meta.HeaderCount, meta.HeaderBytes, len(meta.Headers))
			}
		}
	}
	if webhooks != 5 {
		t.Errorf("%d signed webhooks recorded, want 5", webhooks)
	}
	if oneByOne < 10 || oneByOne > 12 {
		t.Errorf("%d rejections recorded one by one, want the burst of 10 (and the rate's few)", oneByOne)
	}
	if int64(oneByOne)+summarised != flood {
		t.Errorf("%d recorded + %d summarised, want %d", oneByOne, summarised, flood)
	}
}

// TestFailingClientIsSlowedDown: a client that keeps failing
// authentication waits for its 401s past a burst, so that a flood slows
// its sender rather than the gateway; its signed webhooks, and other
// clients, are answered at once.
func TestFailingClientIsSlowedDown(t *testing.T) {
	h := webhook.New(webhook.Options{Ledger: &memAppender{},
		Channels: []webhook.Channel{{ID: "c1", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("s1"))}}}})
	body := []byte(`{"destination":"U1","events":[]}`)
	send := func(addr, sig string) (int, time.Duration) {
		req := httptest.NewRequest("POST", "/webhook/c1", bytes.NewReader(body))
		req.RemoteAddr = addr
		req.Header.Set("x-line-signature", sig)
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		return rec.Code, time.Since(start)
	}
	bad := line.Sign([]byte("wrong"), body)
	for i := range 50 {
		if code, took := send("198.51.100.7:1", bad); code != 401 || took > 200*time.Millisecond {
			t.Fatalf("failure %d within the burst = %d in %v", i, code, took)
		}
	}
	if code, took := send("198.51.100.7:1", bad); code != 401 || took < 400*time.Millisecond {
		t.Errorf("failure past the burst = %d in %v, want it held", code, took)
	}
	if code, took := send("198.51.100.7:1", line.Sign([]byte("s1"), body)); code != 200 || took > 200*time.Millisecond {
		t.Errorf("signed webhook from the failing client = %d in %v", code, took)
	}
	if code, took := send("198.51.100.8:1", bad); code != 401 || took > 200*time.Millisecond {
		t.Errorf("another client's failure = %d in %v", code, took)
	}
}
