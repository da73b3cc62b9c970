package admin

import (
	"github.com/linegate/linegate/internal/line"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/outbound"
)

// switchRoutes adds the outbound switches (kill switch, dry-run) and the
// consent of a user.
func (a *API) switchRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/kill-switch", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"on": a.o.Switches.KillSwitch()})
	})
	mux.HandleFunc("POST /admin/kill-switch", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			On     *bool  `json:"on"`
			Reason string `json:"reason"`
		}
		if !decode(w, r, &req) || req.On == nil {
			a.fail(w, r, "kill_switch", badRequest(`want {"on": true|false, "reason": "..."}`))
			return
		}
		detail := map[string]any{"reason": req.Reason, "remote": r.RemoteAddr}
		if err := a.o.Switches.SetKillSwitch(r.Context(), a.o.Ledger, *req.On, detail); err != nil {
			a.fail(w, r, "kill_switch", err)
			return
		}
		a.done(w, "kill_switch", detail)
	})
	mux.HandleFunc("POST /admin/dry-run", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel string `json:"channel"`
			On      *bool  `json:"on"`
		}
		if !decode(w, r, &req) || req.On == nil {
			a.fail(w, r, "dry_run", badRequest(`want {"channel": "" for all, "on": true|false}`))
			return
		}
		if req.Channel != "" && !a.knownChannel(req.Channel) {
			a.fail(w, r, "dry_run", badRequest(`channel: not one of the config's channels`))
			return
		}
		detail := map[string]any{"remote": r.RemoteAddr}
		if err := a.o.Switches.SetDryRun(r.Context(), a.o.Ledger, req.Channel, *req.On, detail); err != nil {
			a.fail(w, r, "dry_run", err)
			return
		}
		a.done(w, "dry_run", detail)
	})
	mux.HandleFunc("POST /admin/consent", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel string `json:"channel"`
			User    string `json:"user"`
			OptIn   *bool  `json:"opt_in"`
			Source  string `json:"source"`
		}
		if !decode(w, r, &req) || req.OptIn == nil || req.Channel == "" || req.User == "" {
			a.fail(w, r, "consent", badRequest(`want {"channel", "user", "opt_in": true|false, "source"}`))
			return
		}
		if !a.knownChannel(req.Channel) {
			a.fail(w, r, "consent", badRequest(`channel: not one of the config's channels`))
			return
		}
		if !line.ValidSubject("user:" + req.User) {
			a.fail(w, r, "consent", badRequest(`user: want a LINE user id (U and letters or digits)`))
			return
		}
		if req.Source == "" {
			req.Source = "admin API"
		}
		now := time.Now()
		a.record(w, r, "consent", map[string]any{"channel": req.Channel, "user": req.User, "opt_in": *req.OptIn, "source": req.Source},
			[]string{"user:" + req.User}, outbound.SetConsent{Channel: req.Channel, User: req.User, OptIn: *req.OptIn, At: now, Source: req.Source})
	})
}
