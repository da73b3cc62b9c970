// Package ledger is linegate's tamper-evident record of everything the
// gateway received and sent.
//
// A record is a payload (the raw request, its headers and metadata) and a
// leaf in an RFC 6962 Merkle log. The leaf carries no personal data: a kind,
// a time, a channel, a retention class and a salted commitment
// SHA-256(nonce || payload). The log is published in the C2SP formats:
// tlog-checkpoint signed notes, tlog-tiles hash tiles and entry bundles.
//
// Appends are group-committed: concurrent callers of Append share one
// durable Store transaction, and Append returns only once its record is
// durable. A sequencer loop integrates appended records into tiles and a new
// signed tree head at a fixed interval. The Store contract is in store.go.
package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// metricPrefix begins the name of each of the package's metrics.
const metricPrefix = "linegate_"

// ErrPushback is returned by Append when the append queue is full. The
// caller should shed the request (HTTP 503) rather than wait.
var ErrPushback = errors.New("ledger: append queue full")

// ErrClosed is returned by Append after Close has begun.
var ErrClosed = errors.New("ledger: closed")

// Entry is what a caller appends.
type Entry struct {
	Kind      Kind
	Time      time.Time
	Channel   string
	Retention string
	Payload   []byte
	// Subjects are the LINE users, groups and rooms ("user:U...") whose
	// data the payload holds; the payload is sealed with their data keys.
	Subjects []string
}

// Options configures a Ledger. Zero values take the defaults noted.
type Options struct {
	// Origin is the checkpoint's origin line, and must equal the signer's
	// key name.
	Origin string
	// Signer signs checkpoints.
	Signer note.Signer
	// Verifier is the verifier key of Signer. New checks the stored tree
	// head's checkpoint, the published checkpoint file and the anchors
	// with it before it extends the tree.
	Verifier note.Verifier
	// QueueSize bounds the records waiting for a commit (default 8192).
	QueueSize int
	// MaxBatch bounds the records in one commit (default 1024).
	MaxBatch int
	// BackgroundWait is how long a background group (Background) waits
	// for another caller's group to ride with before it is committed on
	// its own, while others' groups come (default 10ms).
	BackgroundWait time.Duration
	// CheckpointInterval is how often the sequencer integrates and signs a
	// checkpoint when records are waiting (default 1s).
	CheckpointInterval time.Duration
	// MaxIntegrate bounds the records integrated in one Store transaction
	// (default 65536).
	MaxIntegrate int
	// CheckpointFile, if set, receives every new checkpoint as a file
	// (written to a temporary file, synced and renamed), after the Store
	// has committed it: a copy outside the database that verify compares
	// the database against, so that a database rolled back is noticed.
	CheckpointFile string
	// AnchorsDir, if set, is the directory of the anchors (WriteAnchor):
	// New refuses a stored tree that does not extend the latest of them.
	AnchorsDir string
	// Sealer, if set, encrypts every payload at rest (SealRecord).
	Sealer Sealer
	// Lease, if set, is asked before each integration: with several
	// processes on one store, only the holder integrates and signs; the
	// others follow the stored tree head. (Integrate is a compare-and-swap
	// either way: a stale holder can never publish a tree head
	// inconsistent with a newer one.)
	Lease Lease
	// Logger receives operational messages (default: discard).
	Logger *slog.Logger
}

