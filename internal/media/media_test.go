package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"iter"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/media"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/sim"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

// store is what the test needs of a backend.
type store interface {
	ledger.Store
	keys.Store
	retention.Store
	Setting(ctx context.Context, key string) (string, error)
}

func backends(t *testing.T) map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"sqlite": func(t *testing.T) store {
			s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t *testing.T) store {
			s, err := pgstore.Open(context.Background(), pgtest.Schema(t), pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

const (
	user  = "U1f0e2d3c4b5a69788796a5b4c3d2e1f0"
	other = "U2a3b4c5d6e7f80918273645546372819"
	dest  = "U0123456789abcdef0123456789abcdef"
)

func webhookBody(events ...string) []byte {
	return []byte(`{"destination":"` + dest + `","events":[` + strings.Join(events, ",") + `]}`)
}

func messageEvent(n int, from, message string) string {
	return fmt.Sprintf(`{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01MEDIA%019d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"%s"},"replyToken":"r","message":%s}`,
		time.Now().UnixMilli(), n, from, message)
}

// TestWorker: the content of an image, a file and a video is fetched
// (the video after its transcoding), sealed under its sender's key in the
// store (the stored bytes are not the content), and recorded with its
// hash; an unknown id is recorded as not found, an external URL without
// fetching it; the cursor moves with the records, so a second step does
// nothing. On SQLite and PostgreSQL.
func TestWorker(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) { testWorker(t, open(t)) })
	}
}

