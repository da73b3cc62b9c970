package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/linegate/linegate/internal/canary"
	"github.com/linegate/linegate/internal/oplog"
)

// Canary runs the canary of a channel. *canary.Watch implements it: Run
// records the run whatever its outcome.
type Canary interface {
	Run(ctx context.Context, channel string, timeout time.Duration, detail map[string]any) (*canary.Result, error)
}

// Bounds on a canary run's wait.
const (
	defaultCanaryTimeout = 10 * time.Second
	maxCanaryTimeout     = 5 * time.Minute
)

// canaryRoutes adds POST /admin/canary {"channel", "timeout"}: it pushes a
// marker to the channel's canary group and answers once the marker came
// back, or the timeout passed, with the run's result (outcome ok, timeout
// or send_failed), recorded in the ledger.
func (a *API) canaryRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/canary", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel string `json:"channel"`
			Timeout string `json:"timeout"`
		}
		if !decode(w, r, &req) || req.Channel == "" {
			a.fail(w, r, "canary_run", badRequest(`want {"channel": "...", "timeout": "10s"}`))
			return
		}
		if !a.knownChannel(req.Channel) {
			a.fail(w, r, "canary_run", badRequest(`channel: not one of the config's channels`))
			return
		}
		timeout := defaultCanaryTimeout
		if req.Timeout != "" {
			d, err := time.ParseDuration(req.Timeout)
			if err != nil || d <= 0 || d > maxCanaryTimeout {
				a.fail(w, r, "canary_run", badRequest(`timeout: want a duration such as 10s, at most 5m`))
				return
			}
			timeout = d
		}
		if a.o.Canary == nil {
			a.fail(w, r, "canary_run", badRequest(`no canary on this gateway`))
			return
		}
		// The answer waits for the round trip: past the server's write
		// timeout if need be.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + 30*time.Second))
		detail := map[string]any{"remote": r.RemoteAddr}
		res, err := a.o.Canary.Run(r.Context(), req.Channel, timeout, detail)
		if errors.Is(err, canary.ErrNoGroup) {
			a.fail(w, r, "canary_run", badRequest(`channel: no canary_group in the config`))
			return
		}
		if err != nil {
			a.fail(w, r, "canary_run", err)
			return
		}
		oplog.Admin(a.log, "canary_run", r.RemoteAddr, detail)
		writeJSON(w, res)
	})
}
