package outbound

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// ReplyTokens is the process's one registry of reply tokens: the event
// each came with (noted as the pipeline sees it, so that a tool's reply
// through the proxy is recorded under its conversation), and the send that
// has claimed it. A reply token is single use, and three kinds of sender
// may hold one: linegate's rules (through Sender), a person (the handoff,
// through Sender) and a tool (the proxy). Each claims the token before its
// call; the one that does not get it pushes instead (the Sender), or is
// refused (the proxy), rather than spending a call LINE will refuse.
//
// A claim is the process's: gateway replicas each keep their own, and a
// token another replica spent is known once its record is written (the
// handoff reads it) or by LINE's refusal. Safe for concurrent use.
type ReplyTokens struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[tokenKey]*tokenEntry
	// fifo holds the keys in the order their entries were made or last
	// claimed, each with the expiry it had then: the TTL is one for all,
	// so the front is always the first to expire. An entry claimed again
	// later is found again further back; its stale place is skipped.
	fifo []fifoItem
	head int
}

// tokenKey is a token's place: its channel and its SHA-256, so that an
// entry holds a few bytes whatever a caller sent as a token (the proxy
// takes tokens from tools, of any length).
type tokenKey struct {
	channel string
	token   [sha256.Size]byte
}

func keyOf(channel, token string) tokenKey {
	return tokenKey{channel, sha256.Sum256([]byte(token))}
}

type tokenEntry struct {
	event    TokenEvent
	hasEvent bool
	// holder names the send that claimed the token (for the records of
	// the others); claim tells that send apart, so that a retry of the
	// same send may use it again, as it would have without the registry.
	holder, claim string
	expires       time.Time
}

type fifoItem struct {
	k       tokenKey
	expires time.Time
}

// TokenEvent is the event a reply token came with.
type TokenEvent struct {
	EventKey string
	Record   uint64 // the webhook record's index
	Subjects []string
}

// maxReplyTokens bounds the tokens remembered: at LINE's default rate
// limit (2,000 calls a second) with the default TTL, about 240,000 would
// be live; past the bound the oldest are forgotten first.
const maxReplyTokens = 250_000

// NewReplyTokens returns a registry that forgets a token ttl after it was
// noted or last claimed (default 2 minutes: LINE's reply tokens live about
// a minute).
func NewReplyTokens(ttl time.Duration) *ReplyTokens {
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	return &ReplyTokens{ttl: ttl, max: maxReplyTokens, now: time.Now, m: map[tokenKey]*tokenEntry{}}
}

// entry returns the token's live entry, making one if make is set (nil
// otherwise), and whether it made it: the caller then sets its life
// (touch). It prunes what expired. Called with mu held.
func (x *ReplyTokens) entry(k tokenKey, make bool) (*tokenEntry, bool) {
	now := x.now()
	for x.head < len(x.fifo) {
		it := x.fifo[x.head]
		e := x.m[it.k]
		if e == nil || e.expires.After(it.expires) {
			x.head++ // gone, or claimed again since: a later place holds it
			continue
		}
		if now.Before(it.expires) && len(x.m) < x.max {
			break
		}
		delete(x.m, it.k)
		x.head++
	}
	if x.head > 1024 && x.head > len(x.fifo)/2 {
		x.fifo = slices.Delete(x.fifo, 0, x.head)
		x.head = 0
	}
	e := x.m[k]
	if e != nil && !now.Before(e.expires) {
		delete(x.m, k)
		e = nil
	}
	if e == nil && make {
		e = &tokenEntry{}
		x.m[k] = e
		return e, true
	}
	return e, false
}

// touch extends e's life from now. Called with mu held.
func (x *ReplyTokens) touch(k tokenKey, e *tokenEntry, now time.Time) {
	e.expires = now.Add(x.ttl)
	x.fifo = append(x.fifo, fifoItem{k, e.expires})
}

// Note remembers that token came with the event of key eventKey, in the
// webhook record of index record, whose subjects are subjects. A claim
// made already stands.
func (x *ReplyTokens) Note(channel, token, eventKey string, record uint64, subjects []string) {
	if x == nil || token == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	k := keyOf(channel, token)
	e, made := x.entry(k, true)
	if made {
		x.touch(k, e, x.now())
	}
	e.event, e.hasEvent = TokenEvent{EventKey: eventKey, Record: record, Subjects: slices.Clone(subjects)}, true
}

// Event returns the event token came with, if it was noted and is still
// remembered.
func (x *ReplyTokens) Event(channel, token string) (TokenEvent, bool) {
	if x == nil || token == "" {
		return TokenEvent{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	e, _ := x.entry(keyOf(channel, token), false)
	if e == nil || !e.hasEvent {
		return TokenEvent{}, false
	}
	return e.event, true
}

// Claim makes token the send's: holder names it for the others' records
// ("rule hello", "agent alice", "tool crm"), claim tells it apart from any
// other send. It returns true when the token is now the send's, or was
// already (a retry of the same send); otherwise false and the holder.
func (x *ReplyTokens) Claim(channel, token, holder, claim string) (bool, string) {
	if x == nil || token == "" {
		return true, ""
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	k := keyOf(channel, token)
	e, _ := x.entry(k, true)
	if e.claim != "" && e.claim != claim {
		return false, e.holder
	}
	e.holder, e.claim = holder, claim
	x.touch(k, e, x.now())
	return true, ""
}

// Release gives token back when the send that claimed it never reached
// LINE (held back by the kill switch, dry-run, consent; no connection):
// the token is still good for another.
func (x *ReplyTokens) Release(channel, token, claim string) {
	if x == nil || token == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, _ := x.entry(keyOf(channel, token), false); e != nil && e.claim == claim {
		e.holder, e.claim = "", ""
	}
}
