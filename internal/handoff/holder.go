package handoff

import (
	"errors"
	"sync"
	"time"
)

// ErrNotYours: another person holds the conversation. Only its holder
// replies to it or shows typing in it; only an admin (role "admin", or
// the admin API's "admin_api") hands back or resolves a conversation
// another person holds. Nothing was sent or recorded.
var ErrNotYours = errors.New("handoff: another person holds the conversation")

// ErrTypingTooSoon: the loading animation was started in the conversation
// less than TypingEvery ago; no call was made and nothing recorded.
var ErrTypingTooSoon = errors.New("handoff: the loading animation was started in this conversation moments ago")

// TypingEvery is how often at most the loading animation is started in a
// conversation, whoever asks. Each call shows it for as long.
const TypingEvery = 20 * time.Second

// overrides reports whether the actor may hand back or resolve a
// conversation another person holds.
func (a Actor) overrides() bool { return a.Role == "admin" || a.Role == "admin_api" }

// holds checks that the actor holds the conversation cur: ErrNotHeld when
// no person does, ErrNotYours when another does.
func (a Actor) holds(cur Conversation) error {
	switch {
	case cur.State != StateHuman || cur.Agent == "":
		return ErrNotHeld
	case cur.Agent != a.Name:
		return ErrNotYours
	}
	return nil
}

// typingLimit remembers when the loading animation was last started in
// each conversation, for TypingEvery.
type typingLimit struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// take reports whether the animation may start in the conversation at
// now, and if so notes it (before the call: a failed call also waits).
func (l *typingLimit) take(channel, id string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	k := channel + " " + id
	if t, ok := l.last[k]; ok && now.Sub(t) < TypingEvery && !now.Before(t) {
		return false
	}
	if len(l.last) >= 4096 {
		for k, t := range l.last {
			if now.Sub(t) >= TypingEvery || now.Before(t) {
				delete(l.last, k)
			}
		}
	}
	l.last[k] = now
	return true
}
