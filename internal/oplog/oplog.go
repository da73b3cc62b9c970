// Package oplog writes what an operator must read in the process log:
// failures, by class and channel, rate limited and counted so that a
// flood of them stays a few lines; and the actions taken through the
// admin API, with what they changed and who asked.
//
// A failure line carries "class" (such as bad_signature or
// api_unreachable), "channel", and "suppressed": how many failures of the
// same class and channel were not logged since the previous line. At most
// one line is written per class and channel in each Every; the failures in
// between are counted, and their count is written in a line of its own
// ("summary": true) when the interval ends, so that a count is never lost
// while the process runs.
//
// Lines never carry secrets, tokens or message text: callers pass only
// identifiers, sizes, statuses and errors that hold none of these, and
// Admin drops the identities of LINE users from what it logs.
package oplog

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"
)

// Every is the default interval: at most one line per class and channel
// every 10 seconds.
const Every = 10 * time.Second

// maxKeys bounds the classes and channels remembered; past it, new ones
// share one key, so that attacker-chosen values cannot grow the map.
const maxKeys = 1024

// Key names a kind of failure: its class and the channel it happened on
// (empty when there is none, or when the channel is not trusted, such as
// the id of an unknown channel: then the line carries it as an attribute
// and all share one key).
type Key struct {
	Class, Channel string
}

// Limiter writes failure lines, at most one per Key and interval. It is
// safe for concurrent use.
type Limiter struct {
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex
	keys map[Key]*state
}

type state struct {
	last       time.Time // the last line written
	suppressed int64     // failures since, not logged
	level      slog.Level
	msg        string
	timer      *time.Timer // writes the count when the interval ends
}

// NewLimiter returns a Limiter writing to log (nil: nowhere), at most one
// line per Key every interval (Every if zero or less).
func NewLimiter(log *slog.Logger, every time.Duration) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = Every
	}
	return &Limiter{log: log, every: every, keys: map[Key]*state{}}
}

// Log writes a failure line with msg, the key's class and channel, the
// count suppressed since the previous line, and args (slog's key-value
// pairs); or, within the interval of the previous line of this key, counts
// it for the next.
func (l *Limiter) Log(level slog.Level, k Key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	s := l.keys[k]
	if s == nil {
		if len(l.keys) >= maxKeys {
			k = Key{Class: k.Class, Channel: "(others)"}
			s = l.keys[k]
		}
		if s == nil {
			s = &state{}
			l.keys[k] = s
		}
	}
	s.level, s.msg = level, msg
	if !s.last.IsZero() && now.Sub(s.last) < l.every {
		s.suppressed++
		if s.timer == nil {
			s.timer = time.AfterFunc(s.last.Add(l.every).Sub(now), func() { l.summary(k) })
		}
		l.mu.Unlock()
		return
	}
	n := s.suppressed
	s.suppressed, s.last = 0, now
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, append(keyArgs(k, n), args...)...)
}

// summary writes the count of a key's failures suppressed in the interval
// that just ended.
func (l *Limiter) summary(k Key) {
	l.mu.Lock()
	s := l.keys[k]
	if s == nil || s.suppressed == 0 {
		if s != nil {
			s.timer = nil
		}
		l.mu.Unlock()
		return
	}
	n, level, msg := s.suppressed, s.level, s.msg
	s.suppressed, s.last, s.timer = 0, time.Now(), nil
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, append(keyArgs(k, n), "summary", true)...)
}

// Flush writes the counts not yet written, at once: at shutdown.
func (l *Limiter) Flush() {
	l.mu.Lock()
	var pending []Key
	for k, s := range l.keys {
		if s.timer != nil {
			s.timer.Stop()
			s.timer = nil
		}
		if s.suppressed > 0 {
			pending = append(pending, k)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(pending, func(a, b Key) int {
		if a.Class != b.Class {
			return compare(a.Class, b.Class)
		}
		return compare(a.Channel, b.Channel)
	})
	for _, k := range pending {
		l.summary(k)
	}
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func keyArgs(k Key, suppressed int64) []any {
	args := []any{"class", k.Class}
	if k.Channel != "" {
		args = append(args, "channel", k.Channel)
	}
	return append(args, "suppressed", suppressed)
}

// Truncate cuts s to at most n bytes (on a rune boundary), marking the
// cut: for values that come from outside, such as an unknown channel's id
// or an error's text.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + "…"
}

// personal are the detail keys of admin actions that name a LINE user,
// group or room: such an identity stays in the ledger (sealed under the
// subject's key, so that a shredding removes it) and out of the log.
var personal = map[string]bool{"user": true, "subject": true, "subjects": true}

// Admin logs an admin action that was applied and recorded: its name,
// who asked (remote: the caller's address), and what it changed (detail,
// as recorded in the ledger), without the identities of LINE users and
// with long values cut.
func Admin(log *slog.Logger, action, remote string, detail map[string]any) {
	args := []any{"action", action, "remote", remote}
	keys := make([]string, 0, len(detail))
	for k := range detail {
		if k != "remote" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	changed := make([]any, 0, len(keys))
	for _, k := range keys {
		changed = append(changed, slog.Any(k, adminValue(k, detail[k])))
	}
	args = append(args, slog.Group("changed", changed...))
	log.Info("admin action", args...)
}

// AdminFailed logs an admin action that was neither applied nor recorded
// (remote: who asked, if known).
func AdminFailed(log *slog.Logger, action, remote string, err error) {
	args := []any{"action", action}
	if remote != "" {
		args = append(args, "remote", remote)
	}
	log.Error("admin action failed: neither applied nor recorded", append(args, "err", Truncate(fmt.Sprint(err), 500))...)
}

// adminValue returns what the log shows of a detail value.
func adminValue(k string, v any) any {
	if personal[k] {
		if s, ok := v.(string); ok && s == "" {
			return ""
		}
		return "(withheld: in the ledger record)"
	}
	switch v := v.(type) {
	case nil, bool, int, int64, uint64, float64:
		return v
	case string:
		return Truncate(v, 200)
	}
	s := fmt.Sprint(v)
	if len(s) <= 200 {
		return s
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice || rv.Kind() == reflect.Map {
		return fmt.Sprintf("(%d values)", rv.Len())
	}
	return Truncate(s, 200)
}
