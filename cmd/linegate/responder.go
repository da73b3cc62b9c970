package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/examples"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/rules"
)

// loadRules loads the rule set the config names, with the forward secrets
// of its environment. The built-in config's files come from the binary.
func loadRules(e *env, cfg *Config) (*rules.Set, error) {
	src := &rules.Sources{ReadFile: os.ReadFile, Getenv: e.getenv}
	if cfg.builtin {
		src.ReadFile = examples.ReadFile
	}
	set, err := rules.Load(cfg.RulesFiles, &rules.File{Rules: cfg.Rules, Consent: cfg.Consent}, src)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return set, nil
}

// newResponder builds the outbound Sender and the rule engine.
func newResponder(ctx context.Context, e *env, cfg *Config, secrets map[string]channelSecrets, led *ledger.Ledger,
	store backend, log *slog.Logger) (*outbound.Sender, *rules.Engine, error) {
	clients := map[string]*outbound.Client{}
	dry := map[string]bool{}
	limits := map[string]float64{}
	infos := map[string]rules.ChannelInfo{}
	for _, ch := range cfg.Channels {
		base := ch.LineAPIBase
		if base == "" {
			base = cfg.LineAPIBase
		}
		clients[ch.ID] = &outbound.Client{Base: base, Token: secrets[ch.ID].token, HTTP: &http.Client{Timeout: 10 * time.Second}}
		dry[ch.ID] = ch.DryRun
		limits[ch.ID] = ch.RateLimit
		infos[ch.ID] = rules.ChannelInfo{Retention: ch.Retention, AllowDryRunHeader: ch.AllowDryRunHeader}
	}
	envKill := strings.EqualFold(strings.TrimSpace(e.getenv("REPLY_ENABLE")), "false")
	if envKill {
		log.Warn("REPLY_ENABLE=false: the kill switch is on, nothing will be sent")
	}
	sender := outbound.NewSender(outbound.SenderOptions{
		Clients: clients, Ledger: led, State: store, EnvKillSwitch: envKill,
		DryRunChannels: dry, DryRunAll: cfg.DryRun, RateLimits: limits, Logger: log,
	})
	if err := sender.Refresh(ctx); err != nil {
		return nil, nil, err
	}
	set, err := loadRules(e, cfg)
	if err != nil {
		return nil, nil, err
	}
	engine := rules.NewEngine(set, rules.EngineOptions{
		Cooldowns: store,
		Sender:    sender, Consent: led, Ledger: led, Channels: infos, LookupHosts: cfg.LookupHosts, Logger: log,
	})
	if err := recordRuleSet(ctx, led, store, set, "start"); err != nil {
		return nil, nil, err
	}
	log.Info("rules loaded", "rules", len(set.Rules), "sha256", set.Hash)
	return sender, engine, nil
}

// recordRuleSet records the active rule set in the ledger when it differs
// from the last one recorded, or when effects are to be applied with the
// record (a reload asked for by an operator, which the other replicas are
// told of): the rules hash stored for the replicas changes in the same
// commit.
func recordRuleSet(ctx context.Context, c outbound.Committer, store backend, set *rules.Set, why string, effects ...ledger.Effect) error {
	last, err := store.Setting(ctx, "rules_sha256")
	if err != nil {
		return err
	}
	if last == set.Hash && len(effects) == 0 {
		return nil
	}
	var names []string
	for _, r := range set.Rules {
		names = append(names, r.Name)
	}
	action := "rules_changed"
	if last == set.Hash {
		action = "rules_reloaded"
	}
	effects = append(effects, outbound.SetSetting{Key: "rules_sha256", Value: set.Hash})
	if _, err := outbound.RecordAdmin(ctx, c, action, map[string]any{
		"sha256": set.Hash, "previous_sha256": last, "rules": names, "trigger": why,
	}, nil, time.Now(), effects...); err != nil {
		return fmt.Errorf("record rule set: %w", err)
	}
	return nil
}

// adminAPI is the authenticated admin API.
type adminAPI struct {
	reloadMu   sync.Mutex
	lastReload string // the last value of settingRulesReload seen or set

	cfg    *Config
	e      *env
	led    *ledger.Ledger
	store  backend
	ring   *keys.Ring
	sender *outbound.Sender
	engine *rules.Engine
	log    *slog.Logger
}

