package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/outbound"
)

// ErrLINE: LINE refused the send or did not take it; unlike the other
// errors, something was applied: the send is recorded (as failed), and the
// error names LINE's answer.
var ErrLINE = errors.New("handoff: LINE did not take the send; it is recorded as failed")

// lineError wraps a recorded failed send in ErrLINE with LINE's status and
// message (LINE's words about the request, never the messages sent).
func lineError(err error, rec *outbound.Recorded) error {
	var fe *outbound.FailedError
	if !errors.As(err, &fe) || rec == nil {
		return err
	}
	what := "no answer from LINE"
	if n := len(rec.Attempts); n > 0 {
		a := rec.Attempts[n-1]
		var body struct {
			Message string `json:"message"`
		}
		json.Unmarshal(a.Response, &body)
		if a.Status != 0 {
			what = fmt.Sprintf("LINE answered %d", a.Status)
			if body.Message != "" {
				what += " " + fmt.Sprintf("%q", clipText(body.Message, 200))
			}
			if a.RequestID != "" {
				what += " (x-line-request-id " + a.RequestID + ")"
			}
		}
	}
	return fmt.Errorf("%w (record %d): %s", ErrLINE, rec.Index, what)
}

func clipText(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// replyClaims are the reply tokens this process has used or is using: a
// token is claimed before the call that uses it, by one reply alone, so
// that two replies at once do not both spend it (the second pushes).
type replyClaims struct {
	mu sync.Mutex
	m  map[string]time.Time // channel + "\x00" + token -> until
}

// claimTTL is how long a claim is kept: past LINE's reply tokens' life.
const claimTTL = 10 * time.Minute

// claim reports whether the token is now this caller's: false when another
// reply claimed it.
func (c *replyClaims) claim(channel, token string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]time.Time{}
	}
	if len(c.m) >= 1024 {
		for k, until := range c.m {
			if now.After(until) {
				delete(c.m, k)
			}
		}
	}
	k := channel + "\x00" + token
	if until, ok := c.m[k]; ok && !now.After(until) {
		return false
	}
	c.m[k] = now.Add(claimTTL)
	return true
}

// release gives a token back when the reply that claimed it never reached
// LINE (held back by the kill switch, dry-run, consent).
func (c *replyClaims) release(channel, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, channel+"\x00"+token)
}