func testWorker(t *testing.T, s store) {
	ctx := context.Background()
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	ring := keys.NewRing(s, kek)
	w := ledger.NewWriter(s, ring, nil)

	api := sim.NewAPI(sim.Options{})
	srv := httptest.NewServer(api)
	defer srv.Close()
	api.AddContent("9001", sim.Content{Type: "image", Size: 5000})
	api.AddContent("9002", sim.Content{Type: "file", Size: 70000})
	api.AddContent("9003", sim.Content{Type: "video", Size: 120000, Transcoding: 2})

	worker := media.New(media.Options{
		Log: s, Settings: s, Commit: w, Sealer: ring,
		Channels:  map[string]media.Channel{"demo": {DataAPIBase: srv.URL, Token: func(context.Context) ([]byte, error) { return []byte("tok"), nil }}},
		RetryBase: 10 * time.Millisecond, TranscodePoll: 10 * time.Millisecond, TranscodeWait: 5 * time.Second,
	})
	if _, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindAdmin, Time: time.Now(), Payload: mustEncode(t, &record.Admin{Action: "before"})}}); err != nil {
		t.Fatal(err)
	}
	if err := worker.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Setting(ctx, media.CursorSetting); v != "1" {
		t.Fatalf("cursor after Init = %q, want 1 (the records before are not read)", v)
	}
	body := webhookBody(
		messageEvent(1, user, `{"id":"9001","type":"image","quoteToken":"q","contentProvider":{"type":"line"}}`),
		messageEvent(2, user, `{"id":"9002","type":"file","fileName":"ใบเสร็จ.pdf","fileSize":70000}`),
		messageEvent(3, other, `{"id":"9003","type":"video","duration":1000,"contentProvider":{"type":"line"}}`),
		messageEvent(4, user, `{"id":"9004","type":"image","contentProvider":{"type":"line"}}`),
		messageEvent(5, user, `{"id":"9005","type":"image","contentProvider":{"type":"external","originalContentUrl":"https://example.com/a.jpg","previewImageUrl":"https://example.com/p.jpg"}}`),
		messageEvent(6, user, `{"id":"9006","type":"text","text":"hello"}`),
	)
	payload, err := record.Encode(&record.Meta{Channel: "demo", ReceivedMs: time.Now().UnixMilli()}, &record.Webhook{Raw: body})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "demo", Retention: "jp-appi",
		Payload: payload, Subjects: line.BodySubjects(body)}})
	if err != nil {
		t.Fatal(err)
	}
	more, err := worker.Step(ctx)
	if err != nil || more {
		t.Fatalf("Step = %v, %v", more, err)
	}
	if more, err := worker.Step(ctx); err != nil || more {
		t.Fatalf("second Step = %v, %v", more, err)
	}
	count, _ := s.Count(ctx)
	got := map[string]*record.Media{}
	for rec, err := range s.Records(ctx, first+1, count) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		leaf.UnmarshalBinary(rec.Leaf)
		if leaf.Kind != ledger.KindMedia {
			t.Fatalf("record %d is %s, want media", rec.Index, leaf.Kind)
		}
		if leaf.Channel != "demo" || leaf.Retention != "jp-appi" {
			t.Errorf("media record %d: channel %q class %q, want the webhook's", rec.Index, leaf.Channel, leaf.Retention)
		}
		raw := rec.Payload
		plain, err := ledger.OpenPayload(ctx, ring, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, b, err := record.Decode(ledger.KindMedia, plain)
		if err != nil {
			t.Fatal(err)
		}
		m := b.(*record.Media)
		got[m.MessageID] = m
		if len(m.Content) > 64 && bytes.Contains(raw, m.Content[32:64]) {
			t.Errorf("message %s: the stored payload holds the content in the clear", m.MessageID)
		}
		wantSubj := "user:" + user
		if m.MessageID == "9003" {
			wantSubj = "user:" + other
		}
		if subj := ledger.Subjects(rec.Keys); len(subj) != 1 || subj[0] != wantSubj {
			t.Errorf("message %s sealed under %v, want [%s]", m.MessageID, subj, wantSubj)
		}
	}
	for _, c := range []struct {
		id, typ, ctype string
		size           int
	}{{"9001", "image", "image/jpeg", 5000}, {"9002", "file", "application/octet-stream", 70000}, {"9003", "video", "video/mp4", 120000}} {
		m := got[c.id]
		if m == nil {
			t.Errorf("no media record of message %s", c.id)
			continue
		}
		want := sim.ContentBytes(c.id, c.typ, c.size)
		if m.Outcome != record.MediaKept || m.Stored != "record" || !bytes.Equal(m.Content, want) || m.ContentType != c.ctype || m.CheckContent(want) != nil {
			t.Errorf("message %s: outcome %q stored %q type %q size %d: not the content served", c.id, m.Outcome, m.Stored, m.ContentType, m.Size)
		}
		if m.Record != first || m.EventKey == "" {
			t.Errorf("message %s: record %d key %q, want the webhook record %d", c.id, m.Record, m.EventKey, first)
		}
	}
	if m := got["9002"]; m != nil && m.FileName != "ใบเสร็จ.pdf" {
		t.Errorf("file name %q", m.FileName)
	}
	if m := got["9004"]; m == nil || m.Outcome != record.MediaNotFound || m.Content != nil {
		t.Errorf("unknown message: %+v, want not_found", m)
	}
	if m := got["9005"]; m == nil || m.Outcome != record.MediaExternal || m.OriginalContentURL != "https://example.com/a.jpg" || m.Content != nil {
		t.Errorf("external content: %+v, want its URLs recorded and nothing fetched", m)
	}
	if got["9006"] != nil || len(got) != 5 {
		t.Errorf("%d media records, want 5 (not the text)", len(got))
	}
	polls := 0
	for _, c := range api.Calls() {
		if strings.HasSuffix(c.Path, "/9003/content/transcoding") {
			polls++
		}
		if strings.Contains(c.Path, "9005") {
			t.Errorf("external content was asked of LINE: %s", c.Path)
		}
	}
	if polls != 3 {
		t.Errorf("%d transcoding polls of the video, want 3 (processing twice, then succeeded)", polls)
	}
}

