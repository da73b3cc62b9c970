// Package archive publishes what the ledger has signed to object storage
// under Object Lock: each new checkpoint, the full tiles and entry bundles
// (immutable once full) in the C2SP tlog-tiles layout, the daily anchors,
// the witnesses' cosigned checkpoints and evidence bundles. Each object is
// locked in compliance mode until its kind's retention ends, and read back
// and checked before it counts as published.
//
// Layout, under the bucket's prefix:
//
//	checkpoint-<size>            the signed checkpoint of that size
//	checkpoint-<size>.cosigned   the same, with the witnesses' cosignatures
//	tile/<L>/<N>                 full hash tiles (tlog-tiles)
//	tile/entries/<N>             full entry bundles (tlog-tiles)
//	anchors/<name>.checkpoint    the daily anchors, as in anchors_dir
//	anchors/<name>.consistency
//	bundles/<name>               evidence bundles
//
// A checkpoint is never rewritten (Object Lock forbids it), so the mutable
// "checkpoint" object of tlog-tiles is one object per size instead.
//
// Crash ordering: the tiles a checkpoint covers are published before it,
// and a stream's cursor (State) is advanced only after its objects are
// read back; a crash in between publishes them again, which is a no-op
// for identical bytes.
package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/witness"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Bucket is the object storage the archive publishes to.
type Bucket interface {
	objstore.Blobs
	// List returns the keys under prefix.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Store is what the archive reads of the ledger's storage, and where it
// keeps its cursors (witness.State).
type Store interface {
	ReadTile(ctx context.Context, level, index uint64) ([]byte, error)
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
	witness.State
}

// Retention is how long each kind of object is locked.
type Retention struct {
	Checkpoints time.Duration
	Tiles       time.Duration
	Anchors     time.Duration
	Bundles     time.Duration
}

// Options configure a Publisher.
type Options struct {
	Bucket    Bucket
	Store     Store
	Head      func() ledger.TreeHead // the latest signed tree head
	Verifier  note.Verifier          // the log's checkpoint key
	Origin    string
	Retention Retention
	// AnchorsDir is the directory of the daily anchors ("": none).
	AnchorsDir string
	// Cosigner, if set, has each new checkpoint cosigned; the cosigned
	// checkpoint is written to CosignedFile and published.
	Cosigner     *witness.Cosigner
	CosignedFile string
	// Active reports whether this replica publishes (it holds the
	// sequencer lease); nil: always.
	Active func() bool
	Logger *slog.Logger
}

// Publisher publishes the ledger to the bucket.
type Publisher struct {
	o  Options
	mu sync.Mutex // one Step at a time

	published *prometheus.GaugeVec
	failures  *prometheus.CounterVec
	lag       prometheus.Gauge
	lastOK    prometheus.Gauge
	untrusted *prometheus.GaugeVec
}

// New returns a Publisher.
func New(o Options) *Publisher {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Publisher{o: o,
		published: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "linegate_archive_published_size",
			Help: "The tree size up to which each stream (checkpoint, tiles, cosigned) is published to object storage."}, []string{"stream"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "linegate_archive_failures_total",
			Help: "Failed publications to object storage, by stream (checkpoint, tiles, cosigned, anchors, bundles); retried."}, []string{"stream"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linegate_archive_lag_records",
			Help: "Records signed by the ledger whose checkpoint is not yet published to object storage."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linegate_archive_last_success_timestamp_seconds",
			Help: "When a publication pass last completed without error."}),
		untrusted: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "linegate_archive_untrusted_objects",
			Help: "Objects under checkpoint keys of the bucket that the start-up check ignored, by reason (delete_marker, unlocked, newer_version, mismatch): written by another than linegate."}, []string{"reason"}),
	}
}

// Collectors returns the Publisher's metrics, and its Cosigner's.
func (p *Publisher) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{p.published, p.failures, p.lag, p.lastOK, p.untrusted}
	if p.o.Cosigner != nil {
		cs = append(cs, p.o.Cosigner.Collectors()...)
	}
	return cs
}

// Cursor names, in Store.
const (
	cursorCheckpoint = "archive:checkpoint"
	cursorTiles      = "archive:tiles"
	cursorCosigned   = "archive:cosigned"
	cursorAnchors    = "archive:anchors"
)

// CheckpointKey is the key of the checkpoint of a size.
func CheckpointKey(size uint64) string { return "checkpoint-" + strconv.FormatUint(size, 10) }

// BucketError reports a checkpoint in the bucket that the local tree does
// not extend, or that is not the log's.
type BucketError struct {
	Key string
	Err error
}

func (e *BucketError) Error() string {
	return fmt.Sprintf("archive: the bucket's %s: %v", e.Key, e.Err)
}

