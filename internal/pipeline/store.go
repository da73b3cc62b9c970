package pipeline

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
)

// Item is one webhook event in the pipeline's queue.
type Item struct {
	Seq          uint64   `json:"-"`           // queue order, assigned by Enqueue
	Key          string   `json:"key"`         // dedup key: webhookEventId, or a content hash
	MessageKey   string   `json:"message_key"` // "msg:<message id>" for message events
	Record       uint64   `json:"record"`      // the ledger record of the webhook request
	Index        int      `json:"index"`       // the event's position in the request
	Channel      string   `json:"channel"`
	Destination  string   `json:"destination,omitempty"` // the bot's user id, from the request
	Retention    string   `json:"retention,omitempty"`
	Conversation string   `json:"conversation,omitempty"`
	Subjects     []string `json:"subjects,omitempty"` // whose data the event holds (line.Event.Subjects)
	Type         string   `json:"type"`
	ReceivedMs   int64    `json:"received_ms"`
	// DelayMs is 1 + LINE's delivery delay (receipt minus the event's
	// timestamp, at least 0) of a first delivery; 0 when not known.
	DelayMs int64   `json:"delay_ms,omitempty"`
	Outcome Outcome `json:"outcome"`
	Reason  string  `json:"reason,omitempty"`
	// Flags name a kind and, most, a field: "drift:message.foo",
	// "legacy:webhookEventId", "malformed:destination",
	// "foreign:destination", "clock_skew:timestamp"; and
	// "duplicate_message_id", "dry_run".
	Flags []string `json:"flags,omitempty"`
	// Event is the event's raw JSON. It is not stored in the queue: the
	// ledger record holds it, and Pending callers read it from there.
	Event json.RawMessage `json:"-"`
	// Header carries request headers the actions may need (such as
	// X-Line-Dry-Run), never secrets.
	Header map[string]string `json:"header,omitempty"`

	ev *line.Event // decoded at dispatch, for the worker
}

// Dedup applies the dedup memory to the item, as Store.Enqueue must:
// claim claims a key and reports whether it was new; seen reports whether
// a key was claimed before. An item whose Key was claimed before in its
// channel is a duplicate; one whose MessageKey was gets the flag
// "duplicate_message_id".
//
// The memory is per channel (ChannelKey): the same event reaches a module
// channel and its primary channel, or a standby channel, with the same
// webhookEventId, and each channel handles it. Keys claimed before the
// memory was per channel are the bare Key, of no known channel: an item
// whose Key seen finds is a duplicate too, until ForgetKeys forgets those
// keys, a dedup horizon after the upgrade. seen may be nil where no such
// key can be.
func (it *Item) Dedup(claim, seen func(key string) (bool, error)) error {
	fresh, err := claim(it.ChannelKey())
	if err != nil {
		return err
	}
	if fresh && seen != nil {
		old, err := seen(it.Key)
		if err != nil {
			return err
		}
		fresh = !old
	}
	if !fresh {
		kind := "content"
		if strings.HasPrefix(it.Key, "id:") {
			kind = "webhookEventId"
		}
		it.Outcome, it.Reason = OutcomeDuplicate, "event already received (same "+kind+")"
		return nil
	}
	if it.MessageKey == "" {
		return nil
	}
	if fresh, err = claim(it.MessageKey); err != nil {
		return err
	}
	if !fresh {
		it.Flags = append(it.Flags, "duplicate_message_id")
	}
	return nil
}

// ChannelKey is the item's key in the dedup memory: its Key within its
// channel, "ev:<channel>:<Key>" (channel ids have no colon).
func (it *Item) ChannelKey() string { return "ev:" + it.Channel + ":" + it.Key }

// Dequeue is the effect of an event's outcome record: the queued items
// Seqs are removed, in the transaction that appends their outcomes. With
// Owner set (replicas sharing the queue), the items must all be claimed by
// Owner, or the append fails with ledger.ErrConflict and nothing is
// written: another process took them over and records them.
type Dequeue struct {
	Seqs  []uint64
	Owner string
}

// EffectName implements ledger.Effect.
func (Dequeue) EffectName() string { return "dequeue events" }

// Enqueue is the effect that moves webhook records into the queue, as
// Store.Enqueue describes: the cursor moves to Next (only forward: a
// second dispatcher that read the same cursor gets ledger.ErrConflict),
// each item's keys are claimed in the dedup memory (Item.Dedup), and the
// items are queued and assigned Seq. Committed through the ledger's one
// writer, it shares a transaction with the webhooks being acknowledged
// instead of queueing for the write lock beside them.
type Enqueue struct {
	Next  uint64
	Items []*Item
	Now   time.Time
}

// EffectName implements ledger.Effect.
func (Enqueue) EffectName() string { return "queue events" }

// Committer appends outcome records with the effects that commit with them
// (ledger.Ledger).
type Committer interface {
	Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error)
}

// Outcome is what became of an event.
type Outcome string

// The outcomes.
const (
	OutcomeProcess     Outcome = "process"      // queued for the actions
	OutcomeProcessed   Outcome = "processed"    // the actions ran
	OutcomeFailed      Outcome = "failed"       // an action failed; the reason says how
	OutcomeDuplicate   Outcome = "duplicate"    // already seen: not processed again
	OutcomeQuarantined Outcome = "quarantined"  // malformed, or drift under the strict policy
	OutcomeUnknown     Outcome = "unknown"      // a type the specification does not have: kept
	OutcomeStandby     Outcome = "standby"      // mode standby: recorded, never answered
	OutcomeUnknownMode Outcome = "unknown_mode" // a mode neither active nor standby: recorded, never answered
	OutcomeForeign     Outcome = "foreign"      // the destination names another bot: recorded, never answered
	OutcomeHeld        Outcome = "held"         // older than the dedup horizon, or clock skew on a channel that holds it: not acted on
	OutcomeDummy       Outcome = "dummy"        // the console's old Verify dummies: never answered
	// OutcomeHeldForHuman is set by an action: a person owns the
	// conversation, so no rule answered the event (internal/handoff).
	OutcomeHeldForHuman Outcome = "held_for_human"
)

// Store is the pipeline's durable state: a cursor over the ledger, the
// dedup memory and the queue of events between dispatch and completion. It
// is declared here, by its consumer; the SQLite store implements it in
// the same database as the ledger, so that completing an event and
// recording its outcome are one transaction.
//
// Every method is a transaction of its own and safe for concurrent use.
type Store interface {
	// Cursor returns the index of the next ledger record to dispatch.
	Cursor(ctx context.Context) (uint64, error)

	// Enqueue, in one transaction, claims each item's Key in its channel
	// (and MessageKey, if set) in the dedup memory, queues the items, and
	// sets the cursor to next, applying Item.Dedup. An item whose Key was
	// already claimed in its channel (or before the memory was per
	// channel) is queued with Outcome OutcomeDuplicate; one whose
	// MessageKey was already claimed gets the flag
	// "duplicate_message_id". Items are assigned Seq.
	// When Enqueue returns nil, all of this is durable.
	Enqueue(ctx context.Context, next uint64, items []*Item, now time.Time) error

	// Pending returns up to limit queued items with Seq > after, in Seq
	// order.
	Pending(ctx context.Context, after uint64, limit int) ([]*Item, error)

	// ForgetKeys deletes the dedup keys claimed before t, and returns how
	// many.
	ForgetKeys(ctx context.Context, before time.Time) (int64, error)

	// QueueDepth returns the number of queued items.
	QueueDepth(ctx context.Context) (int64, error)
}