// Ledger appends records to a Store and integrates them into the log.
type Ledger struct {
	store  Store
	w      *Writer // the one way into the log
	opts   Options
	log    *slog.Logger
	queue  chan *pending
	later  chan *pending // Background's groups
	mu     sync.RWMutex  // held for reading while enqueueing; Close takes it to refuse new appends
	closed bool

	stopWriter chan struct{}
	writerDone chan struct{}
	stopSeq    chan struct{}
	seqDone    chan struct{}
	kick       chan struct{}

	// Sequencer state, owned by the sequencer goroutine (and by Close once
	// the sequencer has stopped).
	head  TreeHead
	tiles map[[2]uint64][]byte
	// admitted holds the leaves of the records from head.Size on that
	// the sequencer has admitted (checked, as admit does) ahead of the
	// integration that signs them: preadmit spreads that work over the
	// interval instead of doing it all at the checkpoint.
	admitted [][]byte

	// sequencing is set when the sequencer integrated at its last round
	// (it held the Lease, or there is none): Sequencing.
	sequencing atomic.Bool

	refused  fault // a record the sequencer will not sign
	copies   recentCommitments
	ping     pinger // Ready's probes of the store
	pubHead  atomic.Pointer[TreeHead]
	pubTime  publishClock
	m        metrics
	closeErr error
	once     sync.Once

	// published is the tree head this ledger last published or followed
	// (sequencer state, as head): every later one must extend it. diverged
	// is set, for good, when one does not. acked are the published
	// checkpoints acknowledged lost (RollbackAck), read by New.
	published TreeHead
	diverged  fault
	acked     [][]byte
}

// Lease is a lease that one process at a time holds, such as a database
// advisory lock.
type Lease interface {
	// Held reports whether this process holds the lease now, taking it if
	// it is free.
	Held(ctx context.Context) bool
}

// pending is one caller's group in the writer's queue: an appended
// webhook, or a Commit's records and effects.
type pending struct {
	entries []Entry // sealed anew if a data key was destroyed meanwhile
	recs    []Record
	effects []Effect
	// background: from Background, which the writer does not commit
	// alone while others' groups are coming.
	background bool
	index      uint64 // of the first record
	err        error
	done       chan struct{}
}

type metrics struct {
	batchSize        prometheus.Histogram
	pushbacks        prometheus.Counter
	integrateLatency prometheus.Histogram
	treeSize         prometheus.Gauge
	pendingRecords   prometheus.Gauge
	integrateErrors  prometheus.Counter
	queueDepth       prometheus.GaugeFunc
}

// New opens a ledger over store. Before it extends the stored tree, it
// holds it to what was published (rollback.go): the tree head's checkpoint
// and the right-edge tiles, then the checkpoint file and the latest anchor,
// which the tree must extend unless a rollback acknowledgement in the store
// names them; an *InconsistentError says which it does not extend. It reads
// the tree head, the right edge and a consistency proof or two, so that
// start-up time does not depend on the size of the log. Call Start to begin
// appending.
func New(ctx context.Context, store Store, opts Options) (*Ledger, error) {
	if opts.Signer == nil {
		return nil, errors.New("ledger: no checkpoint signer")
	}
	if opts.Origin == "" || opts.Signer.Name() != opts.Origin {
		return nil, fmt.Errorf("ledger: checkpoint key name %q does not match origin %q", opts.Signer.Name(), opts.Origin)
	}
	if opts.Verifier == nil || opts.Verifier.Name() != opts.Signer.Name() || opts.Verifier.KeyHash() != opts.Signer.KeyHash() {
		return nil, errors.New("ledger: no checkpoint verifier of the signer's key")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 8192
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.BackgroundWait <= 0 {
		opts.BackgroundWait = 10 * time.Millisecond
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}
	if opts.MaxIntegrate <= 0 {
		opts.MaxIntegrate = 1 << 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	head, err := store.TreeHead(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: read tree head: %w", err)
	}
	l := &Ledger{
		store:      store,
		w:          NewWriter(store, opts.Sealer, opts.Logger),
		opts:       opts,
		log:        opts.Logger,
		queue:      make(chan *pending, opts.QueueSize),
		later:      make(chan *pending, opts.QueueSize),
		stopWriter: make(chan struct{}),
		writerDone: make(chan struct{}),
		stopSeq:    make(chan struct{}),
		seqDone:    make(chan struct{}),
		kick:       make(chan struct{}, 1),
		head:       head,
		published:  head,
	}
	if l.tiles, err = CheckHead(ctx, store, head, opts.Verifier, opts.Origin); err != nil {
		return nil, err
	}
	if l.acked, err = l.checkPublished(ctx, head); err != nil {
		return nil, err
	}
	l.pubHead.Store(&head)
	l.sequencing.Store(opts.Lease == nil)
	l.m = newMetrics(l)
	if head.Checkpoint == nil {
		// A new log: sign the empty tree, so that there is always a
		// checkpoint to serve and to be consistent with.
		if err := l.integrate(ctx); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func newMetrics(l *Ledger) metrics {
	return metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "ledger_append_batch_records",
			Help:    "Records per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		pushbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "ledger_pushback_total",
			Help: "Appends refused because the queue was full.",
		}),
		integrateLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "ledger_integrate_seconds",
			Help:    "Time to integrate appended records into tiles and sign a checkpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "ledger_tree_size",
			Help: "Size of the latest signed checkpoint.",
		}),
		pendingRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "ledger_unintegrated_records",
			Help: "Records appended but not yet integrated, at the last sequencing.",
		}),
		integrateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "ledger_integrate_errors_total",
			Help: "Integrations that failed: records waiting were not signed into the log (a refused record, or an error of the store or the signer); the sequencer tries again at the next interval.",
		}),
		queueDepth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricPrefix + "ledger_queue_depth",
			Help: "Records waiting for a group commit.",
		}, func() float64 { return float64(len(l.queue) + len(l.later)) }),
	}
}

