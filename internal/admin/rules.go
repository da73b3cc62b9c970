package admin

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/rules"
)

// Settings reads the settings stored for the replicas.
type Settings interface {
	Setting(ctx context.Context, key string) (string, error)
}

// settingRulesHash is the setting that holds the hash of the rule set
// last recorded.
const settingRulesHash = "rules_sha256"

// settingRulesReload is the setting a replica changes when it reloads its
// rules, so that the others reload theirs.
const settingRulesReload = "rules_reload"

// reloadByPeer is the trigger of a reload that another replica asked for.
const reloadByPeer = "another replica"

// RecordRules records the active rule set in the ledger when it differs
// from the last one recorded, or when effects are to be applied with the
// record (a reload asked for by an operator, which the other replicas are
// told of): the rules hash stored for the replicas changes in the same
// commit. why says what loaded the set ("start", "admin API", "SIGHUP").
func RecordRules(ctx context.Context, c outbound.Committer, s Settings, set *rules.Set, why string, effects ...ledger.Effect) error {
	last, err := s.Setting(ctx, settingRulesHash)
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
	effects = append(effects, outbound.SetSetting{Key: settingRulesHash, Value: set.Hash})
	if _, err := outbound.RecordAdmin(ctx, c, action, map[string]any{
		"sha256": set.Hash, "previous_sha256": last, "rules": names, "trigger": why,
	}, nil, time.Now(), effects...); err != nil {
		return fmt.Errorf("record rule set: %w", err)
	}
	return nil
}

func (a *API) ruleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/rules/reload", func(w http.ResponseWriter, r *http.Request) {
		set, err := a.reload(r.Context(), "admin API")
		if err != nil {
			a.fail(w, r, "rules_reload", err)
			return
		}
		writeJSON(w, map[string]any{"rules": len(set.Rules), "sha256": set.Hash})
	})
}

// reload loads the rule set again and swaps it in; the change is recorded.
// No rule file, however malformed, can crash serve from here: a panic
// while loading is an error like any other (errBadRules: the admin API
// answers 400, SIGHUP logs it), and the running rules stay.
func (a *API) reload(ctx context.Context, why string) (set *rules.Set, err error) {
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("loading the rules failed: %v", p)
			}
		}()
		set, err = a.o.LoadRules()
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadRules, err)
	}
	var tell []ledger.Effect
	if why != reloadByPeer {
		// Tell the other replicas (WatchReloads) to load their files too,
		// in the commit that records this reload.
		v := fmt.Sprintf("%s %d", a.o.Replica, time.Now().UnixNano())
		a.reloadMu.Lock()
		a.lastReload = v
		a.reloadMu.Unlock()
		tell = append(tell, outbound.SetSetting{Key: settingRulesReload, Value: v})
	}
	if err := RecordRules(ctx, a.o.Ledger, a.o.Store, set, why, tell...); err != nil {
		return nil, err
	}
	a.o.Rules.Swap(set)
	a.log.Info("rules reloaded", "trigger", why, "rules", len(set.Rules), "sha256", set.Hash)
	return set, nil
}

// WatchReloads reloads the rules when another replica has, checking every
// interval, until ctx ends. The rule files must be the same on every
// replica; the hash recorded in the ledger shows what each loaded.
//
// BUG: a store that cannot be read is skipped without a word; the reload
// it hides happens once the store answers again.
func (a *API) WatchReloads(ctx context.Context, every time.Duration) {
	first := true
	periodic.Every(ctx, every, func(ctx context.Context) {
		v, err := a.o.Store.Setting(ctx, settingRulesReload)
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

// ReloadOnSignal reloads the rules and the key encryption keys at each
// signal received on hup (SIGHUP), until ctx ends. A failure is logged,
// and what runs stays.
func (a *API) ReloadOnSignal(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if _, err := a.reload(ctx, "SIGHUP"); err != nil {
			a.log.Error("rules not reloaded", "err", err)
		}
		if err := a.reloadKEKs(ctx); err != nil {
			a.log.Error("key encryption keys not reloaded", "err", err)
		}
	}
}

// reloadKEKs reads the key encryption keys of the config again, so that a
// KEK rotation needs no restart: new data keys are wrapped with the new
// current KEK from then on.
func (a *API) reloadKEKs(ctx context.Context) error {
	kc, err := a.o.LoadKEKs()
	if err != nil {
		return err
	}
	// The new KEKs must unwrap the stored data keys, or the ring keeps its
	// own: a current key that wraps nothing yet, with the old ones as
	// previous, until keys rotate has re-wrapped them all.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.o.Keys.Reconfigure(ctx, kc); err != nil {
		return err
	}
	a.log.Info("key encryption keys reloaded", "current", a.o.Keys.Current(), "previous", len(kc.Previous))
	return nil
}
