package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
)

func runPurge(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "purge", "[-config FILE] [-dry-run]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	dry := fs.Bool("dry-run", false, "only report what would be deleted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, store, ring, err := openConfigStore(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := retention.Purge(ctx, store, ledger.NewWriter(store, ring, nil), cfg.policies(), time.Now(), *dry)
	if err != nil {
		return err
	}
	if len(rep.Refused) > 0 {
		fmt.Fprintf(e.stderr, "refused to delete %d payloads whose stored delete-after time is earlier than their class allows (first: record %d): the database was changed, run linegate verify\n",
			len(rep.Refused), rep.Refused[0])
	}
	verb := "deleted"
	if *dry {
		verb = "would delete"
	}
	fmt.Fprintf(e.stdout, "%s %d payloads past their retention; %d kept by legal holds\n", verb, len(rep.Deleted), rep.Held)
	return nil
}

// appendAdmin records an admin action from the CLI straight into the
// store, with its effects in the same commit; serve integrates it into
// the log.
func appendAdmin(ctx context.Context, store backend, ring ledger.Sealer, action string, detail map[string]any,
	subjects []string, effects ...ledger.Effect) (uint64, error) {
	return outbound.RecordAdmin(ctx, ledger.NewWriter(store, ring, nil), action, detail, subjects, time.Now(), effects...)
}

func runHold(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: linegate hold add|release|list [flags]", errUsage)
	}
	fs := newFlagSet(e, "hold "+args[0], "[-config FILE] [flags]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	channel := fs.String("channel", "", "add: the channel held (default: all)")
	subject := fs.String("subject", "", "add: the subject held, user:U..., group:C... or room:R... (default: all)")
	from := fs.String("from", "", "add: records from this time (2026-11-26 or RFC 3339)")
	to := fs.String("to", "", "add: records before this time")
	reason := fs.String("reason", "", "add: why (a case number)")
	id := fs.Int64("id", 0, "release: the hold's id")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	switch args[0] {
	case "add":
		h, err := newHold(*channel, *subject, *from, *to, *reason)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		n, err := appendAdmin(ctx, store, ring, "legal_hold_added", holdDetail(h), holdSubjects(h), retention.AddHold{Hold: h})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "hold %d added\n", n)
	case "release":
		if *id == 0 {
			return fmt.Errorf("%w: -id is required", errUsage)
		}
		if _, err := appendAdmin(ctx, store, ring, "legal_hold_released", map[string]any{"id": *id}, nil,
			retention.ReleaseHold{ID: *id, At: time.Now()}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "hold %d released\n", *id)
	case "list":
		hs, err := store.Holds(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(hs)
	default:
		return fmt.Errorf("%w: unknown hold command %q", errUsage, args[0])
	}
	return nil
}

// newHold checks and builds a hold from what the operator gave.
func newHold(channel, subject, from, to, reason string) (retention.Hold, error) {
	h := retention.Hold{Channel: channel, Subject: subject, Reason: reason, CreatedMs: time.Now().UnixMilli()}
	if reason == "" {
		return h, fmt.Errorf("a hold needs a reason (a case number)")
	}
	if subject != "" && (!ledger.ValidSubject(subject) || subject == ledger.SubjectSystem) {
		return h, fmt.Errorf("subject: want user:, group: or room: and a LINE id")
	}
	f, err1 := parseWhen(from)
	t, err2 := parseWhen(to)
	if err1 != nil || err2 != nil {
		return h, fmt.Errorf("from, to: want 2026-11-26 or an RFC 3339 time")
	}
	if !f.IsZero() {
		h.FromMs = f.UnixMilli()
	}
	if !t.IsZero() {
		h.ToMs = t.UnixMilli()
	}
	return h, nil
}

// holdDetail is the body of a hold's record. The hold's id is the index of
// that record.
func holdDetail(h retention.Hold) map[string]any {
	return map[string]any{"channel": h.Channel, "subject": h.Subject, "from_ms": h.FromMs, "to_ms": h.ToMs, "reason": h.Reason}
}

// holdSubjects are the subjects a hold's record is sealed under: the
// subject it holds, if any.
func holdSubjects(h retention.Hold) []string {
	if h.Subject == "" {
		return nil
	}
	return []string{h.Subject}
}

// holdRoutes adds the legal hold and purge admin calls.
func (a *adminAPI) holdRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/holds", func(w http.ResponseWriter, r *http.Request) {
		hs, err := a.store.Holds(r.Context())
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, hs)
	})
	mux.HandleFunc("POST /admin/holds", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel, Subject, From, To, Reason string
		}
		if !decode(w, r, &req) {
			http.Error(w, `want {"channel", "subject", "from", "to", "reason"}`, http.StatusBadRequest)
			return
		}
		h, err := newHold(req.Channel, req.Subject, req.From, req.To, req.Reason)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		detail := holdDetail(h)
		detail["remote"] = r.RemoteAddr
		id, err := outbound.RecordAdmin(r.Context(), a.led, "legal_hold_added", detail, holdSubjects(h), time.Now(), retention.AddHold{Hold: h})
		if err != nil {
			a.fail(w, "legal_hold_added", err)
			return
		}
		detail["id"] = id
		a.done(w, "legal_hold_added", detail)
	})
	mux.HandleFunc("POST /admin/holds/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		a.record(w, r, "legal_hold_released", map[string]any{"id": id}, nil, retention.ReleaseHold{ID: id, At: time.Now()})
	})
	mux.HandleFunc("POST /admin/purge", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			DryRun bool `json:"dry_run"`
		}
		decode(w, r, &req)
		rep, err := retention.Purge(r.Context(), a.store, a.led, a.cfg.policies(), time.Now(), req.DryRun)
		if err != nil {
			oplog.AdminFailed(a.log, "purge", r.RemoteAddr, err)
			http.Error(w, "purge failed", http.StatusServiceUnavailable)
			return
		}
		oplog.Admin(a.log, "purge", r.RemoteAddr, map[string]any{"deleted": len(rep.Deleted), "held": rep.Held, "refused": len(rep.Refused), "dry_run": req.DryRun})
		writeJSON(w, map[string]any{"deleted": len(rep.Deleted), "held": rep.Held, "refused": len(rep.Refused), "dry_run": req.DryRun})
	})
}