// Collectors returns the ledger's metrics, for the caller's registry.
func (l *Ledger) Collectors() []prometheus.Collector {
	return append(l.w.Collectors(), l.m.batchSize, l.m.pushbacks,
		l.m.integrateLatency, l.m.treeSize, l.m.pendingRecords, l.m.integrateErrors, l.m.queueDepth, l.pubTime.gauge())
}

// Start starts the group-commit writer and the sequencer.
func (l *Ledger) Start() {
	l.m.treeSize.Set(float64(l.head.Size))
	go l.writer()
	go l.sequencer()
}

// Append records e and returns its index once it is durable. It returns
// ErrPushback at once when the queue is full, and ErrClosed after Close.
// If ctx ends first, Append returns ctx's error, and the record may or may
// not have been stored.
func (l *Ledger) Append(ctx context.Context, e Entry) (uint64, error) {
	rec, err := l.w.Seal(ctx, e)
	if err != nil {
		return 0, err
	}
	p := &pending{entries: []Entry{e}, recs: []Record{rec}, done: make(chan struct{})}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, ErrClosed
	}
	select {
	case l.queue <- p:
		l.mu.RUnlock()
	default:
		l.mu.RUnlock()
		l.m.pushbacks.Inc()
		return 0, ErrPushback
	}
	select {
	case <-p.done:
		return p.index, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Commit seals entries and appends them with effects, all or nothing, and
// returns the index of the first record: for records whose commit carries
// a change of state (an event's completion, a purge, an operator's
// switch). The group goes through the ledger's one writer, which commits
// it in the same transaction as the other callers' appends and groups,
// each group under a savepoint of its own: a refused effect (errors.Is
// ErrConflict, ErrNotFound, ...) takes back its own group and no other.
// Commit waits for room in the queue rather than pushing back: its
// callers are the gateway's own, not LINE. It returns ErrClosed after
// Close has begun; if ctx ends first, ctx's error, and the group may or
// may not have been committed.
func (l *Ledger) Commit(ctx context.Context, entries []Entry, effects ...Effect) (uint64, error) {
	return l.commitVia(ctx, l.queue, entries, effects)
}

// Background returns a committer of groups that no one waits on at once:
// the fan-out's delivery records and queue changes. Its Commit is
// Ledger.Commit's, but the writer does not start a commit for such
// groups alone while another caller's may come: they ride in the next
// commit of appends and other groups, up to BackgroundWait later, or go
// on their own once that has passed or a batch of them is waiting. A
// commit of its own is a sync of the store that an acknowledgement to
// LINE arriving meanwhile would wait behind; riding in one that happens
// anyway costs the records' writes alone. Groups of one committer keep
// their order.
func (l *Ledger) Background() *BackgroundCommitter { return &BackgroundCommitter{l: l} }

// BackgroundCommitter commits groups through the ledger's writer at a
// lower priority (Ledger.Background).
type BackgroundCommitter struct{ l *Ledger }

// Commit is Ledger.Commit, in the background: see Ledger.Background.
func (b *BackgroundCommitter) Commit(ctx context.Context, entries []Entry, effects ...Effect) (uint64, error) {
	return b.l.commitVia(ctx, b.l.later, entries, effects)
}

func (l *Ledger) commitVia(ctx context.Context, queue chan *pending, entries []Entry, effects []Effect) (uint64, error) {
	recs := make([]Record, len(entries))
	for i, e := range entries {
		var err error
		if recs[i], err = l.w.Seal(ctx, e); err != nil {
			return 0, err
		}
	}
	p := &pending{entries: entries, recs: recs, effects: effects, background: queue == l.later, done: make(chan struct{})}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, ErrClosed
	}
	select {
	case queue <- p:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return 0, ctx.Err()
	}
	select {
	case <-p.done:
		return p.index, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Writer returns the ledger's writer.
func (l *Ledger) Writer() *Writer { return l.w }

// NewRecord salts and commits to an entry's payload and builds its leaf,
// for a Store to append.
func NewRecord(e Entry) (Record, error) {
	nonce := NewNonce()
	leaf, err := Leaf{
		Kind:       e.Kind,
		Time:       e.Time,
		Channel:    e.Channel,
		Retention:  e.Retention,
		Commitment: Commit(nonce, e.Payload),
	}.MarshalBinary()
	if err != nil {
		return Record{}, err
	}
	return Record{Leaf: leaf, Nonce: nonce, Payload: e.Payload}, nil
}

// writer is the one writer: it takes whatever is queued, appends and
// groups with effects alike, up to MaxBatch records, and commits it in one
// Store transaction. While one commit runs, the next group gathers in the
// queue. Background groups ride in those commits. One that finds nothing
// else queued waits up to BackgroundWait for another caller's group, if
// one was committed within BackgroundWait; after a quiet spell it goes at
// once.
func (l *Ledger) writer() {
	defer close(l.writerDone)
	batch := make([]*pending, 0, l.opts.MaxBatch)
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	var last time.Time // of the last commit other than a background one's
	for {
		select {
		case p := <-l.queue:
			batch = append(batch[:0], p)
		case p := <-l.later:
			batch = append(batch[:0], p)
			if time.Since(last) < l.opts.BackgroundWait {
				// Others' groups are coming: wait for one to ride in.
				batch = l.await(batch, wait)
			}
		case <-l.stopWriter:
			// No more appends can be enqueued: drain what is there.
			for {
				select {
				case p := <-l.queue:
					batch = append(batch[:0], p)
				case p := <-l.later:
					batch = append(batch[:0], p)
				default:
					return
				}
				l.commit(l.fill(batch))
			}
		}
		batch = l.fill(batch)
		if slices.ContainsFunc(batch, func(p *pending) bool { return !p.background }) {
			last = time.Now()
		}
		l.commit(batch)
	}
}

// await gathers background groups behind batch's first until another
// caller's group comes, BackgroundWait passes, a quarter of MaxBatch is
// waiting, or the ledger closes.
func (l *Ledger) await(batch []*pending, wait *time.Timer) []*pending {
	n := len(batch[0].recs)
	wait.Reset(l.opts.BackgroundWait)
	defer wait.Stop()
	for n < l.opts.MaxBatch/4 {
		select {
		case p := <-l.queue:
			return slices.Insert(batch, 0, p) // the others' group first
		case p := <-l.later:
			batch = append(batch, p)
			n += max(1, len(p.recs))
		case <-wait.C:
			return batch
		case <-l.stopWriter:
			return batch
		}
	}
	return batch
}

// fill adds what is queued to batch, up to MaxBatch records: the other
// callers' groups first, then background ones (at most backgroundRide of
// them beside those callers', so that what an acknowledgement waits for
// stays a small commit).
func (l *Ledger) fill(batch []*pending) []*pending {
	n, bg := 0, 0
	for _, p := range batch {
		n += len(p.recs)
	}
	for n < l.opts.MaxBatch {
		select {
		case p := <-l.queue:
			batch = append(batch, p)
			n += len(p.recs)
			continue
		default:
		}
		if bg >= backgroundRide {
			break
		}
		select {
		case p := <-l.later:
			batch = append(batch, p)
			n += len(p.recs)
			bg++
			continue
		default:
		}
		break
	}
	return batch
}

// backgroundRide bounds the background groups fill adds to a commit.
const backgroundRide = 16

func (l *Ledger) commit(batch []*pending) {
	// The commit is not tied to any caller's context: a caller that gave up
	// must not abort the others' commit.
	ctx := context.Background()
	firsts, errs, err := l.w.appendGroups(ctx, groupsOf(batch))
	// A subject's key destroyed by another process (a shred from the CLI)
	// after this one cached it: the writer forgot its keys; the groups
	// refused for it are sealed anew, under new keys, and committed once
	// more.
	if errors.Is(err, ErrKeyDestroyed) {
		if err = l.reseal(batch); err == nil {
			firsts, errs, err = l.w.appendGroups(ctx, groupsOf(batch))
		}
	} else if err == nil {
		var again []int
		for i := range batch {
			if errors.Is(errs[i], ErrKeyDestroyed) {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			sub := make([]*pending, len(again))
			for k, i := range again {
				sub[k] = batch[i]
			}
			f2, e2, err2 := firsts, errs, l.reseal(sub)
			if err2 == nil {
				f2, e2, err2 = l.w.appendGroups(ctx, groupsOf(sub))
			}
			for k, i := range again {
				if err2 != nil {
					errs[i] = err2
				} else {
					firsts[i], errs[i] = f2[k], e2[k]
				}
			}
		}
	}
	n := 0
	for _, p := range batch {
		n += len(p.recs)
	}
	l.m.batchSize.Observe(float64(n))
	if err != nil {
		l.log.Error("ledger append failed", "records", n, "err", err)
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.index, p.err = firsts[i], errs[i]
		}
		close(p.done)
	}
	runtime.Gosched()
}

func groupsOf(batch []*pending) []Group {
	groups := make([]Group, len(batch))
	for i, p := range batch {
		groups[i] = Group{Records: p.recs, Effects: p.effects}
	}
	return groups
}

// reseal seals the entries of groups again.
func (l *Ledger) reseal(batch []*pending) error {
	for _, p := range batch {
		for i, e := range p.entries {
			rec, err := l.w.Seal(context.Background(), e)
			if err != nil {
				return err
			}
			p.recs[i] = rec
		}
	}
	return nil
}

// preadmitSlices is how many times an interval the sequencer admits the
// records appended since it last did (preadmit), no more often than
// every preadmitMin.
const (
	preadmitSlices = 20
	preadmitMin    = 10 * time.Millisecond
	// preadmitChunk bounds the records one slice admits, and so how long
	// it runs.
	preadmitChunk = 1024
)

// sequencer integrates appended records at every CheckpointInterval, and
// admits them as they come in between (preadmit).
func (l *Ledger) sequencer() {
	defer close(l.seqDone)
	t := time.NewTicker(l.opts.CheckpointInterval)
	defer t.Stop()
	var pre <-chan time.Time
	if every := max(l.opts.CheckpointInterval/preadmitSlices, preadmitMin); every < l.opts.CheckpointInterval {
		pt := time.NewTicker(every)
		defer pt.Stop()
		pre = pt.C
	}
	for {
		select {
		case <-t.C:
		case <-l.kick:
		case <-pre:
			// Only while this ledger sequences (as at its last
			// integration): the lease is asked at the integrations.
			if l.sequencing.Load() {
				l.preadmit(context.Background())
			}
			continue
		case <-l.stopSeq:
			return
		}
		ctx := context.Background()
		held := l.opts.Lease == nil || l.opts.Lease.Held(ctx)
		l.sequencing.Store(held)
		if !held {
			if err := l.follow(ctx); err != nil {
				l.log.Error("ledger: read the tree head", "err", err)
			}
			continue
		}
		if err := l.integrate(ctx); err != nil {
			l.m.integrateErrors.Inc()
			l.log.Error("ledger integration failed", "err", err)
		}
	}
}

// preadmit admits, ahead of the next integration, the records appended
// since the last records admitted, up to preadmitChunk of them and no
// further than the next integration takes (MaxIntegrate). The
// integration signs the leaves admitted here, as it would the ones it
// reads itself: what is signed is what was checked. A record refused
// stops the sequencer as at an integration (Ready reports it at once);
// any other error is left to the next integration, which tries again and
// reports it.
func (l *Ledger) preadmit(ctx context.Context) {
	if l.refused.get() != nil || l.diverged.get() != nil {
		return
	}
	n, err := l.store.Count(ctx)
	if err != nil {
		return
	}
	from := l.head.Size + uint64(len(l.admitted))
	to := min(n, l.head.Size+uint64(l.opts.MaxIntegrate), from+preadmitChunk)
	if to <= from {
		return
	}
	leaves, err := l.admit(ctx, from, to)
	if errors.Is(err, ErrRefused) {
		l.refused.set(err)
	}
	if err != nil {
		return
	}
	l.admitted = append(l.admitted, leaves...)
}

// forgetAdmitted drops what preadmit admitted, when the tree head moved
// under the sequencer (another sequencer integrated): the records are
// admitted again from the new head, and the commitments remembered
// against copies are read again from the store.
func (l *Ledger) forgetAdmitted() {
	l.admitted = nil
	l.copies.loaded = false
}

// follow publishes the stored tree head, which another process integrated.
func (l *Ledger) follow(ctx context.Context) error {
	head, err := l.store.TreeHead(ctx)
	if err != nil {
		return err
	}
	if head.Size == l.head.Size && head.Hash == l.head.Hash {
		return nil
	}
	if err := l.admitHead(ctx, head); err != nil {
		return err
	}
	clear(l.tiles)
	l.forgetAdmitted()
	l.head = head
	l.pubHead.Store(&head)
	l.m.treeSize.Set(float64(head.Size))
	if err := l.publish(head.Checkpoint); err != nil {
		l.log.Error("ledger: write checkpoint file", "err", err)
	}
	return nil
}

// Sync integrates every record appended so far and publishes a checkpoint,
// without waiting for the next interval. It must not be called after
// Close. It is meant for tests and tools that need a checkpoint now.
func (l *Ledger) Sync(ctx context.Context) (TreeHead, error) {
	for {
		n, err := l.store.Count(ctx)
		if err != nil {
			return TreeHead{}, err
		}
		h := l.Head()
		if h.Size >= n {
			return h, nil
		}
		select {
		case l.kick <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return TreeHead{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Busy reports whether appends are waiting for a group commit.
func (l *Ledger) Busy() bool { return len(l.queue) > 0 }

// Sequencing reports whether this ledger integrated the log at the
// sequencer's last round: always without a Lease; with one, when it held
// it then. Among replicas, the one sequencing also does the log's other
// periodic work (anchors, purges), without asking the lease again.
func (l *Ledger) Sequencing() bool { return l.sequencing.Load() }

// Head returns the latest tree head this ledger has published.
func (l *Ledger) Head() TreeHead { return *l.pubHead.Load() }

// Ready reports whether the ledger can take appends: it is not closed, it
// has not stopped signing (a record it refused, a stored tree that does not
// extend what it published), and the store takes a write.
func (l *Ledger) Ready(ctx context.Context) error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := l.refused.get(); err != nil {
		return err
	}
	if err := l.diverged.get(); err != nil {
		return err
	}
	return l.ping.check(ctx, l.store)
}

// pingEvery is how often Ready writes to the store: a probe is a synced
// write, and a readiness endpoint polled in a loop must not become a load
// of its own beside the webhooks.
const pingEvery = time.Second

// pinger runs Store.Ping at most once per pingEvery; the callers between
// two probes share the last answer.
type pinger struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

func (p *pinger) check(ctx context.Context, s Store) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at.IsZero() || time.Since(p.at) >= pingEvery {
		p.err = s.Ping(ctx)
		p.at = time.Now()
	}
	if p.err != nil {
		return fmt.Errorf("ledger: store not writable: %w", p.err)
	}
	return nil
}

// Close stops taking appends, commits everything queued, integrates it,
// and publishes a final checkpoint. It does not close the Store.
func (l *Ledger) Close(ctx context.Context) error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stopWriter)
		<-l.writerDone
		close(l.stopSeq)
		<-l.seqDone
		if l.opts.Lease != nil && !l.opts.Lease.Held(ctx) {
			l.closeErr = l.follow(ctx) // the holder integrates what this one appended
			return
		}
		l.closeErr = l.integrate(ctx)
	})
	return l.closeErr
}

