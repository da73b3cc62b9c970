// Package media keeps the content of image, video, audio and file
// messages before LINE drops it (about two weeks for images and video,
// about a week for files).
//
// The Worker runs behind the acknowledgement, driven from the ledger: a
// cursor over the records (a setting in the store, moved forward in the
// same commit as the media records it leads to), so that a crash re-runs
// what was not recorded and nothing is ever fetched in the path that
// answers LINE. For each media message event of a webhook record it
// fetches the content from LINE's data API (for video and audio after
// LINE's transcoding succeeded), retrying within a bound, and records a
// media record (record.Media): the message, the content type, the size,
// the SHA-256 of the content in the clear, where it is stored, and the
// content itself, sealed under the event's subjects like every payload.
// Retention, legal holds, purges, deletion requests, crypto-shredding and
// evidence bundles therefore treat the content as they treat the message.
//
// Content larger than the store's bound goes to object storage (Blobs),
// sealed under the same subjects; without object storage it stays in the
// store. Content from an external content provider is fetched only when
// the config allows it and its host is on the allow-list.
package media

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
	"github.com/prometheus/client_golang/prometheus"
)

// Blobs is object storage for content too large for the store. Put
// stores body under key, locked until retainUntil where the storage
// supports it. Methods are safe for concurrent use; Get of a missing key
// returns an error; Delete may fail on a locked object.
type Blobs interface {
	Put(ctx context.Context, key string, body []byte, retainUntil time.Time) error
	Get(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error // may fail on locked objects
}

// Log is the ledger's records as the worker reads them (ledger.Store's
// methods).
type Log interface {
	Count(ctx context.Context) (uint64, error)
	Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error]
}

// Settings reads a setting ("" when unset); outbound.State's method.
type Settings interface {
	Setting(ctx context.Context, key string) (string, error)
}

// Committer commits records with effects (*ledger.Ledger).
type Committer interface {
	Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error)
}

// CursorSetting is the setting that holds the next ledger record the
// worker reads.
const CursorSetting = "media:next"

// Options configures a Worker. Zero values take the defaults noted.
type Options struct {
	Log      Log
	Settings Settings
	Commit   Committer
	// Sealer opens webhook payloads and seals blobs (nil: stored as they
	// are).
	Sealer   ledger.Sealer
	Channels map[string]Channel
	// Blobs, if set, takes content larger than StoreMax.
	Blobs Blobs
	// StoreMax is the largest content kept in the store when Blobs is set
	// (default 8 MiB); without Blobs every content is kept in the store.
	StoreMax int64
	// MaxBytes bounds the content fetched (default 64 MiB): larger content
	// is recorded as too large, with its announced size.
	MaxBytes int64
	// Attempts bounds the tries of one fetch (default 5); RetryBase is the
	// first pause between them (default 1s), doubled each time up to 30s.
	Attempts  int
	RetryBase time.Duration
	// TranscodeWait bounds the wait for LINE's transcoding of video and
	// audio (default 2m), polled every TranscodePoll (default 1s).
	TranscodeWait time.Duration
	TranscodePoll time.Duration
	// Timeout bounds each HTTP request (default 60s).
	Timeout time.Duration
	// FetchExternal allows fetching content from external content
	// providers whose host is in ExternalHosts.
	FetchExternal bool
	ExternalHosts Fence
	// Keep gives, by retention class, how long payloads are kept: a blob
	// is locked until its record's time plus its class's period.
	Keep map[string]time.Duration
	// DisableFetch fetches no content: the worker only applies the
	// channels' unsend policies.
	DisableFetch bool
	// Subjects finds a user's records, for the unsend policy "delete";
	// MinKeep gives, by retention class, the least time a payload is kept,
	// which an unsend does not shorten.
	Subjects SubjectRecords
	MinKeep  map[string]time.Duration
	// Batch bounds the ledger records read in one step (default 256).
	Batch int
	// Parallel bounds the fetches at once (default 4).
	Parallel int
	Logger   *slog.Logger
	Now      func() time.Time
}

// Worker fetches and records message content.
type Worker struct {
	o     Options
	f     *fetcher
	log   *slog.Logger
	mu    sync.Mutex
	seen  map[string]bool // message ids recorded lately (redeliveries)
	order []string

	fetches *prometheus.CounterVec
	lag     prometheus.Gauge
}

