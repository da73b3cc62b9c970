// Package admin is the gateway's admin listener: the operator's API under
// /admin/ (kill switch, dry-run, consent, rule reloads, legal holds,
// purges, a subject's requests and crypto-shredding, status, and
// Alertmanager's notifications, each alert recorded), behind a bearer
// token with pprof, beside the probes (/healthz, /readyz), /metrics and
// the log's read side (/log/).
//
// Every admin action that changes state is recorded in the ledger in the
// same commit that applies it (outbound.RecordAdmin with its effects): it
// is applied if and only if it is recorded, and a failure answers "neither
// applied nor recorded". Errors become HTTP statuses in one place,
// statusOf.
//
// The package declares what it needs of the rest of the gateway as small
// interfaces (Ledger, Store, Pipeline, Switches, Rules, Keys); main wires
// the real ones.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Ledger is the log the admin API records its actions in and reports on.
// *ledger.Ledger implements it. Commit returns once the records and their
// effects are durable, or an error (ledger.ErrPushback when it cannot take
// them now): nothing is applied then.
type Ledger interface {
	outbound.Committer
	// Head is the latest published tree head.
	Head() ledger.TreeHead
	// Sequencing reports whether this replica sequences the log.
	Sequencing() bool
	// Ready reports whether the ledger takes writes now (/readyz).
	Ready(ctx context.Context) error
	// Handler serves the log's read side (tlog-tiles) under /log/.
	Handler() http.Handler
}

// Store is what the admin API reads from the database. Its errors mean the
// store is unavailable (503).
type Store interface {
	retention.Store
	// Count is the number of records appended.
	Count(ctx context.Context) (uint64, error)
	// Setting returns a stored setting ("" when unset).
	Setting(ctx context.Context, key string) (string, error)
}

// Pipeline is the event pipeline, for status.
type Pipeline interface {
	// Idle reports whether no event waits to be handled.
	Idle(ctx context.Context) (bool, error)
}

// Switches are the outbound switches. *outbound.Sender implements them:
// each Set records its admin action through c, with the switch's new
// state as the effect, and adds what it changed to detail.
type Switches interface {
	KillSwitch() bool
	DryRunStatus() map[string]bool
	SetKillSwitch(ctx context.Context, c outbound.Committer, on bool, detail map[string]any) error
	SetDryRun(ctx context.Context, c outbound.Committer, channel string, on bool, detail map[string]any) error
}

// Rules is the rule engine's active set. *rules.Engine implements it; Swap
// is safe while events are handled.
type Rules interface {
	Rules() *rules.Set
	Swap(set *rules.Set) *rules.Set
}

// Keys is the key ring that seals payloads. *keys.Ring implements it.
type Keys interface {
	ledger.Sealer
	// Current names the current key encryption key.
	Current() string
	// Reconfigure takes new key encryption keys, once they are known to
	// unwrap the stored data keys.
	Reconfigure(ctx context.Context, c keys.Config) error
}

// Options configures the API. Every field is required but Token, Metrics
// and Logger.
type Options struct {
	Ledger   Ledger
	Store    Store
	Pipeline Pipeline
	Switches Switches
	Rules    Rules
	Keys     Keys
	// LoadRules loads the rule files again, for a reload. It may fail,
	// or even panic, on a bad file: the running rules stay.
	LoadRules func() (*rules.Set, error)
	// LoadKEKs reads the key encryption keys of the config again.
	LoadKEKs func() (keys.Config, error)
	// Canary runs the canary (nil: POST /admin/canary is refused).
	Canary Canary
	// Conversations serves /admin/conversations, the handoff to people
	// (nil: not served). *handoff.Service implements it.
	Conversations Conversations
	// Policies are the retention classes, for purges and requests.
	Policies map[string]retention.Policy
	// Channels are the ids of the configured channels: a switch or a
	// consent for another is a bad request (nil: not checked).
	Channels []string
	// Origin is the log's origin; Replica names this process among the
	// replicas (host and process id).
	Origin, Replica string
	// Token authenticates /admin/ and /debug/pprof/ calls as a bearer
	// token; with none, every such call is refused.
	Token []byte
	// Metrics is served as /metrics (default: none).
	Metrics prometheus.Gatherer
	Logger  *slog.Logger
}