// integrate sequences the records appended before it was called into the
// log, MaxIntegrate at a time, and publishes the resulting checkpoint.
// Records appended meanwhile wait for the next interval: chasing them would
// keep the store's write lock busy and delay the appends themselves.
func (l *Ledger) integrate(ctx context.Context) error {
	if err := l.diverged.get(); err != nil {
		return err
	}
	n, err := l.store.Count(ctx)
	if err != nil {
		return fmt.Errorf("ledger: count records: %w", err)
	}
	for {
		l.m.pendingRecords.Set(float64(n - min(n, l.head.Size)))
		if n <= l.head.Size && l.head.Checkpoint != nil {
			return nil
		}
		end := max(l.head.Size, min(n, l.head.Size+uint64(l.opts.MaxIntegrate)))
		start := time.Now()
		err = l.integrateTo(ctx, end)
		if errors.Is(err, ErrConflict) {
			// Another sequencer moved the tree: start again from its head.
			clear(l.tiles)
			l.forgetAdmitted()
			if l.head, err = l.store.TreeHead(ctx); err != nil {
				return fmt.Errorf("ledger: reload tree head: %w", err)
			}
			if err := l.admitHead(ctx, l.head); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		l.m.integrateLatency.Observe(time.Since(start).Seconds())
		l.m.treeSize.Set(float64(l.head.Size))
	}
}

func (l *Ledger) integrateTo(ctx context.Context, end uint64) error {
	old := l.head
	var leaves [][]byte
	if end > old.Size {
		// What preadmit has not admitted yet is admitted now.
		if from := old.Size + uint64(len(l.admitted)); from < end {
			more, err := l.admit(ctx, from, end)
			if err != nil {
				if errors.Is(err, ErrRefused) {
					l.refused.set(err)
				}
				return err
			}
			l.admitted = append(l.admitted, more...)
		}
		leaves = l.admitted[:end-old.Size]
	}
	tb := &tileBuilder{old: &hashReader{ctx: ctx, store: l.store, tiles: l.tiles}, base: tlog.StoredHashIndex(0, int64(old.Size))}
	for i, leaf := range leaves {
		hs, err := tlog.StoredHashesForRecordHash(int64(old.Size)+int64(i), tlog.RecordHash(leaf), tb)
		if err != nil {
			return fmt.Errorf("ledger: hash record %d: %w", old.Size+uint64(i), err)
		}
		tb.hashes = append(tb.hashes, hs...)
	}
	var tiles []Tile
	for _, t := range tlog.NewTiles(TileHeight, int64(old.Size), int64(end)) {
		data, err := tlog.ReadTileData(t, tb)
		if err != nil {
			return fmt.Errorf("ledger: build tile %d/%d: %w", t.L, t.N, err)
		}
		tiles = append(tiles, Tile{Level: uint64(t.L), Index: uint64(t.N), Data: data})
	}
	root, err := tlog.TreeHash(int64(end), tb)
	if err != nil {
		return fmt.Errorf("ledger: tree hash: %w", err)
	}
	// Crash ordering: nothing is signed that does not extend what was
	// published; the tree head is swapped, then the checkpoint published.
	if err := l.holdsTo(tb, TreeHead{Size: end, Hash: root}); err != nil {
		return err
	}
	cp, err := l.sign(end, root)
	if err != nil {
		return err
	}
	head := TreeHead{Size: end, Hash: root, Checkpoint: cp}
	if err := l.store.Integrate(ctx, old, head, tiles); err != nil {
		return fmt.Errorf("ledger: integrate [%d, %d): %w", old.Size, end, err)
	}
	l.head, l.published = head, head
	l.admitted = slices.Clone(l.admitted[len(leaves):])
	for _, t := range tiles {
		l.tiles[[2]uint64{t.Level, t.Index}] = t.Data
		if t.Index >= 2 { // keep the right edge only
			delete(l.tiles, [2]uint64{t.Level, t.Index - 2})
		}
	}
	l.pubHead.Store(&head)
	if err := l.publish(cp); err != nil {
		// The database holds the checkpoint; the file copy lags until the
		// next one. Verify tolerates a lagging file, not a leading one.
		l.log.Error("ledger: write checkpoint file", "err", err)
	}
	return nil
}

// sign returns a C2SP tlog-checkpoint signed note for the tree.
func (l *Ledger) sign(size uint64, root tlog.Hash) ([]byte, error) {
	text := FormatCheckpoint(l.opts.Origin, size, root)
	cp, err := note.Sign(&note.Note{Text: text}, l.opts.Signer)
	if err != nil {
		return nil, fmt.Errorf("ledger: sign checkpoint: %w", err)
	}
	return cp, nil
}

// publish writes the checkpoint file: a temporary file, synced, renamed over
// the old one, then the directory synced, so that a crash leaves either
// the old or the new checkpoint.
func (l *Ledger) publish(cp []byte) error {
	l.pubTime.now()
	if l.opts.CheckpointFile == "" {
		return nil
	}
	return WriteFileAtomic(l.opts.CheckpointFile, cp, 0o644)
}

// WriteFileAtomic writes data to path via a synced temporary file and a
// rename, then syncs the directory: a crash leaves the old file or the
// new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeSynced(path, data, perm, os.Rename)
}

