package handoff

import (
	"encoding/json"
	"errors"
	"fmt"

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
