package console

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Conversations is the handoff engine as the inbox uses it: the methods
// of *handoff.Service. Every change it makes (take over, hand back,
// resolve, reply, mark as read) is recorded in the ledger naming the
// Actor, in the commit that makes it take effect; its errors are
// ErrNotFound, ErrNotHeld and ErrInvalid where the caller must change
// something, anything else is the store or the ledger being unavailable.
// It is safe for concurrent use.
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

// State is a conversation's state.
type State string

const (
	StateBot      State = "bot"
	StateHuman    State = "human"
	StateResolved State = "resolved"
)

// Conversation is a conversation's state. ID is "user:U…", "group:C…" or
// "room:R…".
type Conversation struct {
	Channel   string
	ID        string
	State     State
	Agent     string
	Reason    string
	Since     time.Time
	LastEvent time.Time
	Waiting   int
}

// Message is one line of a conversation's history, decrypted.
type Message struct {
	Record  uint64
	At      time.Time
	From    string
	Type    string
	Text    string
	JSON    json.RawMessage
	Held    bool
	Outcome string
}

// Actor is the person acting.
type Actor struct{ Name, Role string }

// ReplyResult is what became of a reply.
type ReplyResult struct {
	Outcome   string
	Record    uint64
	RequestID string
	Via       string
}

// The engine's sentinel errors.
var (
	ErrNotFound = errors.New("conversation not found")
	ErrNotHeld  = errors.New("the conversation is not held by a person")
	ErrInvalid  = errors.New("invalid messages")
	ErrConflict = errors.New("the conversation changed meanwhile")
)
