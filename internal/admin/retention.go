package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
)

// holdRoutes adds the legal holds and purges.
func (a *API) holdRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/holds", func(w http.ResponseWriter, r *http.Request) {
		hs, err := a.o.Store.Holds(r.Context())
		if err != nil {
			a.failRead(w, r, err)
			return
		}
		writeJSON(w, hs)
	})
	mux.HandleFunc("POST /admin/holds", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel, Subject, From, To, Reason string
		}
		if !decode(w, r, &req) {
			a.fail(w, r, "legal_hold_added", badRequest(`want {"channel", "subject", "from", "to", "reason"}`))
			return
		}
		h, err := retention.NewHold(req.Channel, req.Subject, req.From, req.To, req.Reason, time.Now())
		if err != nil {
			a.fail(w, r, "legal_hold_added", err)
			return
		}
		// The hold's id is the index of the record that adds it.
		detail := h.Detail()
		detail["remote"] = r.RemoteAddr
		id, err := outbound.RecordAdmin(r.Context(), a.o.Ledger, "legal_hold_added", detail, h.Subjects(), time.Now(), retention.AddHold{Hold: h})
		if err != nil {
			a.fail(w, r, "legal_hold_added", err)
			return
		}
		detail["id"] = id
		a.done(w, "legal_hold_added", detail)
	})
	mux.HandleFunc("POST /admin/holds/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			a.fail(w, r, "legal_hold_released", badRequest("bad id"))
			return
		}
		a.record(w, r, "legal_hold_released", map[string]any{"id": id}, nil, retention.ReleaseHold{ID: id, At: time.Now()})
	})
	mux.HandleFunc("POST /admin/purge", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			DryRun bool `json:"dry_run"`
		}
		// No body is a purge; a body must decode, so that a dry run asked
		// for in malformed JSON never purges for real.
		if !decodeOptional(w, r, &req) {
			a.fail(w, r, "purge", badRequest(`want no body, or {"dry_run": true|false}`))
			return
		}
		// Each batch deleted is recorded with its deletion: a purge that
		// fails half way has applied and recorded what came before.
		rep, err := retention.Purge(r.Context(), a.o.Store, a.o.Ledger, a.o.Keys, a.o.Policies, time.Now(), req.DryRun)
		if err != nil {
			a.answerError(w, r, "purge", "purge failed", err)
			return
		}
		out := map[string]any{"deleted": len(rep.Deleted), "held": rep.Held, "refused": len(rep.Refused), "unsigned": rep.Unsigned, "dry_run": req.DryRun}
		oplog.Admin(a.log, "purge", r.RemoteAddr, out)
		writeJSON(w, out)
	})
}

// subjectRoutes adds the calls about one subject: a deletion request or a
// consent withdrawal, and crypto-shredding.
func (a *API) subjectRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/subjects/{subject}/requests", func(w http.ResponseWriter, r *http.Request) {
		subject := r.PathValue("subject")
		var req struct {
			Kind    retention.RequestKind `json:"kind"`
			Channel string                `json:"channel"`
		}
		if !decode(w, r, &req) {
			a.fail(w, r, "subject_request", badRequest(`want {"kind": "deletion" or "withdrawal", "channel"}`))
			return
		}
		at := time.Now()
		rep, err := retention.Apply(r.Context(), a.o.Store, a.o.Policies, subject, req.Kind, at)
		if err != nil {
			a.fail(w, r, "subject_request", err)
			return
		}
		effects := []ledger.Effect{rep.Effect}
		if req.Kind == retention.Withdrawal && req.Channel != "" {
			if user, ok := strings.CutPrefix(subject, "user:"); ok {
				effects = append(effects, outbound.SetConsent{Channel: req.Channel, User: user, OptIn: false, At: at, Source: "withdrawal request"})
			}
		}
		// The request's record is sealed under the subject's key, and
		// lists each record it changed with its new delete-after time.
		a.record(w, r, "subject_request", map[string]any{"subject": subject, "kind": req.Kind, "channel": req.Channel,
			"at_ms": at.UnixMilli(), "records": rep.Records, "changed": rep.Changed, "no_rule": rep.NoRule, "delete_after": rep.DeleteAfter},
			[]string{subject}, effects...)
	})
	mux.HandleFunc("POST /admin/subjects/{subject}/shred", func(w http.ResponseWriter, r *http.Request) {
		subject := r.PathValue("subject")
		deleted, err := retention.Shred(r.Context(), a.o.Store, a.o.Ledger, a.o.Keys, subject, map[string]any{"remote": r.RemoteAddr, "by": "admin API"}, time.Now())
		if err != nil {
			a.answerError(w, r, "subject_key_destroyed", "shred failed", err)
			return
		}
		// The deletion record says it: the subject, who asked, and what
		// was deleted, committed with the key's destruction.
		a.done(w, "subject_key_destroyed", map[string]any{"subject": subject, "deleted": len(deleted), "remote": r.RemoteAddr})
	})
}
