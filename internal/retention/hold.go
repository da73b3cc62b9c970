package retention

import (
	"errors"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/line"
)

// ErrBadHold is returned by NewHold for a hold that cannot be placed as
// given: the caller's to fix.
var ErrBadHold = errors.New("retention: bad hold")

// NewHold checks and builds a hold from what an operator gave: a channel
// ("" for all), a subject (user:, group: or room: and a LINE id, or the
// bare LINE id; "" for all), the time range (2026-11-26 or RFC 3339; ""
// for open; not empty) and a reason (a case number, required). Errors wrap
// ErrBadHold.
func NewHold(channel, subject, from, to, reason string, now time.Time) (Hold, error) {
	h := Hold{Channel: channel, Subject: subject, Reason: reason, CreatedMs: now.UnixMilli()}
	if reason == "" {
		return h, badHold("a hold needs a reason (a case number)")
	}
	if subject != "" {
		s, ok := line.ParseSubject(subject)
		if !ok {
			return h, badHold("subject: want user:, group: or room: and a LINE id")
		}
		h.Subject = s
	}
	f, err1 := parseWhen(from)
	t, err2 := parseWhen(to)
	if err1 != nil || err2 != nil {
		return h, badHold("from, to: want 2026-11-26 or an RFC 3339 time")
	}
	if !f.IsZero() && !t.IsZero() && !f.Before(t) {
		return h, badHold("from is not before to: the range is empty")
	}
	if !f.IsZero() {
		h.FromMs = f.UnixMilli()
	}
	if !t.IsZero() {
		h.ToMs = t.UnixMilli()
	}
	return h, nil
}

// badHold is an error that wraps ErrBadHold and says only msg.
func badHold(msg string) error { return &holdError{msg} }

type holdError struct{ msg string }

func (e *holdError) Error() string { return e.msg }
func (e *holdError) Unwrap() error { return ErrBadHold }

// parseWhen reads a date (UTC midnight) or an RFC 3339 time; "" is zero.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want 2006-01-02 or an RFC 3339 time")
	}
	return t, nil
}

// Detail is the body of the admin record that adds the hold (its id is
// that record's index).
func (h Hold) Detail() map[string]any {
	return map[string]any{"channel": h.Channel, "subject": h.Subject, "from_ms": h.FromMs, "to_ms": h.ToMs, "reason": h.Reason}
}

// Subjects are the subjects the record that adds the hold is sealed under:
// the subject it holds, if any.
func (h Hold) Subjects() []string {
	if h.Subject == "" {
		return nil
	}
	return []string{h.Subject}
}