// TestWorkerRetries: a data API that fails is retried within the bound,
// and the failure is recorded rather than blocking the cursor forever.
func TestWorkerRetries(t *testing.T) {
	s := backends(t)["sqlite"](t)
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	api := sim.NewAPI(sim.Options{Faults: sim.Faults{ErrorRate: 1}})
	srv := httptest.NewServer(api)
	defer srv.Close()
	api.AddContent("9001", sim.Content{Type: "image", Size: 10})
	worker := media.New(media.Options{Log: s, Settings: s, Commit: w, Attempts: 3, RetryBase: time.Millisecond,
		Channels: map[string]media.Channel{"demo": {DataAPIBase: srv.URL, Token: func(context.Context) ([]byte, error) { return []byte("t"), nil }}}})
	if err := worker.Init(ctx); err != nil {
		t.Fatal(err)
	}
	body := webhookBody(messageEvent(1, user, `{"id":"9001","type":"image"}`))
	payload, _ := record.Encode(&record.Meta{Channel: "demo"}, &record.Webhook{Raw: body})
	if _, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "demo", Payload: payload}}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Step(ctx); err != nil {
		t.Fatal(err)
	}
	ms := mediaRecords(t, s.Records(ctx, 0, 3))
	if len(ms) != 1 || ms[0].Outcome != record.MediaFailed || ms[0].Attempts != 3 || !strings.Contains(ms[0].Reason, "500") {
		t.Fatalf("media records %+v, want one failed after 3 attempts", ms)
	}
	if n := len(api.Calls()); n != 3 {
		t.Errorf("%d calls to the data API, want 3", n)
	}
}

func mediaRecords(t *testing.T, seq iter.Seq2[ledger.Record, error]) []*record.Media {
	var out []*record.Media
	for rec, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		leaf.UnmarshalBinary(rec.Leaf)
		if leaf.Kind != ledger.KindMedia {
			continue
		}
		_, b, err := record.Decode(leaf.Kind, rec.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b.(*record.Media))
	}
	return out
}

func mustEncode(t *testing.T, b record.Body) []byte {
	p, err := record.Encode(&record.Meta{}, b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnsendDelete: on a channel whose unsend policy is delete, an
// unsend is a deletion request for the records that hold the message (its
// webhook record and its media), recorded in the ledger; the purge then
// deletes them, and keeps a record that holds another user's data. On
// SQLite and PostgreSQL.
func TestUnsendDelete(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) { testUnsendDelete(t, open(t)) })
	}
}

