package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
)

// The ledger is the queue.
//
// Without Options.Table, an event is not queued in a table row for each
// destination: its outcome record, committed by the pipeline, is the
// queue entry. Each destination keeps a cursor in the store: a ledger
// index such that every event whose outcome record comes before it has
// been delivered to the destination, dropped with a record, or moved into
// the store's queue table. The events after it are held in memory (the
// pipeline hands them over as it records their outcomes, Completed), and
// every record of a delivery commits the cursor that follows it. After a
// restart, or once the memory bound is reached, a destination reads the
// outcome records from its cursor on, as a consumer reads a log.
//
// The table holds only what must outlive the memory: the events of a
// conversation whose delivery failed (with their attempts and next try),
// those queued after them in that conversation, and replays. A
// conversation with entries in the table has all its later events moved
// there too, in order, until the destination's table is empty.
//
// So a destination that keeps up costs the pipeline's commits nothing,
// and the writer one setting per delivery request; a dead one costs
// nothing but its cursor standing still.

// defaultHold bounds the events a destination holds in memory (Options.Hold);
// beyond it, the destination reads them from the ledger once it has room
// again.
const defaultHold = 4096

// scanChunk is how many ledger records one read of a destination's
// backlog covers.
const scanChunk = 1024

// stream is a destination's events after its cursor, in cursor mode.
type stream struct {
	mu    sync.Mutex
	bound int      // Options.Hold
	ready bool     // init has run
	mem   []*Entry // in At order, none in the table
	// next: every event whose outcome record's index is below next is in
	// mem, done, or in the table.
	next uint64
	// behind: the events from next on are read from the ledger (after a
	// restart, or once mem was full); the pipeline's hand-overs are
	// dropped meanwhile, and dropped is one past the last index of those.
	behind  bool
	dropped uint64
	// queued: the conversations with entries in the table, each with the
	// largest At among them.
	queued map[string]uint64
	saved  uint64 // the cursor of the last commit that carried one
	// ahead: the At of the entries that left mem (delivered, dropped,
	// moved into the table) past the cursor, in order: what a crash now
	// would deliver again. spill bounds it to an eighth of bound.
	ahead []uint64
}

// cursorKey is the setting holding a destination's cursor.
func cursorKey(name string) string { return "fanout.cursor." + name }

// cursorEffect is the effect that sets the destination's cursor to at.
func (w *worker) cursorEffect(at uint64) ledger.Effect {
	return outbound.SetSetting{Key: cursorKey(w.d.Name), Value: strconv.FormatUint(at, 10)}
}

// inTable records that es went into the table with the cursor cur
// committed (s.mu held): their conversations' later events follow them
// there.
func (s *stream) inTable(es []*Entry, cur uint64) {
	for _, e := range es {
		s.queued[e.Conversation] = max(s.queued[e.Conversation], e.At)
	}
	s.saved = max(s.saved, cur)
}

// cursor returns the destination's cursor with the entries of batch
// taken as done (s.mu held).
func (s *stream) cursor(batch map[uint64]bool) uint64 {
	for _, e := range s.mem {
		if !batch[e.At] {
			return min(e.At, s.next)
		}
	}
	return s.next
}

// remove takes the entries ats out of mem, and keeps count of those past
// the cursor (s.mu held).
func (s *stream) remove(ats map[uint64]bool) {
	out := s.mem[:0]
	for _, e := range s.mem {
		if !ats[e.At] {
			out = append(out, e)
		}
	}
	clear(s.mem[len(out):])
	s.mem = out
	cur := s.cursor(nil)
	for at := range ats {
		if at > cur {
			s.ahead = append(s.ahead, at)
		}
	}
	slices.Sort(s.ahead)
	i, _ := slices.BinarySearch(s.ahead, cur)
	s.ahead = s.ahead[:copy(s.ahead, s.ahead[i:])]
}