func (e *BucketError) Unwrap() error { return e.Err }

// BUG: NewestTrusted lists every version of every checkpoint key to find
// the newest (the keys are not zero-padded, so their order is not their
// sizes'): about a request per thousand checkpoints published, at start
// only.

// Newest returns the bucket's newest trusted checkpoint (NewestTrusted),
// among the checkpoints and the cosigned checkpoints (each signed by the
// log, so each one the database's tree must extend), and the objects
// under checkpoint keys it did not trust; found is false when the bucket
// holds none.
func Newest(ctx context.Context, b Bucket, v note.Verifier, origin string) (t Trusted, found bool, ignored []Ignored, err error) {
	vb, ok := b.(Versioned)
	if !ok {
		return Trusted{}, false, nil, errors.New("archive: the bucket cannot list object versions and their locks")
	}
	t, found, ignored, err = NewestTrusted(ctx, vb, "", v, origin)
	if err != nil {
		return t, found, ignored, err
	}
	ct, cfound, cignored, err := NewestTrusted(ctx, vb, ".cosigned", v, origin)
	ignored = append(ignored, cignored...)
	if err != nil {
		return t, found, ignored, err
	}
	if cfound && (!found || ct.Size > t.Size) {
		t, found = ct, true
	}
	return t, found, ignored, nil
}

// CheckBucket holds the local tree to the newest trusted checkpoint in the
// bucket (NewestTrusted), as the ledger holds it to the checkpoint file
// and the anchors: the tree of head, whose tiles store holds, must extend
// it. A checkpoint that a rollback acknowledgement names as lost (acked
// reports it) is let through, with a warning. Objects under checkpoint
// keys that are not trusted (a version put over a locked one, a delete
// marker, an unlocked object, one whose content is not the checkpoint its
// key names) are ignored, logged at error level and counted in
// linegate_archive_untrusted_objects. It returns the size of the bucket's
// newest trusted checkpoint.
func (p *Publisher) CheckBucket(ctx context.Context, head ledger.TreeHead, acked func(signed []byte) (bool, error)) (uint64, error) {
	t, found, ignored, err := Newest(ctx, p.o.Bucket, p.o.Verifier, p.o.Origin)
	p.reportIgnored(ignored)
	if err != nil || !found {
		return 0, err
	}
	key := t.Key
	signed := t.Signed
	c, err := ledger.CheckPublished(ctx, p.o.Store, head, ledger.External{Name: "bucket's " + key, Signed: signed}, p.o.Verifier, p.o.Origin)
	var ie *ledger.InconsistentError
	if errors.As(err, &ie) && acked != nil {
		ok, aerr := acked(signed)
		if aerr != nil {
			return c.Size, aerr
		}
		if ok {
			p.o.Logger.Warn("archive: the database's tree does not extend the bucket's newest checkpoint: the rollback was acknowledged",
				"key", key, "size", c.Size, "tree_size", head.Size)
			return c.Size, nil
		}
	}
	if err != nil {
		return c.Size, &BucketError{Key: key, Err: err}
	}
	return c.Size, nil
}

func (p *Publisher) reportIgnored(ignored []Ignored) {
	ReportIgnored(p.o.Logger, ignored)
	counts := map[string]int{IgnoredDeleteMarker: 0, IgnoredUnlocked: 0, IgnoredNewer: 0, IgnoredMismatch: 0}
	for _, x := range ignored {
		counts[x.Reason]++
	}
	for r, n := range counts {
		p.untrusted.WithLabelValues(r).Set(float64(n))
	}
}