// Conversations adds its routes to the bearer-authenticated mux.
type Conversations interface {
	Routes(mux *http.ServeMux)
}

// API is the admin listener's handler and the work that goes with it
// (rule reloads by signal and from the other replicas).
type API struct {
	o   Options
	log *slog.Logger

	reloadMu   sync.Mutex
	lastReload string // the last value of settingRulesReload seen or set

	alerts *alertMetrics
}

// New returns the admin API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	return &API{o: o, log: o.Logger, alerts: newAlertMetrics()}
}

// Handler returns the admin listener's handler: the probes, /metrics and
// /log/ open; /admin/ and /debug/pprof/ behind the bearer token.
func (a *API) Handler() http.Handler {
	authed := http.NewServeMux()
	authed.HandleFunc("GET /admin/status", a.status)
	a.canaryRoutes(authed)
	a.switchRoutes(authed)
	a.ruleRoutes(authed)
	a.holdRoutes(authed)
	a.subjectRoutes(authed)
	a.alertRoutes(authed)
	if a.o.Conversations != nil {
		a.o.Conversations.Routes(authed)
	}
	authed.HandleFunc("GET /debug/pprof/", pprof.Index)
	authed.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	authed.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	authed.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)

	mux := http.NewServeMux()
	mux.Handle("GET /healthz", a.Health())
	mux.Handle("GET /readyz", a.Ready())
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.o.Metrics, promhttp.HandlerOpts{}))
	mux.Handle("GET /log/", http.StripPrefix("/log", a.o.Ledger.Handler()))
	mux.Handle("/admin/", bearer(a.o.Token, authed))
	mux.Handle("/debug/pprof/", bearer(a.o.Token, authed))
	return mux
}

// Health answers the liveness probe: the process serves, nothing more.
func (a *API) Health() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
}

// Ready answers the readiness probe: 200 while the ledger takes writes,
// else 503 with why.
func (a *API) Ready() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.o.Ledger.Ready(ctx); err != nil {
			a.log.Warn("not ready", "err", err)
			// The error says why (the store, a record refused, a
			// published checkpoint not extended): never a secret.
			http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
}

// status reports the gateway's state: the log, the pipeline, the switches,
// the rules and keys in use, and this replica's part.
func (a *API) status(w http.ResponseWriter, r *http.Request) {
	h := a.o.Ledger.Head()
	n, err := a.o.Store.Count(r.Context())
	if err != nil {
		a.failRead(w, r, err)
		return
	}
	idle, err := a.o.Pipeline.Idle(r.Context())
	if err != nil {
		a.failRead(w, r, err)
		return
	}
	writeJSON(w, map[string]any{
		"origin": a.o.Origin, "tree_size": h.Size, "records": n, "checkpoint": string(h.Checkpoint),
		"pipeline_idle": idle, "kill_switch": a.o.Switches.KillSwitch(), "rules_sha256": a.o.Rules.Rules().Hash,
		"kek": a.o.Keys.Current(), "replica": a.o.Replica, "sequencer": a.o.Ledger.Sequencing(), "dry_run": a.o.Switches.DryRunStatus(),
	})
}

// decode reads a JSON request body of at most 64 KiB into v.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	return err == nil && json.Unmarshal(b, v) == nil
}

// knownChannel reports whether id names a configured channel.
func (a *API) knownChannel(id string) bool {
	return a.o.Channels == nil || slices.Contains(a.o.Channels, id)
}

// decodeOptional is decode for a body that may be absent (v keeps its zero
// value); a body that is there must decode.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err != nil {
		return false
	}
	return len(bytes.TrimSpace(b)) == 0 || json.Unmarshal(b, v) == nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