func testUnsendDelete(t *testing.T, s store) {
	ctx := context.Background()
	kek, _ := keys.ParseKEK(keys.GenerateKEK())
	ring := keys.NewRing(s, kek)
	w := ledger.NewWriter(s, ring, nil)
	api := sim.NewAPI(sim.Options{})
	srv := httptest.NewServer(api)
	defer srv.Close()
	api.AddContent("9101", sim.Content{Type: "image", Size: 3000})
	worker := media.New(media.Options{
		Log: s, Settings: s, Commit: w, Sealer: ring, Subjects: s, MinKeep: map[string]time.Duration{"c": 0},
		Channels: map[string]media.Channel{"demo": {DataAPIBase: srv.URL, Unsend: "delete", Token: func(context.Context) ([]byte, error) { return []byte("t"), nil }}},
	})
	if err := worker.Init(ctx); err != nil {
		t.Fatal(err)
	}
	appendWebhook := func(events ...string) uint64 {
		body := webhookBody(events...)
		payload, _ := record.Encode(&record.Meta{Channel: "demo"}, &record.Webhook{Raw: body})
		i, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "demo", Retention: "c",
			Payload: payload, Subjects: line.BodySubjects(body)}})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	own := appendWebhook(messageEvent(1, user, `{"id":"9101","type":"image"}`))
	mixed := appendWebhook(messageEvent(2, user, `{"id":"9102","type":"text","text":"x"}`), messageEvent(3, other, `{"id":"9103","type":"text","text":"y"}`))
	if _, err := worker.Step(ctx); err != nil {
		t.Fatal(err)
	}
	unsend := func(n int, id string) string {
		return fmt.Sprintf(`{"type":"unsend","mode":"active","timestamp":%d,"webhookEventId":"01UNSEND%018d","source":{"type":"user","userId":"%s"},"unsend":{"messageId":"%s"}}`,
			time.Now().UnixMilli(), n, user, id)
	}
	appendWebhook(unsend(4, "9101"), unsend(5, "9102"))
	if _, err := worker.Step(ctx); err != nil {
		t.Fatal(err)
	}
	count, _ := s.Count(ctx)
	var media, request uint64
	var deleteAfter []any
	for rec, err := range s.Records(ctx, 0, count) {
		if err != nil {
			t.Fatal(err)
		}
		var leaf ledger.Leaf
		leaf.UnmarshalBinary(rec.Leaf)
		plain, err := ledger.OpenPayload(ctx, ring, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, b, _ := record.Decode(leaf.Kind, plain)
		switch b := b.(type) {
		case *record.Media:
			media = rec.Index
		case *record.Admin:
			if b.Action == "subject_request" && b.Detail["kind"] == "unsend" {
				request = rec.Index
				deleteAfter, _ = b.Detail["delete_after"].([]any)
				if b.Subject != "user:"+user || b.Detail["message_id"] != "9101" {
					t.Errorf("unsend request %+v", b)
				}
			}
		}
	}
	if media == 0 || request == 0 {
		t.Fatalf("media record %d, unsend request %d", media, request)
	}
	if len(deleteAfter) != 2 || !strings.Contains(fmt.Sprint(deleteAfter), fmt.Sprintf("[%d ", own)) || !strings.Contains(fmt.Sprint(deleteAfter), fmt.Sprintf("[%d ", media)) {
		t.Errorf("the request's delete_after %v, want the webhook record %d and the media record %d", deleteAfter, own, media)
	}
	// A purge deletes only what the log has signed: sign it first.
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/media")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	l, err := ledger.New(ctx, s, ledger.Options{Origin: "example.com/media", Signer: signer, Verifier: verifier, CheckpointInterval: time.Hour, Sealer: ring})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	if head, err := l.Sync(ctx); err != nil || head.Size != count {
		t.Fatalf("Sync: size %d, %v; want %d", head.Size, err, count)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := retention.Purge(ctx, s, w, ring, map[string]retention.Policy{"c": {}}, time.Now().Add(time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Deleted, []uint64{own, media}) {
		t.Errorf("purge deleted %v, want the webhook record %d and the media record %d (not %d, which holds another user's message)", rep.Deleted, own, media, mixed)
	}
}

// memBlobs is object storage in memory.
type memBlobs struct {
	mu    sync.Mutex
	m     map[string][]byte
	until map[string]time.Time
}

func (b *memBlobs) Put(_ context.Context, key string, body []byte, until time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[key], b.until[key] = slices.Clone(body), until
	return nil
}

func (b *memBlobs) Get(_ context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[key]
	if !ok {
		return nil, fmt.Errorf("no blob %s", key)
	}
	return v, nil
}

func (b *memBlobs) Delete(_ context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
	return nil
}

// TestWorkerBlobs: content larger than the store's bound goes to object
// storage, encrypted with a key that only its media record holds, locked
// until its class's retention ends; smaller content stays in the record.
func TestWorkerBlobs(t *testing.T) {
	s := backends(t)["sqlite"](t)
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	api := sim.NewAPI(sim.Options{})
	srv := httptest.NewServer(api)
	defer srv.Close()
	api.AddContent("9201", sim.Content{Type: "file", Size: 20000})
	api.AddContent("9202", sim.Content{Type: "image", Size: 500})
	blobs := &memBlobs{m: map[string][]byte{}, until: map[string]time.Time{}}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	worker := media.New(media.Options{Log: s, Settings: s, Commit: w, Blobs: blobs, StoreMax: 10000,
		Keep: map[string]time.Duration{"c": 24 * time.Hour}, Now: func() time.Time { return now },
		Channels: map[string]media.Channel{"demo": {DataAPIBase: srv.URL, Token: func(context.Context) ([]byte, error) { return []byte("t"), nil }}}})
	if err := worker.Init(ctx); err != nil {
		t.Fatal(err)
	}
	body := webhookBody(messageEvent(1, user, `{"id":"9201","type":"file","fileName":"a.pdf","fileSize":20000}`), messageEvent(2, user, `{"id":"9202","type":"image"}`))
	payload, _ := record.Encode(&record.Meta{Channel: "demo"}, &record.Webhook{Raw: body})
	if _, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindWebhook, Time: now, Channel: "demo", Retention: "c", Payload: payload}}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Step(ctx); err != nil {
		t.Fatal(err)
	}
	ms := mediaRecords(t, s.Records(ctx, 0, 10))
	if len(ms) != 2 {
		t.Fatalf("%d media records", len(ms))
	}
	big, small := ms[0], ms[1]
	want := sim.ContentBytes("9201", "file", 20000)
	if big.Stored != "blobs" || big.Content != nil || big.BlobKey == "" || big.Size != 20000 {
		t.Fatalf("large content: stored %q, %d bytes in the record, key %q", big.Stored, len(big.Content), big.BlobKey)
	}
	if small.Stored != "record" || len(small.Content) != 500 {
		t.Errorf("small content: stored %q, %d bytes in the record", small.Stored, len(small.Content))
	}
	stored := blobs.m[big.BlobKey]
	if bytes.Contains(stored, want[100:164]) {
		t.Error("the blob holds the content in the clear")
	}
	if !blobs.until[big.BlobKey].Equal(now.Add(24 * time.Hour)) {
		t.Errorf("blob locked until %v, want the record's retention end %v", blobs.until[big.BlobKey], now.Add(24*time.Hour))
	}
	got, err := media.OpenBlob(ctx, blobs, big)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("OpenBlob: %v", err)
	}
	// Without the record (its payload purged or its subject shredded),
	// the blob cannot be read.
	gone := *big
	gone.BlobDEK = ""
	if _, err := media.OpenBlob(ctx, blobs, &gone); err == nil {
		t.Error("the blob opened without its record's key")
	}
	blobs.m[big.BlobKey][len(stored)-1] ^= 1
	if _, err := media.OpenBlob(ctx, blobs, big); err == nil {
		t.Error("a changed blob opened")
	}
}