// New returns a Worker; Run runs it.
func New(o Options) *Worker {
	if o.StoreMax <= 0 {
		o.StoreMax = 8 << 20
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.TranscodeWait <= 0 {
		o.TranscodeWait = 2 * time.Minute
	}
	if o.TranscodePoll <= 0 {
		o.TranscodePoll = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 256
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Worker{
		o:    o,
		f:    &fetcher{http: newHTTPClient(o.Timeout, nil), maxBytes: o.MaxBytes, poll: o.TranscodePoll, wait: o.TranscodeWait},
		log:  o.Logger,
		seen: map[string]bool{},
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linegate_media_records_total",
			Help: "Media records written, by outcome (kept, external, not_found, too_large, failed).",
		}, []string{"outcome"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linegate_media_backlog_records",
			Help: "Ledger records not yet read by the media worker.",
		}),
	}
}

// Collectors returns the worker's metrics.
func (w *Worker) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.fetches, w.lag}
}

// Init sets the cursor, when it was never set, to the ledger's current
// size: content is kept for the messages received from the first start
// with media on. (LINE keeps content for days only: an older message's
// content is mostly gone.)
func (w *Worker) Init(ctx context.Context) error {
	v, err := w.o.Settings.Setting(ctx, CursorSetting)
	if err != nil || v != "" {
		return err
	}
	n, err := w.o.Log.Count(ctx)
	if err != nil {
		return err
	}
	_, err = w.o.Commit.Commit(ctx, nil, outbound.SetSetting{Key: CursorSetting, Value: strconv.FormatUint(n, 10)})
	return err
}

// Run steps every interval until ctx ends, while sequencing reports true
// (among replicas, the one that sequences the log keeps the media).
func (w *Worker) Run(ctx context.Context, every time.Duration, sequencing func() bool) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		for ctx.Err() == nil && sequencing() {
			more, err := w.Step(ctx)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, ledger.ErrClosed) {
					w.log.Error("media not recorded; trying again", "err", err)
				}
				return
			}
			if !more {
				return
			}
		}
	})
}

// job is one media message event to fetch.
type job struct {
	leaf ledger.Leaf
	rec  uint64
	idx  int
	ev   *line.Event
	out  *record.Media
}

// Step reads the next batch of records past the cursor, fetches the
// content of their media messages and records it, with the cursor moved
// past them in the same commit. It reports whether more records wait.
func (w *Worker) Step(ctx context.Context) (bool, error) {
	v, err := w.o.Settings.Setting(ctx, CursorSetting)
	if err != nil {
		return false, err
	}
	if v == "" {
		return false, nil // Init not run: nothing to do
	}
	next, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return false, fmt.Errorf("media: malformed cursor setting")
	}
	count, err := w.o.Log.Count(ctx)
	if err != nil {
		return false, err
	}
	w.lag.Set(float64(count - min(next, count)))
	if next >= count {
		return false, nil
	}
	end := min(count, next+uint64(w.o.Batch))
	var jobs []*job
	var unsends []unsendJob
	for rec, err := range w.o.Log.Records(ctx, next, end) {
		if err != nil {
			return false, err
		}
		js, us, err := w.jobs(ctx, rec)
		if err != nil {
			return false, fmt.Errorf("media: record %d: %w", rec.Index, err)
		}
		jobs, unsends = append(jobs, js...), append(unsends, us...)
	}
	w.run(ctx, jobs)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	entries := make([]ledger.Entry, 0, len(jobs))
	effects := []ledger.Effect{outbound.SetSetting{Key: CursorSetting, Value: strconv.FormatUint(end, 10)}}
	for _, u := range unsends {
		e, eff, err := w.unsendRequest(ctx, u)
		if err != nil {
			return false, fmt.Errorf("media: unsend of record %d: %w", u.rec, err)
		}
		if e != nil {
			entries, effects = append(entries, *e), append(effects, eff)
		}
	}
	now := w.o.Now()
	for _, j := range jobs {
		payload, err := record.Encode(&record.Meta{Channel: j.leaf.Channel, ReceivedMs: now.UnixMilli()}, j.out)
		if err != nil {
			return false, err
		}
		entries = append(entries, ledger.Entry{Kind: record.KindMedia, Time: now, Channel: j.leaf.Channel,
			Retention: j.leaf.Retention, Payload: payload, Subjects: j.out.Subj})
	}
	if _, err := w.o.Commit.Commit(ctx, entries, effects...); err != nil {
		return false, err
	}
	for _, j := range jobs {
		w.fetches.WithLabelValues(j.out.Outcome).Inc()
		w.remember(j.ev.Message.ID)
	}
	w.lag.Set(float64(count - end))
	return end < count, nil
}

