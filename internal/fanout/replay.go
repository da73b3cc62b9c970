package fanout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// MaxReplay bounds the events one replay queues (they are queued in one
// commit): a larger range is refused, to be replayed in parts.
const MaxReplay = 100_000

// ReplayRequest asks for the events of the webhooks received in
// [From, To) on the destination's channel to be delivered again to the
// destination, marked as redeliveries.
type ReplayRequest struct {
	Destination string    `json:"destination"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	// Channel, if given, must be the destination's channel.
	Channel string `json:"channel,omitempty"`
	Reason  string `json:"reason,omitempty"`

	remote string // who asked, recorded with the request
}

// ReplayResult says what a replay queued.
type ReplayResult struct {
	Destination string `json:"destination"`
	Channel     string `json:"channel"`
	Webhooks    int    `json:"webhooks"` // webhook records in the range
	Events      int    `json:"events"`   // events queued
	Skipped     int    `json:"skipped"`  // events the destination's type and source filters leave out
	Unreadable  int    `json:"unreadable"`
	Admin       uint64 `json:"admin_record"` // the replay's admin record
}

// Replay queues again, for one destination, the recorded events of the
// webhooks its channel received in a time range (their receive time),
// read from the ledger and opened with their keys. The request is an
// admin record ("destination_replay"), committed with the queueing: each
// event is then delivered as any other, in order per conversation after
// what is queued already, with deliveryContext.isRedelivery set, and its
// attempts are recorded with Redelivery set.
//
// The destination's event type and source type filters apply; its
// outcome filter does not (a replay re-sends what was received). Webhook
// records whose payload was deleted are counted as unreadable.
//
// BUG: the range is found by reading every leaf of the log; an index of
// the records by time would make a replay of a short range cost less on
// a large log.
func (f *Fanout) Replay(ctx context.Context, req ReplayRequest) (ReplayResult, error) {
	w := f.byName[req.Destination]
	if w == nil {
		return ReplayResult{}, ErrUnknownDestination
	}
	d := w.d
	res := ReplayResult{Destination: d.Name, Channel: d.Channel}
	if req.Channel != "" && req.Channel != d.Channel {
		return res, &BadRequestError{fmt.Sprintf("destination %q belongs to channel %q, not %q", d.Name, d.Channel, req.Channel)}
	}
	if req.From.IsZero() || req.To.IsZero() || !req.From.Before(req.To) {
		return res, &BadRequestError{"want from and to (RFC 3339), from before to"}
	}
	count, err := f.o.Ledger.Count(ctx)
	if err != nil {
		return res, err
	}
	var idx []uint64
	var classes []string
	const chunk = 4096
	for start := uint64(0); start < count; start += chunk {
		end := min(count, start+chunk)
		leaves, err := f.o.Ledger.ReadLeaves(ctx, start, end)
		if err != nil {
			return res, fmt.Errorf("read leaves: %w", err)
		}
		for i, b := range leaves {
			var l ledger.Leaf
			if l.UnmarshalBinary(b) != nil || l.Kind != ledger.KindWebhook || l.Channel != d.Channel {
				continue
			}
			if l.Time.Before(req.From) || !l.Time.Before(req.To) {
				continue
			}
			idx = append(idx, start+uint64(i))
			classes = append(classes, l.Retention)
		}
	}
	res.Webhooks = len(idx)
	var entries []*Entry
	for n, i := range idx {
		for rec, err := range f.o.Ledger.Records(ctx, i, i+1) {
			if err != nil {
				return res, err
			}
			if rec.Payload == nil {
				res.Unreadable++
				continue
			}
			payload, err := ledger.OpenPayload(ctx, f.o.Sealer, rec)
			if errors.Is(err, ledger.ErrUnavailable) {
				return res, err
			}
			if err != nil {
				res.Unreadable++
				continue
			}
			meta, body, err := record.DecodePayload(payload)
			if err != nil {
				res.Unreadable++
				continue
			}
			cb, err := line.ParseCallback(body)
			if err != nil {
				res.Unreadable++
				continue
			}
			for j, raw := range cb.Events {
				e := line.DecodeEvent(raw)
				conv := e.Conversation()
				if !d.filters(e.Type, sourceType(conv)) {
					res.Skipped++
					continue
				}
				key := e.DedupKey()
				entries = append(entries, &Entry{Destination: d.Name, Conversation: conversationKey(conv, key),
					Channel: d.Channel, Record: i, Index: j, Key: key, Type: e.Type, Retention: classes[n],
					Subjects: e.Subjects(), ReceivedMs: meta.ReceivedMs, Redelivery: true})
				if len(entries) > MaxReplay {
					return res, &BadRequestError{fmt.Sprintf("more than %d events in the range: replay it in parts", MaxReplay)}
				}
			}
		}
	}
	res.Events = len(entries)
	detail := map[string]any{"destination": d.Name, "channel": d.Channel,
		"from": req.From.UTC().Format(time.RFC3339Nano), "to": req.To.UTC().Format(time.RFC3339Nano),
		"webhooks": res.Webhooks, "events": res.Events, "skipped": res.Skipped, "unreadable": res.Unreadable}
	if req.Reason != "" {
		detail["reason"] = req.Reason
	}
	if req.remote != "" {
		detail["remote"] = req.remote
	}
	var effects []ledger.Effect
	done := func() {}
	if len(entries) > 0 {
		if !f.o.Table {
			// The events held in memory of the replay's conversations go
			// into the table first, in the same commit: the replay comes
			// after what was queued before it, in each conversation. The
			// round waits meanwhile, so that none of them is in flight.
			w.roundMu.Lock()
			defer w.roundMu.Unlock()
			w.reqs.Wait() // none of the events moved is in flight
			if err := w.catchUp(ctx); err != nil {
				return res, err
			}
			var moved []*Entry
			moved, effects, done = w.moveForReplay(entries)
			entries = append(moved, entries...)
		}
		effects = append([]ledger.Effect{Enqueue{Entries: entries}}, effects...)
	}
	if res.Admin, err = outbound.RecordAdmin(ctx, f.o.Log, "destination_replay", detail, nil, f.o.Now(), effects...); err != nil {
		return res, err
	}
	done()
	w.kick()
	return res, nil
}

// catchUp reads the destination's backlog into memory, for a replay to
// come after it: ErrBacklog when it does not fit (roundMu held).
func (w *worker) catchUp(ctx context.Context) error {
	for {
		n, behind, next := w.s.held()
		if !behind {
			return nil
		}
		if n > w.s.bound/2 {
			return fmt.Errorf("%w: destination %q reads its events from ledger index %d on, more than it holds; replay once it has caught up (GET /admin/destinations: no backlog_from)",
				ErrBacklog, w.d.Name, next)
		}
		if _, err := w.scan(ctx); err != nil {
			return err
		}
	}
}

// moveForReplay returns the held entries of the conversations of a
// replay's entries, to be queued in the table before them, with the cursor
// past them; done records that they and the replay's are in the table
// (roundMu held).
func (w *worker) moveForReplay(replay []*Entry) (moved []*Entry, effects []ledger.Effect, done func()) {
	s := &w.s
	convs := map[string]bool{}
	for _, e := range replay {
		convs[e.Conversation] = true
	}
	s.mu.Lock()
	ats := map[uint64]bool{}
	for _, e := range s.mem {
		if convs[e.Conversation] {
			moved = append(moved, e)
			ats[e.At] = true
		}
	}
	cur := s.cursor(ats)
	s.mu.Unlock()
	return moved, []ledger.Effect{w.cursorEffect(cur)}, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.remove(ats)
		s.inTable(replay, cur) // At 0: the conversations only
		s.inTable(moved, cur)
	}
}
