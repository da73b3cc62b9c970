package proxy

import (
	"slices"
	"sync"
	"time"
)

// ReplyIndex remembers, for a while, which event each reply token came
// with, so that a tool's reply is recorded under the subjects of the
// conversation it answers and linked to its event. It is fed by whatever
// sees the events (the pipeline); a token it does not know is no reason to
// refuse a reply, only to record it under the system's subject. Safe for
// concurrent use.
type ReplyIndex struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	m     map[string]replyEvent // channel + "\x00" + token
	notes int
}

type replyEvent struct {
	eventKey string
	record   uint64
	subjects []string
	expires  time.Time
}

// maxReplies bounds the tokens remembered.
const maxReplies = 200_000

// NewReplyIndex returns an index that forgets a token after ttl (LINE's
// reply tokens live about a minute; default 2 minutes).
func NewReplyIndex(ttl time.Duration) *ReplyIndex {
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	return &ReplyIndex{ttl: ttl, now: time.Now, m: map[string]replyEvent{}}
}

// Note remembers that token came with the event of key eventKey, in the
// webhook record of index record, whose subjects are subjects.
func (x *ReplyIndex) Note(channel, token, eventKey string, record uint64, subjects []string) {
	if x == nil || token == "" {
		return
	}
	now := x.now()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.notes++
	if x.notes%1024 == 0 || len(x.m) >= maxReplies {
		for k, e := range x.m {
			if now.After(e.expires) {
				delete(x.m, k)
			}
		}
	}
	if len(x.m) >= maxReplies {
		return
	}
	x.m[channel+"\x00"+token] = replyEvent{eventKey: eventKey, record: record, subjects: slices.Clone(subjects), expires: now.Add(x.ttl)}
}

func (x *ReplyIndex) lookup(channel, token string) (replyEvent, bool) {
	if x == nil {
		return replyEvent{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.m[channel+"\x00"+token]
	if !ok || x.now().After(e.expires) {
		return replyEvent{}, false
	}
	return e, true
}
