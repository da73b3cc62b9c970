package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// session is a logged-in user. The cookie holds a random id; the table
// holds its SHA-256, so that the table's lookups reveal nothing of a
// cookie by their timing.
type session struct {
	user    *User
	csrf    string // the token every form of the session carries
	created time.Time
	seen    time.Time
}

// maxSessions bounds the session table; the oldest session goes first.
const maxSessions = 10000

// sessions is the server-side session table, in memory: a restart logs
// everyone out. Safe for concurrent use.
type sessions struct {
	idle, maxAge time.Duration
	mu           sync.Mutex
	m            map[[32]byte]*session
}

func newSessions(idle, maxAge time.Duration) *sessions {
	return &sessions{idle: idle, maxAge: maxAge, m: map[[32]byte]*session{}}
}

// randomToken returns 32 random bytes in base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for u and returns its cookie value.
func (s *sessions) create(u *User, now time.Time) (string, *session) {
	id := randomToken()
	ss := &session{user: u, csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxSessions {
		s.expire(now)
		for len(s.m) >= maxSessions {
			var oldest [32]byte
			var at time.Time
			for k, v := range s.m {
				if at.IsZero() || v.created.Before(at) {
					oldest, at = k, v.created
				}
			}
			delete(s.m, oldest)
		}
	}
	s.m[sha256.Sum256([]byte(id))] = ss
	return id, ss
}

// get returns the live session of a cookie value, and marks it seen; a
// session idle or older than allowed is ended.
func (s *sessions) get(id string, now time.Time) *session {
	if id == "" {
		return nil
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[k]
	if ss == nil {
		return nil
	}
	if now.Sub(ss.seen) > s.idle || now.Sub(ss.created) > s.maxAge {
		delete(s.m, k)
		return nil
	}
	ss.seen = now
	return ss
}

// end ends the session of a cookie value.
func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(id)))
	s.mu.Unlock()
}

// expire drops the sessions past their time. s.mu is held.
func (s *sessions) expire(now time.Time) {
	for k, ss := range s.m {
		if now.Sub(ss.seen) > s.idle || now.Sub(ss.created) > s.maxAge {
			delete(s.m, k)
		}
	}
}

// limiter counts failed logins by key (a user name, a remote address) in
// a sliding window: past max failures within window, the key waits.
// Safe for concurrent use; at most maxKeys keys are tracked.
type limiter struct {
	max    int
	window time.Duration
	mu     sync.Mutex
	fails  map[string][]time.Time
}

const maxLimiterKeys = 50000

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, fails: map[string][]time.Time{}}
}

// wait returns how long key must wait before trying again (0: it may).
func (l *limiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.recent(key, now)
	if len(f) < l.max {
		return 0
	}
	return f[len(f)-l.max].Add(l.window).Sub(now)
}

// fail counts a failure of key.
func (l *limiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.fails[key]; !ok && len(l.fails) >= maxLimiterKeys {
		for k := range l.fails {
			if len(l.recent(k, now)) == 0 {
				delete(l.fails, k)
			}
		}
		if len(l.fails) >= maxLimiterKeys {
			// Still full of live keys: forget one rather than grow.
			for k := range l.fails {
				delete(l.fails, k)
				break
			}
		}
	}
	l.fails[key] = append(l.recent(key, now), now)
}

// recent returns key's failures within the window. l.mu is held.
func (l *limiter) recent(key string, now time.Time) []time.Time {
	f := l.fails[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= l.window {
		i++
	}
	if i == len(f) {
		delete(l.fails, key)
		return nil
	}
	f = f[i:]
	l.fails[key] = f
	return f
}
