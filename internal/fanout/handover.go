package fanout

import (
	"encoding/json"
	"sync"
	"time"
)

// The hand-over's bounds: the events it holds, their bytes, and how long
// one is kept. A live destination takes its events within milliseconds;
// one that is slow, paused or dead reads them from the ledger later, as
// after a restart.
const (
	handoverEvents = 8192
	handoverBytes  = 16 << 20
	handoverAge    = 2 * time.Second
)

// handover keeps the events the pipeline has just completed and queued,
// as it had them in hand, until each destination that queued one has
// taken it: a worker then builds its request without reading the webhook
// record back from the store and opening it (a read, a decryption and a
// parse per event, on the cores the acknowledgements to LINE need).
//
// It holds only what the ledger holds, until handoverAge after the event's
// webhook was received (not after the pipeline completed it: its rules may
// have taken long): an event whose payload is deleted or shredded later
// than that is dropped at delivery as before (worker.load); within it, it
// is delivered as it would have been a moment earlier. Memory is bounded
// by handoverEvents and handoverBytes; the oldest go first.
type handover struct {
	mu    sync.Mutex
	m     map[eventRef]*handed
	fifo  []eventRef // in the order put, for the bounds; may name taken ones
	head  int
	bytes int
	now   func() time.Time
}

type eventRef struct {
	record uint64
	index  int
}

type handed struct {
	dest  string // the body's destination: the bot's user id
	event json.RawMessage
	at    time.Time // when its webhook was received
	left  int       // destinations that queued it and have not taken it
}

func newHandover(now func() time.Time) *handover {
	return &handover{m: map[eventRef]*handed{}, now: now}
}

// put hands over an event received at received and queued for n
// destinations.
func (h *handover) put(record uint64, index int, dest string, event json.RawMessage, n int, received time.Time) {
	if h == nil || n <= 0 || len(event) == 0 || len(event) > handoverBytes/64 || h.now().Sub(received) > handoverAge {
		return
	}
	ref := eventRef{record, index}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.m[ref]; ok {
		h.bytes -= len(old.event)
	} else {
		h.fifo = append(h.fifo, ref)
	}
	h.m[ref] = &handed{dest: dest, event: event, at: received, left: n}
	h.bytes += len(event)
	h.evict()
}

// take returns the event of record and index for one of the destinations
// that queued it, if it is still held.
func (h *handover) take(record uint64, index int) (string, json.RawMessage, bool) {
	if h == nil {
		return "", nil, false
	}
	ref := eventRef{record, index}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[ref]
	if !ok {
		return "", nil, false
	}
	if h.now().Sub(e.at) > handoverAge {
		h.drop(ref, e)
		return "", nil, false
	}
	if e.left--; e.left <= 0 {
		h.drop(ref, e)
	}
	return e.dest, e.event, true
}

// drop forgets a held event (h.mu held).
func (h *handover) drop(ref eventRef, e *handed) {
	delete(h.m, ref)
	h.bytes -= len(e.event)
}

// evict forgets the oldest events beyond the bounds or the age, and
// compacts the order (h.mu held).
func (h *handover) evict() {
	now := h.now()
	for h.head < len(h.fifo) {
		ref := h.fifo[h.head]
		e, ok := h.m[ref]
		if ok && len(h.m) <= handoverEvents && h.bytes <= handoverBytes && now.Sub(e.at) <= handoverAge {
			break
		}
		if ok {
			h.drop(ref, e)
		}
		h.head++
	}
	if h.head > 1024 && h.head*2 > len(h.fifo) {
		h.fifo = append(h.fifo[:0], h.fifo[h.head:]...)
		h.head = 0
	}
}
