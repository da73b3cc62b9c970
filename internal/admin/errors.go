package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
)

// ErrBadRequest marks a request the caller must change: a body that is not
// what the call wants, a bad id.
var ErrBadRequest = errors.New("admin: bad request")

// badRequest is an error wrapping ErrBadRequest that says msg alone: the
// answer's body.
func badRequest(msg string) error { return &requestError{msg} }

// ErrTooLarge is the error of a request body over its endpoint's bound.
var ErrTooLarge = errors.New("admin: request body too large")

// tooLarge is a request whose body is over its bound, answered with msg.
func tooLarge(msg string) error { return &largeError{msg} }

type largeError struct{ msg string }

func (e *largeError) Error() string { return e.msg }
func (e *largeError) Unwrap() error { return ErrTooLarge }

type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return ErrBadRequest }

// errBadRules marks a rule set that does not load: the operator's to fix.
var errBadRules = errors.New("rules not reloaded")

// statusOf is the HTTP status of the answer to a request that failed with
// err: the one place where errors become statuses. 0 means no answer: the
// caller went away.
func statusOf(err error) int {
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case errors.Is(err, ErrBadRequest), errors.Is(err, errBadRules), errors.Is(err, retention.ErrBadHold),
		errors.Is(err, retention.ErrNotSubject), errors.Is(err, retention.ErrUnknownRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ledger.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, retention.ErrHeld):
		return http.StatusConflict
	default:
		// ledger.ErrPushback, ledger.ErrClosed, a store that fails: not
		// the caller's doing, and worth a retry.
		return http.StatusServiceUnavailable
	}
}

// answerError answers a request that failed with err, with the status
// statusOf gives it. What the caller must change (a 4xx) is answered with
// the error's own text, which names no secret; anything else with
// unavailable alone (the error may name the store's internals), and, when
// action is set, logged as the admin action that failed.
func (a *API) answerError(w http.ResponseWriter, r *http.Request, action, unavailable string, err error) {
	code := statusOf(err)
	switch {
	case code == 0:
	case code == http.StatusNotFound && action != "":
		http.Error(w, action+": not found: neither applied nor recorded\n", code)
	case code >= 500:
		if action != "" {
			oplog.AdminFailed(a.log, action, r.RemoteAddr, err)
		}
		http.Error(w, unavailable, code)
	default:
		http.Error(w, err.Error(), code)
	}
}

// fail answers an admin action that was neither applied nor recorded.
func (a *API) fail(w http.ResponseWriter, r *http.Request, action string, err error) {
	a.answerError(w, r, action, action+": the ledger is unavailable: neither applied nor recorded\n", err)
}

// failRead answers a read of the store that failed.
func (a *API) failRead(w http.ResponseWriter, r *http.Request, err error) {
	a.answerError(w, r, "", "store unavailable", err)
}

// record records an admin action, sealed under the keys of the subjects it
// concerns, with the effects that make it take effect, in one commit: it
// is applied if and only if it is recorded. It answers with detail, which
// gets who asked.
func (a *API) record(w http.ResponseWriter, r *http.Request, action string, detail map[string]any, subjects []string, effects ...ledger.Effect) {
	detail["remote"] = r.RemoteAddr
	if _, err := outbound.RecordAdmin(r.Context(), a.o.Ledger, action, detail, subjects, time.Now(), effects...); err != nil {
		a.fail(w, r, action, err)
		return
	}
	a.done(w, action, detail)
}

// done answers an admin action that was applied and recorded, with what
// it changed.
func (a *API) done(w http.ResponseWriter, action string, detail map[string]any) {
	remote, _ := detail["remote"].(string) // who asked: recorded with the action
	oplog.Admin(a.log, action, remote, detail)
	writeJSON(w, detail)
}