// aheadLimit returns, when more than an eighth of bound of the events
// that left are past the cursor, the index below which held entries keep
// it there (their conversations are then moved into the table, so that
// it moves on); 0 when none need to (s.mu held).
func (s *stream) aheadLimit() uint64 {
	bound := max(1, s.bound/8)
	if len(s.ahead) <= bound {
		return 0
	}
	return s.ahead[len(s.ahead)-bound]
}

// push takes the entries of one outcome commit, whose records are
// [first, end): it reports whether they are now held.
func (s *stream) push(es []*Entry, first, end uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.ready || s.behind:
		s.dropped = max(s.dropped, end) // the scan reads them
		return false
	case first < s.next:
		return false // read by the scan already
	case len(s.mem)+len(es) > s.bound:
		s.behind, s.dropped = true, end
		return false
	}
	s.mem = append(s.mem, es...)
	s.next = end
	return len(es) > 0
}

// init reads the destination's cursor and what its table holds, and
// returns the setting to commit for a destination without a cursor yet
// (which starts at the ledger's end: the events before are in the table,
// or came before it existed).
func (w *worker) init(ctx context.Context) (ledger.Effect, error) {
	f, s := w.f, &w.s
	v, err := f.o.Store.Setting(ctx, cursorKey(w.d.Name))
	if err != nil {
		return nil, err
	}
	queued, err := f.o.Store.QueuedConversations(ctx, w.d.Name)
	if err != nil {
		return nil, err
	}
	var at uint64
	var effect ledger.Effect
	if v == "" {
		if at, err = f.o.Ledger.Count(ctx); err != nil {
			return nil, err
		}
		effect = w.cursorEffect(at)
	} else if at, err = strconv.ParseUint(v, 10, 64); err != nil {
		return nil, fmt.Errorf("destination %q: cursor %q: %w", w.d.Name, v, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Hand-overs that came before now are read from the ledger.
	s.ready, s.next, s.behind, s.queued, s.saved = true, at, true, queued, at
	return effect, nil
}

// Init reads each destination's cursor and commits a cursor for those
// that have none, once; Run does it if it has not been done. A gateway
// calls it before its pipeline starts: the events completed before it are
// read from the ledger from each cursor, and a new destination's cursor
// starts where the ledger ends when Init runs.
func (f *Fanout) Init(ctx context.Context) error {
	f.initMu.Lock()
	defer f.initMu.Unlock()
	if f.o.Table || f.inited {
		return nil
	}
	var effects []ledger.Effect
	for _, w := range f.order {
		e, err := w.init(ctx)
		if err != nil {
			return fmt.Errorf("fanout: %w", err)
		}
		if e != nil {
			effects = append(effects, e)
		}
	}
	if len(effects) > 0 {
		if _, err := f.o.Log.Commit(ctx, nil, effects...); err != nil {
			return fmt.Errorf("fanout: start the destinations' cursors: %w", err)
		}
	}
	f.inited = true
	return nil
}

// Completed takes the events whose outcome records the pipeline has just
// committed, items[i]'s at index first+i (pipeline.Options.Completed).
func (f *Fanout) Completed(items []*pipeline.Item, first uint64) {
	if f == nil || f.o.Table || len(f.order) == 0 {
		return
	}
	end := first + uint64(len(items))
	for _, w := range f.order {
		var es []*Entry
		for i, it := range items {
			if e := w.itemEntry(it); e != nil {
				e.At = first + uint64(i)
				es = append(es, e)
			}
		}
		if w.s.push(es, first, end) {
			w.handedOver()
		}
	}
}

// itemEntry returns the entry of a completed event for the destination,
// nil when its filters leave the event out.
func (w *worker) itemEntry(it *pipeline.Item) *Entry {
	e := w.entryOf(it.Index, it.Channel, it.Conversation, it.Key, it.Type, string(it.Outcome))
	if e != nil {
		e.Record, e.Retention, e.Subjects, e.ReceivedMs = it.Record, it.Retention, it.Subjects, it.ReceivedMs
	}
	return e
}

// entryOf returns the entry of an event for the destination, nil when its
// filters leave the event out (or it is no event: index < 0).
func (w *worker) entryOf(index int, channel, conversation, key, typ, outcome string) *Entry {
	if index < 0 || w.d.Channel != channel || !w.d.takes(typ, sourceType(conversation), outcome) {
		return nil
	}
	return &Entry{Destination: w.d.Name, Conversation: conversationKey(conversation, key),
		Channel: channel, Index: index, Key: key, Type: typ, Outcome: outcome}
}

// scan reads the next chunk of the destination's backlog from the ledger
// into memory, and reports whether there is more to read.
func (w *worker) scan(ctx context.Context) (more bool, err error) {
	f, s := w.f, &w.s
	s.mu.Lock()
	from, room := s.next, len(s.mem) <= s.bound/2
	s.mu.Unlock()
	if !room {
		return false, nil
	}
	end, err := f.o.Ledger.Count(ctx)
	if err != nil {
		return false, err
	}
	to := min(end, from+uint64(min(scanChunk, max(1, w.s.bound/2))))
	var es []*Entry
	for rec, err := range f.o.Ledger.Records(ctx, from, to) {
		if err != nil {
			return false, err
		}
		e, err := w.outcomeEntry(ctx, rec)
		if err != nil {
			return false, err
		}
		if e != nil {
			es = append(es, e)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		if top, ok := s.queued[e.Conversation]; ok && e.At <= top {
			continue // in the table already, or delivered before it
		}
		s.mem = append(s.mem, e)
	}
	s.next = to
	if to == end && s.dropped <= to {
		s.behind = false // what comes next is handed over
	}
	return s.behind, nil
}

// outcomeEntry returns the entry of an outcome record for the
// destination, nil for another record or an event it does not take.
// Records whose payload is gone (retention, a destroyed key) are skipped:
// nothing of them could be delivered.
func (w *worker) outcomeEntry(ctx context.Context, rec ledger.Record) (*Entry, error) {
	var l ledger.Leaf
	if l.UnmarshalBinary(rec.Leaf) != nil || l.Kind != ledger.KindEvent || l.Channel != w.d.Channel || rec.Payload == nil {
		return nil, nil
	}
	payload, err := ledger.OpenPayload(ctx, w.f.o.Sealer, rec)
	if errors.Is(err, ledger.ErrUnavailable) {
		return nil, err
	}
	if err != nil {
		return nil, nil
	}
	meta, body, err := record.Decode(record.KindEvent, payload)
	if err != nil {
		return nil, nil
	}
	o, ok := body.(*record.Outcome)
	if !ok {
		return nil, nil
	}
	e := w.entryOf(o.Index, meta.Channel, o.Conversation, o.Key, o.Type, o.Outcome)
	if e == nil {
		return nil, nil
	}
	e.Record, e.Retention, e.ReceivedMs, e.At = o.Record, l.Retention, o.ReceivedMs, rec.Index
	for _, k := range rec.Keys {
		e.Subjects = append(e.Subjects, k.Subject)
	}
	return e, nil
}

// spill moves into the table, in order, with the cursor past them, the
// held entries of the conversations that have entries there (s.queued),
// of those that keep the cursor behind more than an eighth of what the
// destination holds of events gone past it (a conversation slower than
// the others, or waiting for its turn in a backlog, as a crash would have
// those delivered again), or all of them.
func (w *worker) spill(ctx context.Context, all bool) error {
	s := &w.s
	s.mu.Lock()
	var es []*Entry
	ats := map[uint64]bool{}
	behind := map[string]bool{}
	if limit := s.aheadLimit(); limit > 0 {
		for _, e := range s.mem {
			if e.At >= limit {
				break
			}
			// Not one with held events in flight: a failure would
			// queue them after those moved now.
			if _, queued := s.queued[e.Conversation]; !queued && !w.inFlight(e.Conversation) {
				behind[e.Conversation] = true
			}
		}
	}
	for _, e := range s.mem {
		if _, ok := s.queued[e.Conversation]; ok || all || behind[e.Conversation] {
			es = append(es, e)
			ats[e.At] = true
		}
	}
	cur := s.cursor(ats)
	s.mu.Unlock()
	if len(es) == 0 {
		return nil
	}
	if _, err := w.f.o.Log.Commit(ctx, nil, Enqueue{Entries: es}, w.cursorEffect(cur)); err != nil {
		return err
	}
	s.mu.Lock()
	s.remove(ats)
	s.inTable(es, cur)
	s.mu.Unlock()
	return nil
}

// memHeads returns copies of the held entries a round looks at: up to
// perConversation of each of up to conversations conversations, in At
// order, of conversations without entries in the table.
func (s *stream) memHeads(conversations, perConversation int, skip map[string]bool) []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	pick := newHeadsPicker(conversations, perConversation)
	var out []*Entry
	for _, e := range s.mem {
		if _, ok := s.queued[e.Conversation]; ok || skip[e.Conversation] || !pick.Want(e.Conversation) {
			continue
		}
		c := *e
		c.mem = true
		out = append(out, &c)
	}
	return out
}

// queueEffects returns what a delivery's record commits for the held
// entries among es: the cursor with them done and, for a failed attempt,
// the entries moved into the table with their attempts (retry: the
// entries with Attempts and NextMs set). done is called once the commit
// succeeded.
func (w *worker) queueEffects(es []*Entry, retry []*Entry) (effects []ledger.Effect, done func()) {
	s := &w.s
	ats := map[uint64]bool{}
	for _, e := range es {
		if e.mem {
			ats[e.At] = true
		}
	}
	if len(ats) == 0 {
		return nil, func() {}
	}
	s.mu.Lock()
	cur := s.cursor(ats)
	s.mu.Unlock()
	if len(retry) > 0 {
		effects = append(effects, Enqueue{Entries: retry})
	}
	effects = append(effects, w.cursorEffect(cur))
	return effects, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.remove(ats)
		s.inTable(retry, cur)
	}
}

// saveCursor commits the cursor when it has moved past the one last
// committed (events the destination's filters leave out move it too), so
// that a restart reads the backlog from close behind.
func (w *worker) saveCursor(ctx context.Context) {
	s := &w.s
	s.mu.Lock()
	cur, saved, ready := s.cursor(nil), s.saved, s.ready
	s.mu.Unlock()
	if !ready || cur <= saved {
		return
	}
	if _, err := w.f.o.Log.Commit(ctx, nil, w.cursorEffect(cur)); err != nil {
		return // the next one
	}
	s.mu.Lock()
	s.saved = max(s.saved, cur)
	s.mu.Unlock()
}

// held returns the number of events held in memory, and whether the
// destination has a backlog to read from the ledger (from next), as it has
// until Init has read its cursor.
func (s *stream) held() (n int, behind bool, next uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mem), s.behind || !s.ready, s.next
}

// QueuedSet gathers, for Store.QueuedConversations, the conversations of a
// destination's queued entries with the largest At of each.
type QueuedSet struct{ m map[string]uint64 }

// NewQueuedSet returns an empty set.
func NewQueuedSet() *QueuedSet { return &QueuedSet{m: map[string]uint64{}} }

// Add adds a queued entry, its conversation and its JSON.
func (q *QueuedSet) Add(conversation string, entry []byte) error {
	var e struct {
		At uint64 `json:"at"`
	}
	if err := json.Unmarshal(entry, &e); err != nil {
		return fmt.Errorf("fan-out entry: %w", err)
	}
	q.m[conversation] = max(q.m[conversation], e.At)
	return nil
}

// Map returns the set.
func (q *QueuedSet) Map() map[string]uint64 { return q.m }