// TestWorkerExternal: with fetch_external, content on the allowed host is
// fetched and kept; on another host it is not fetched, and a redirect is
// not followed.
func TestWorkerExternal(t *testing.T) {
	s := backends(t)["sqlite"](t)
	ctx := context.Background()
	w := ledger.NewWriter(s, nil, nil)
	var asked atomic.Int32
	ext := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.URL.Path == "/moved.jpg" {
			http.Redirect(rw, r, "/a.jpg", http.StatusFound)
			return
		}
		rw.Header().Set("Content-Type", "image/png")
		rw.Write([]byte("external image bytes"))
	}))
	defer ext.Close()
	host := strings.TrimPrefix(ext.URL, "http://")
	worker := media.New(media.Options{Log: s, Settings: s, Commit: w, FetchExternal: true, ExternalHosts: media.Fence{host}, Attempts: 1,
		Channels: map[string]media.Channel{"demo": {DataAPIBase: "http://127.0.0.1:1", Token: func(context.Context) ([]byte, error) { return []byte("t"), nil }}}})
	if err := worker.Init(ctx); err != nil {
		t.Fatal(err)
	}
	external := func(n int, id, url string) string {
		return messageEvent(n, user, fmt.Sprintf(`{"id":"%s","type":"image","contentProvider":{"type":"external","originalContentUrl":"%s","previewImageUrl":"%s"}}`, id, url, url))
	}
	body := webhookBody(external(1, "9301", ext.URL+"/a.jpg"), external(2, "9302", "http://elsewhere.example/a.jpg"), external(3, "9303", ext.URL+"/moved.jpg"))
	payload, _ := record.Encode(&record.Meta{Channel: "demo"}, &record.Webhook{Raw: body})
	if _, err := w.Commit(ctx, []ledger.Entry{{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "demo", Payload: payload}}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Step(ctx); err != nil {
		t.Fatal(err)
	}
	ms := mediaRecords(t, s.Records(ctx, 0, 10))
	if len(ms) != 3 {
		t.Fatalf("%d media records", len(ms))
	}
	if m := ms[0]; m.Outcome != record.MediaExternal || string(m.Content) != "external image bytes" || m.ContentType != "image/png" || m.Stored != "record" {
		t.Errorf("allowed host: %+v", m)
	}
	if m := ms[1]; m.Outcome != record.MediaFailed || !strings.Contains(m.Reason, "not in the allowed hosts") || m.Content != nil {
		t.Errorf("other host: outcome %q reason %q", m.Outcome, m.Reason)
	}
	if m := ms[2]; m.Outcome != record.MediaFailed || m.Content != nil {
		t.Errorf("redirect: outcome %q reason %q", m.Outcome, m.Reason)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the external host was asked %d times, want 2 (no redirect followed)", n)
	}
}