func (a *adminAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/rules/reload", func(w http.ResponseWriter, r *http.Request) {
		set, err := a.reload(r.Context(), "admin API")
		switch {
		case errors.Is(err, errBadRules):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			a.fail(w, "rules_reload", err)
			return
		}
		writeJSON(w, map[string]any{"rules": len(set.Rules), "sha256": set.Hash})
	})
	mux.HandleFunc("GET /admin/kill-switch", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"on": a.sender.KillSwitch()})
	})
	mux.HandleFunc("POST /admin/kill-switch", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			On     *bool  `json:"on"`
			Reason string `json:"reason"`
		}
		if !decode(w, r, &req) || req.On == nil {
			http.Error(w, `want {"on": true|false, "reason": "..."}`, http.StatusBadRequest)
			return
		}
		detail := map[string]any{"reason": req.Reason, "remote": r.RemoteAddr}
		if err := a.sender.SetKillSwitch(r.Context(), a.led, *req.On, detail); err != nil {
			a.fail(w, "kill_switch", err)
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
			http.Error(w, `want {"channel": "" for all, "on": true|false}`, http.StatusBadRequest)
			return
		}
		detail := map[string]any{"remote": r.RemoteAddr}
		if err := a.sender.SetDryRun(r.Context(), a.led, req.Channel, *req.On, detail); err != nil {
			a.fail(w, "dry_run", err)
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
			http.Error(w, `want {"channel", "user", "opt_in": true|false, "source"}`, http.StatusBadRequest)
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

// errBadRules marks a rule set that does not load: the operator's to fix.
var errBadRules = errors.New("rules not reloaded")

// reload loads the rule set again and swaps it in; the change is recorded.
// No rule file, however malformed, can crash serve from here: a panic
// while loading is an error like any other (the admin API answers 400,
// SIGHUP logs it), and the running rules stay.
func (a *adminAPI) reload(ctx context.Context, why string) (set *rules.Set, err error) {
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("loading the rules failed: %v", p)
			}
		}()
		set, err = loadRules(a.e, a.cfg)
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadRules, err)
	}
	var tell []ledger.Effect
	if why != reloadByPeer {
		// Tell the other replicas (watchReloads) to load their files too,
		// in the commit that records this reload.
		v := fmt.Sprintf("%s %d", replicaName(), time.Now().UnixNano())
		a.reloadMu.Lock()
		a.lastReload = v
		a.reloadMu.Unlock()
		tell = append(tell, outbound.SetSetting{Key: settingRulesReload, Value: v})
	}
	if err := recordRuleSet(ctx, a.led, a.store, set, why, tell...); err != nil {
		return nil, err
	}
	a.engine.Swap(set)
	a.log.Info("rules reloaded", "trigger", why, "rules", len(set.Rules), "sha256", set.Hash)
	return set, nil
}

// settingRulesReload is the setting a replica changes when it reloads its
// rules, so that the others reload theirs.
const settingRulesReload = "rules_reload"

const reloadByPeer = "another replica"

// watchReloads reloads the rules when another replica has, checking every
// interval, until ctx ends. The rule files must be the same on every
// replica; the hash recorded in the ledger shows what each loaded.
func (a *adminAPI) watchReloads(ctx context.Context, every time.Duration) {
	first := true
	periodically(ctx, every, func() {
		v, err := a.store.Setting(ctx, settingRulesReload)
		if err != nil {
			return
		}
		a.reloadMu.Lock()
		changed := v != a.lastReload
		a.lastReload = v
		a.reloadMu.Unlock()
		if changed && !first {
			if _, err := a.reload(ctx, reloadByPeer); err != nil {
				a.log.Error("rules not reloaded", "err", err)
			}
		}
		first = false
	})
}

// record records an admin action, sealed under the keys of the subjects
// it concerns, with the effects that make it take effect, in one commit:
// it is applied if and only if it is recorded.
func (a *adminAPI) record(w http.ResponseWriter, r *http.Request, action string, detail map[string]any, subjects []string, effects ...ledger.Effect) (uint64, bool) {
	detail["remote"] = r.RemoteAddr
	idx, err := outbound.RecordAdmin(r.Context(), a.led, action, detail, subjects, time.Now(), effects...)
	if err != nil {
		a.fail(w, action, err)
		return 0, false
	}
	a.done(w, action, detail)
	return idx, true
}

// fail answers an admin action that was neither applied nor recorded.
func (a *adminAPI) fail(w http.ResponseWriter, action string, err error) {
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		http.Error(w, action+": not found: neither applied nor recorded\n", http.StatusNotFound)
	case errors.Is(err, context.Canceled):
	default:
		oplog.AdminFailed(a.log, action, "", err)
		http.Error(w, action+": the ledger is unavailable: neither applied nor recorded\n", http.StatusServiceUnavailable)
	}
}

// done answers an admin action that was applied and recorded.
func (a *adminAPI) done(w http.ResponseWriter, action string, detail map[string]any) {
	remote, _ := detail["remote"].(string) // who asked: recorded with the action
	oplog.Admin(a.log, action, remote, detail)
	writeJSON(w, detail)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	return err == nil && json.Unmarshal(b, v) == nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