// mediaTypes are the message types whose content LINE serves.
var mediaTypes = map[string]bool{"image": true, "video": true, "audio": true, "file": true}

// jobs returns the media message events of a webhook record, and its
// unsend events on a channel whose policy is "delete".
func (w *Worker) jobs(ctx context.Context, rec ledger.Record) ([]*job, []unsendJob, error) {
	var leaf ledger.Leaf
	if rec.Leaf == nil || leaf.UnmarshalBinary(rec.Leaf) != nil || leaf.Kind != record.KindWebhook || rec.Payload == nil {
		return nil, nil, nil
	}
	ch, ok := w.o.Channels[leaf.Channel]
	if !ok {
		return nil, nil, nil
	}
	payload, err := ledger.OpenPayload(ctx, w.o.Sealer, rec)
	if errors.Is(err, ledger.ErrKeyDestroyed) {
		return nil, nil, nil // shredded before its content was fetched
	}
	if err != nil {
		return nil, nil, err
	}
	_, body, err := record.DecodePayload(payload)
	if err != nil {
		return nil, nil, nil
	}
	cb, err := line.ParseCallback(body)
	if err != nil {
		return nil, nil, nil
	}
	var out []*job
	var unsends []unsendJob
	for i, raw := range cb.Events {
		ev := line.DecodeEvent(raw)
		if ev.Type == "unsend" && ev.Unsend != nil && ch.Unsend == "delete" && w.o.Subjects != nil &&
			ev.Source != nil && ev.Source.UserID != "" && validMessageID(ev.Unsend.MessageID) {
			at := leaf.Time
			if ev.Timestamp > 0 {
				at = time.UnixMilli(ev.Timestamp)
			}
			unsends = append(unsends, unsendJob{leaf: leaf, rec: rec.Index, user: ev.Source.UserID, message: ev.Unsend.MessageID, at: at})
			continue
		}
		if w.o.DisableFetch {
			continue
		}
		if ev.Type != "message" || ev.Message == nil || !mediaTypes[ev.Message.Type] || !validMessageID(ev.Message.ID) {
			continue
		}
		if w.recorded(ev.Message.ID) {
			continue // a redelivery of a message whose content is recorded
		}
		out = append(out, &job{leaf: leaf, rec: rec.Index, idx: i, ev: ev})
	}
	return out, unsends, nil
}

// run fetches the jobs' content, Parallel at a time, and fills in their
// media bodies.
func (w *Worker) run(ctx context.Context, jobs []*job) {
	sem := make(chan struct{}, w.o.Parallel)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			j.out = w.fetch(ctx, j)
		})
	}
	wg.Wait()
}