// Run publishes every interval until ctx ends.
func (p *Publisher) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if p.o.Active == nil || p.o.Active() {
			if err := p.Step(ctx); err != nil && ctx.Err() == nil {
				p.o.Logger.Warn("archive: publication failed; retried", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			// A last pass for the checkpoint signed on shutdown, after
			// the ledger drained (serve stops its jobs after the ledger).
			if p.o.Active == nil || p.o.Active() {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if err := p.Step(fctx); err != nil {
					p.o.Logger.Warn("archive: the last publication before stopping failed; it is retried at the next start", "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
		}
	}
}

// Step publishes what is new: the full tiles, then the checkpoint, then
// its cosigned form, then new anchors. Each stream goes on from its
// cursor; a failure stops its stream for this pass.
func (p *Publisher) Step(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	head := p.o.Head()
	if head.Checkpoint == nil {
		return nil
	}
	cp, err := ledger.OpenCheckpoint(head.Checkpoint, p.o.Verifier, p.o.Origin)
	if err != nil || cp.Size != head.Size || cp.Hash != head.Hash {
		return fmt.Errorf("archive: the tree head's checkpoint does not verify: %v", err)
	}
	var errs []error
	fail := func(stream string, err error) {
		p.failures.WithLabelValues(stream).Inc()
		errs = append(errs, fmt.Errorf("%s: %w", stream, err))
	}
	if p.o.Bucket != nil {
		if err := p.publishTiles(ctx, head.Size); err != nil {
			fail("tiles", err)
		} else if err := p.publishCheckpoint(ctx, head); err != nil {
			fail("checkpoint", err)
		}
	}
	if p.o.Cosigner != nil {
		if err := p.publishCosigned(ctx, head); err != nil {
			fail("cosigned", err)
		}
	}
	if p.o.Bucket != nil && p.o.AnchorsDir != "" {
		if err := p.publishAnchors(ctx); err != nil {
			fail("anchors", err)
		}
	}
	if n, err := p.cursor(ctx, cursorCheckpoint); err == nil {
		p.lag.Set(float64(head.Size - min(n, head.Size)))
	}
	if len(errs) == 0 {
		p.lastOK.SetToCurrentTime()
	}
	return errors.Join(errs...)
}

func (p *Publisher) cursor(ctx context.Context, name string) (uint64, error) {
	v, err := p.o.Store.Publication(ctx, name)
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
}

func (p *Publisher) setCursor(ctx context.Context, name, stream string, n uint64) error {
	p.published.WithLabelValues(stream).Set(float64(n))
	return p.o.Store.SetPublication(ctx, name, strconv.FormatUint(n, 10))
}

func (p *Publisher) until(d time.Duration) time.Time { return time.Now().Add(d) }

// publishTiles publishes the tiles and entry bundles that became full
// between the tiles cursor and size, each checked against what it sums
// up: an entry bundle's leaves hash to its level-0 tile, and each hash of
// a higher tile is the root of the full tile below it. (The right edge up
// to the checkpoint's root is the ledger's own check at start.)
func (p *Publisher) publishTiles(ctx context.Context, size uint64) error {
	from, err := p.cursor(ctx, cursorTiles)
	if err != nil {
		return err
	}
	if from >= size {
		return nil
	}
	until := p.until(p.o.Retention.Tiles)
	const w = ledger.TileWidth
	for level := uint64(0); size>>(ledger.TileHeight*level) >= w; level++ {
		lo := (from >> (ledger.TileHeight * level)) / w
		hi := (size >> (ledger.TileHeight * level)) / w
		for i := lo; i < hi; i++ {
			data, err := p.o.Store.ReadTile(ctx, level, i)
			if err != nil {
				return fmt.Errorf("read tile %d/%d: %w", level, i, err)
			}
			if len(data) < w*32 {
				return fmt.Errorf("tile %d/%d is short", level, i)
			}
			data = data[:w*32]
			if level == 0 {
				leaves, err := p.o.Store.ReadLeaves(ctx, i*w, (i+1)*w)
				if err != nil {
					return fmt.Errorf("read entries %d: %w", i, err)
				}
				var bundle []byte
				for j, l := range leaves {
					h := tlog.RecordHash(l)
					if !bytes.Equal(h[:], data[j*32:(j+1)*32]) {
						return fmt.Errorf("tile 0/%d: hash %d differs from the leaf hash of record %d", i, j, i*w+uint64(j))
					}
					bundle = append(bundle, byte(len(l)>>8), byte(len(l)))
					bundle = append(bundle, l...)
				}
				if err := p.o.Bucket.Put(ctx, ledger.EntriesPath(i, 0), bundle, until); err != nil {
					return err
				}
			} else {
				for j := uint64(0); j < w; j++ {
					child, err := p.o.Store.ReadTile(ctx, level-1, i*w+j)
					if err != nil || len(child) < w*32 {
						return fmt.Errorf("tile %d/%d: child %d is missing or short: %v", level, i, j, err)
					}
					if r := treeRoot(child[:w*32]); !bytes.Equal(r[:], data[j*32:(j+1)*32]) {
						return fmt.Errorf("tile %d/%d: hash %d differs from the root of tile %d/%d", level, i, j, level-1, i*w+j)
					}
				}
			}
			if err := p.o.Bucket.Put(ctx, ledger.TilePath(level, i, 0), data, until); err != nil {
				return err
			}
		}
	}
	return p.setCursor(ctx, cursorTiles, "tiles", size)
}

// treeRoot returns the Merkle root of a full tile's 256 hashes.
func treeRoot(data []byte) tlog.Hash {
	hs := make([]tlog.Hash, len(data)/32)
	for i := range hs {
		copy(hs[i][:], data[i*32:])
	}
	for len(hs) > 1 {
		for i := range len(hs) / 2 {
			hs[i] = tlog.NodeHash(hs[2*i], hs[2*i+1])
		}
		hs = hs[:len(hs)/2]
	}
	return hs[0]
}

// publishCheckpoint publishes head's checkpoint, once per size.
func (p *Publisher) publishCheckpoint(ctx context.Context, head ledger.TreeHead) error {
	n, err := p.cursor(ctx, cursorCheckpoint)
	if err != nil {
		return err
	}
	if n >= head.Size && n != 0 {
		return nil
	}
	if err := p.o.Bucket.Put(ctx, CheckpointKey(head.Size), head.Checkpoint, p.until(p.o.Retention.Checkpoints)); err != nil {
		if errors.Is(err, objstore.ErrExists) {
			// The bucket holds another checkpoint of this size: not this
			// log's tree. Loud, and not skipped.
			p.o.Logger.Error("archive: the bucket holds another checkpoint of this size than the one signed here: a fork, or a database restored and re-signed",
				"key", CheckpointKey(head.Size), "size", head.Size)
		}
		return err
	}
	return p.setCursor(ctx, cursorCheckpoint, "checkpoint", head.Size)
}

// publishCosigned has head's checkpoint cosigned and, with the quorum,
// writes it to CosignedFile and publishes it.
func (p *Publisher) publishCosigned(ctx context.Context, head ledger.TreeHead) error {
	n, err := p.cursor(ctx, cursorCosigned)
	if err != nil {
		return err
	}
	if n >= head.Size && n != 0 {
		return nil
	}
	cosigned, err := p.o.Cosigner.Cosign(ctx, head.Checkpoint, head.Size)
	var qe *witness.QuorumError
	if errors.As(err, &qe) {
		return err
	}
	if err != nil {
		// The quorum holds; some witness failed (logged, counted).
		p.o.Logger.Warn("archive: a witness did not cosign; the quorum holds", "size", head.Size, "err", err)
	}
	if p.o.CosignedFile != "" {
		if err := ledger.WriteFileAtomic(p.o.CosignedFile, cosigned, 0o644); err != nil {
			return err
		}
	}
	if p.o.Bucket == nil {
		return p.setCursor(ctx, cursorCosigned, "cosigned", head.Size)
	}
	key := CheckpointKey(head.Size) + ".cosigned"
	if err := p.o.Bucket.Put(ctx, key, cosigned, p.until(p.o.Retention.Checkpoints)); err != nil {
		if !errors.Is(err, objstore.ErrExists) {
			return err
		}
		// Cosigned before (a retry after a crash): the published one
		// stands if it is this checkpoint's. The one published is the
		// key's oldest locked version, not a version put over it.
		old, gerr := p.published1(ctx, key)
		if gerr != nil || !bytes.HasPrefix(old, head.Checkpoint) {
			return err
		}
	}
	return p.setCursor(ctx, cursorCosigned, "cosigned", head.Size)
}

// publishAnchors publishes the anchors written since the cursor (anchor
// names sort by date).
func (p *Publisher) publishAnchors(ctx context.Context) error {
	last, err := p.o.Store.Publication(ctx, cursorAnchors)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(p.o.AnchorsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".checkpoint"); ok && name > last {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	until := p.until(p.o.Retention.Anchors)
	for _, name := range names {
		// The proof first: an anchor exists once its checkpoint does.
		for _, ext := range []string{".consistency", ".checkpoint"} {
			b, err := os.ReadFile(filepath.Join(p.o.AnchorsDir, name+ext))
			if errors.Is(err, os.ErrNotExist) && ext == ".consistency" {
				continue // the first anchor has no proof
			}
			if err != nil {
				return err
			}
			if err := p.o.Bucket.Put(ctx, "anchors/"+name+ext, b, until); err != nil {
				return err
			}
		}
		if err := p.o.Store.SetPublication(ctx, cursorAnchors, name); err != nil {
			return err
		}
	}
	return nil
}

// ErrNoBucket: the archive has no bucket configured.
var ErrNoBucket = errors.New("archive: no bucket configured")

// PublishBundle publishes a file of an evidence bundle (of export or
// incident export) as bundles/<name>, locked for the bundles' retention.
func (p *Publisher) PublishBundle(ctx context.Context, name string, data []byte) error {
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, "\\") {
		return fmt.Errorf("archive: bundle name %q: want a relative path such as 2026-12-01-incident/manifest.json", name)
	}
	if p.o.Bucket == nil {
		return ErrNoBucket
	}
	if err := p.o.Bucket.Put(ctx, "bundles/"+name, data, p.until(p.o.Retention.Bundles)); err != nil {
		p.failures.WithLabelValues("bundles").Inc()
		return err
	}
	return nil
}