// WriteNewFile creates the file path with data and mode perm, whatever the
// umask, and fails (with an error matching fs.ErrExist) if path exists: for
// keys, which are never overwritten. A crash leaves no file, or all of it:
// the data goes to a synced temporary file in the same directory, which is
// linked to path (a link, unlike a rename, fails if path exists) and
// removed; the directory is synced last, so that the new name is durable.
func WriteNewFile(path string, data []byte, perm os.FileMode) error {
	return writeSynced(path, data, perm, func(tmp, path string) error {
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		return os.Remove(tmp)
	})
}

// writeSynced writes data to a synced temporary file beside path, puts it
// in place with place, and syncs the directory.
func writeSynced(path string, data []byte, perm os.FileMode, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := place(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tileBuilder is the tlog.HashReader of one integration: stored hashes at
// or after base are the ones computed in this integration; earlier ones come
// from tiles, cached at the right edge of the tree or read from the Store.
type tileBuilder struct {
	old    *hashReader // hashes before base, from the right-edge tiles
	base   int64
	hashes []tlog.Hash
	// memo keeps hashes older than base once derived: every leaf of an
	// integration asks for the same left frontier, and a hash inside a
	// tile costs up to 255 SHA-256 to derive from it.
	memo map[int64]tlog.Hash
}

func (tb *tileBuilder) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx >= tb.base {
			j := idx - tb.base
			if j >= int64(len(tb.hashes)) {
				return nil, fmt.Errorf("hash %d not computed yet", idx)
			}
			out[i] = tb.hashes[j]
			continue
		}
		if h, ok := tb.memo[idx]; ok {
			out[i] = h
			continue
		}
		h, err := tb.old.hash(idx)
		if err != nil {
			return nil, err
		}
		if tb.memo == nil {
			tb.memo = make(map[int64]tlog.Hash)
		}
		tb.memo[idx] = h
		out[i] = h
	}
	return out, nil
}

// FormatCheckpoint returns the body of a C2SP tlog-checkpoint.
func FormatCheckpoint(origin string, size uint64, root [sha256.Size]byte) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, tlog.Hash(root).String())
}