// fetch fetches one message's content, with retries, and describes the
// outcome.
func (w *Worker) fetch(ctx context.Context, j *job) *record.Media {
	m := j.ev.Message
	out := &record.Media{Record: j.rec, Index: j.idx, EventKey: j.ev.DedupKey(), MessageID: m.ID, Type: m.Type,
		FileName: m.FileName, Subj: j.ev.Subjects()}
	ch := w.o.Channels[j.leaf.Channel]
	get := func(ctx context.Context) (*fetched, error) { return w.f.lineContent(ctx, ch, m.Type, m.ID) }
	if cp := m.ContentProvider; cp != nil && cp.Type == "external" {
		out.Outcome = record.MediaExternal
		out.OriginalContentURL, out.PreviewImageURL = cp.OriginalContentURL, cp.PreviewImageURL
		if !w.o.FetchExternal {
			out.Reason = "external content is not fetched (media.fetch_external is off)"
			return out
		}
		get = func(ctx context.Context) (*fetched, error) {
			content, ctype, err := FetchURL(ctx, w.o.ExternalHosts, cp.OriginalContentURL, w.o.MaxBytes, w.o.Timeout)
			if err != nil {
				return nil, permanent{err}
			}
			return &fetched{content: content, contentType: ctype}, nil
		}
	}
	var got *fetched
	var err error
	pause := w.o.RetryBase
	for out.Attempts = 1; ; out.Attempts++ {
		got, err = get(ctx)
		var p permanent
		if err == nil || errors.As(err, &p) || out.Attempts >= w.o.Attempts || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
	out.FetchedMs = w.o.Now().UnixMilli()
	if got != nil {
		out.ContentType, out.RequestID = got.contentType, got.requestID
	}
	switch {
	case errors.Is(err, errNotFound):
		out.Outcome, out.Reason = record.MediaNotFound, err.Error()
		return out
	case errors.Is(err, errTooLarge):
		out.Outcome, out.Reason = record.MediaTooLarge, fmt.Sprintf("larger than %d bytes", w.o.MaxBytes)
		if got != nil {
			out.Size = got.size
		}
		return out
	case err != nil:
		out.Outcome, out.Reason = record.MediaFailed, err.Error()
		return out
	}
	if out.Outcome == "" {
		out.Outcome = record.MediaKept
	}
	out.Size, out.SHA256 = int64(len(got.content)), sum(got.content)
	if w.o.Blobs == nil || out.Size <= w.o.StoreMax {
		out.Stored, out.Content = "record", got.content
		return out
	}
	if err := w.putBlob(ctx, j, out, got.content); err != nil {
		out.Outcome, out.Reason = record.MediaFailed, "object storage: "+err.Error()
	}
	return out
}

// putBlob encrypts content with a key of its own, kept in the media
// record's payload alone (record.Media.BlobDEK), and puts it into object
// storage, locked until its record's retention ends.
func (w *Worker) putBlob(ctx context.Context, j *job, out *record.Media, content []byte) error {
	key := "media/" + j.leaf.Channel + "/" + out.MessageID + "-" + out.SHA256[:16]
	dek := make([]byte, 32)
	rand.Read(dek)
	sealed, err := sealBlob(dek, key, content)
	if err != nil {
		return err
	}
	var until time.Time
	if d := w.o.Keep[j.leaf.Retention]; d > 0 {
		until = w.o.Now().Add(d)
	}
	if err := w.o.Blobs.Put(ctx, key, sealed, until); err != nil {
		return err
	}
	out.Stored, out.BlobKey, out.BlobDEK = "blobs", key, base64.StdEncoding.EncodeToString(dek)
	return nil
}

// sealBlob encrypts content with AES-256-GCM under dek, bound to the
// blob's key: a random nonce, then the ciphertext.
func sealBlob(dek []byte, key string, content []byte) ([]byte, error) {
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	return gcm.Seal(nonce, nonce, content, []byte(key)), nil
}

// OpenBlob returns the content of a media record stored in object
// storage, decrypted with the key its record holds, and checked against
// the record's size and SHA-256.
func OpenBlob(ctx context.Context, b Blobs, m *record.Media) ([]byte, error) {
	if m.Stored != "blobs" {
		return nil, errors.New("media: the content is not in object storage")
	}
	dek, err := base64.StdEncoding.DecodeString(m.BlobDEK)
	if err != nil || len(dek) != 32 {
		return nil, errors.New("media: malformed blob key in the record")
	}
	sealed, err := b.Get(ctx, m.BlobKey)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("media: blob too short")
	}
	content, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], []byte(m.BlobKey))
	if err != nil {
		return nil, errors.New("media: blob does not decrypt under its record's key")
	}
	if err := m.CheckContent(content); err != nil {
		return nil, err
	}
	return content, nil
}

// maxSeen bounds the message ids remembered against redeliveries.
const maxSeen = 4096

func (w *Worker) recorded(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[id]
}

func (w *Worker) remember(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[id] {
		return
	}
	w.seen[id] = true
	w.order = append(w.order, id)
	if len(w.order) > maxSeen {
		delete(w.seen, w.order[0])
		w.order = w.order[1:]
	}
}

// validMessageID reports whether id can be a LINE message id (digits, as
// LINE's are; letters allowed), and so safe in a URL path and a blob key.
func validMessageID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
