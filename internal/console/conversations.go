package console

import (
	"context"
	"encoding/json"

	"github.com/linegate/linegate/internal/handoff"
)

// Conversations is the handoff engine as the inbox uses it: the methods
// of *handoff.Service. Every change it makes (take over, hand back,
// resolve, reply, mark as read, typing) is recorded in the ledger naming
// the Actor, in the commit that makes it take effect; its errors are
// ErrNotFound, ErrNotHeld, ErrInvalid and ErrConflict where the caller
// must change something, anything else is the store or the ledger being
// unavailable. It is safe for concurrent use.
type Conversations interface {
	List(ctx context.Context, channels []string, states ...State) ([]Conversation, error)
	Get(ctx context.Context, channel, id string) (Conversation, error)
	History(ctx context.Context, channel, id string, limit int) ([]Message, error)
	TakeOver(ctx context.Context, a Actor, channel, id, reason string) error
	HandBack(ctx context.Context, a Actor, channel, id string) error
	Resolve(ctx context.Context, a Actor, channel, id string) error
	MarkRead(ctx context.Context, a Actor, channel, id string) error
	Typing(ctx context.Context, a Actor, channel, id string) error
	Reply(ctx context.Context, a Actor, channel, id string, messages []json.RawMessage) (ReplyResult, error)
}

var _ Conversations = (*handoff.Service)(nil)

// The handoff engine's types, as the inbox names them.
type (
	State        = handoff.State
	Conversation = handoff.Conversation
	Message      = handoff.Message
	Actor        = handoff.Actor
	ReplyResult  = handoff.ReplyResult
)

const (
	StateBot      = handoff.StateBot
	StateHuman    = handoff.StateHuman
	StateResolved = handoff.StateResolved
)

// The engine's sentinel errors.
var (
	ErrNotFound = handoff.ErrNotFound
	ErrNotHeld  = handoff.ErrNotHeld
	ErrInvalid  = handoff.ErrInvalid
	ErrConflict = handoff.ErrConflict
	ErrNotYours = handoff.ErrNotYours
	// ErrTypingTooSoon: the loading animation started moments ago.
	ErrTypingTooSoon = handoff.ErrTypingTooSoon
	// ErrLINE: LINE refused a send, recorded as failed; the error names
	// LINE's status.
	ErrLINE = handoff.ErrLINE
)
