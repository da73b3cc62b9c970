package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/retention"
)

// EncryptionConfig names the key encryption key (KEK) that wraps the
// subjects' data keys. The current KEK wraps new data keys; previous ones
// still unwrap data keys that `linegate keys rotate` has not re-wrapped.
type EncryptionConfig struct {
	// The current KEK: one of kek_file and kek_env, base64 of 32 bytes
	// (`linegate keys new-kek`). With neither, DataDir/kek, which serve
	// creates on its first start.
	KEKFile string `yaml:"kek_file"`
	KEKEnv  string `yaml:"kek_env"`
	// Previous KEKs, during a rotation.
	PreviousKEKFiles []string `yaml:"previous_kek_files"`
	PreviousKEKEnvs  []string `yaml:"previous_kek_envs"`
}

// defaultKEKFile is the KEK file used when the config names none.
func (c *Config) defaultKEKFile() string { return filepath.Join(c.DataDir, "kek") }

// keks loads the KEKs of the config. With create, a missing default KEK
// file is created (serve's first start).
func (c *Config) keks(getenv func(string) string, create bool, log *slog.Logger) (keys.KEK, []keys.KEK, error) {
	ec := c.Encryption
	if ec.KEKFile != "" && ec.KEKEnv != "" {
		return nil, nil, errors.New("config: encryption: give kek_file or kek_env, not both")
	}
	var cur keys.KEK
	var err error
	switch {
	case ec.KEKEnv != "":
		v := getenv(ec.KEKEnv)
		if v == "" {
			return nil, nil, fmt.Errorf("config: encryption.kek_env: environment variable %s is not set", ec.KEKEnv)
		}
		if cur, err = keys.ParseKEK(v); err != nil {
			return nil, nil, fmt.Errorf("config: encryption.kek_env: %w", err)
		}
	default:
		path := ec.KEKFile
		if path == "" {
			path = c.defaultKEKFile()
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && create {
				if err := writeKEK(path); err != nil {
					return nil, nil, err
				}
				if log != nil {
					log.Warn("created a key encryption key beside the data: move it to a key store or a separate disk and set encryption.kek_file, or backups of the data directory carry their key",
						"kek_file", path)
				}
			}
		}
		if cur, err = keys.LoadKEKFile(path); err != nil {
			return nil, nil, fmt.Errorf("config: encryption: %w", err)
		}
	}
	var prev []keys.KEK
	for _, f := range ec.PreviousKEKFiles {
		k, err := keys.LoadKEKFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("config: encryption.previous_kek_files: %w", err)
		}
		prev = append(prev, k)
	}
	for _, name := range ec.PreviousKEKEnvs {
		k, err := keys.ParseKEK(getenv(name))
		if err != nil {
			return nil, nil, fmt.Errorf("config: encryption.previous_kek_envs: %s: %w", name, err)
		}
		prev = append(prev, k)
	}
	return cur, prev, nil
}

// writeKEK writes a new KEK to a file that must not exist.
func writeKEK(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, keys.GenerateKEK()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openRing returns the key ring of a config over store.
func openRing(e *env, cfg *Config, store keys.Store, create bool, log *slog.Logger) (*keys.Ring, error) {
	cur, prev, err := cfg.keks(e.getenv, create, log)
	if err != nil {
		return nil, err
	}
	return keys.NewRing(store, cur, prev...), nil
}

func runKeys(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: linegate keys new-kek|rotate|shred [flags]", errUsage)
	}
	fs := newFlagSet(e, "keys "+args[0], "[-config FILE] [flags]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	out := fs.String("out", "", "new-kek: the file to create (default: print the key)")
	subject := fs.String("subject", "", "shred: the subject whose data key to destroy (user:U..., group:C..., room:R...)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "new-kek":
		if *out == "" {
			fmt.Fprintln(e.stdout, keys.GenerateKEK())
			return nil
		}
		if err := writeKEK(*out); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote a new key encryption key to %s\n", *out)
		return nil
	case "rotate", "shred":
	default:
		return fmt.Errorf("%w: unknown keys command %q", errUsage, args[0])
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	if args[0] == "rotate" {
		rep, err := ring.Rotate(ctx)
		if err != nil {
			return err
		}
		if t, ok := store.(interface{ TruncateWAL(context.Context) error }); ok {
			if err := t.TruncateWAL(ctx); err != nil {
				return err
			}
		}
		if err := appendAdmin(ctx, store, ring, "keys_rotated", map[string]any{"kek": ring.Current(), "rewrapped": rep.Rewrapped}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%d data keys re-wrapped with key encryption key %s (%d already were); the previous keys can now be removed from the config\n",
			rep.Rewrapped, ring.Current(), rep.Current)
		return nil
	}
	if *subject == "" {
		return fmt.Errorf("%w: -subject is required", errUsage)
	}
	deleted, err := retention.Shred(ctx, store, ring, *subject, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "destroyed the data key of %s; %d payloads deleted with it\n", *subject, len(deleted))
	return nil
}

// openConfigStore opens the store and the key ring of a config, for the
// CLI.
func openConfigStore(ctx context.Context, e *env, configPath string) (*Config, backend, *keys.Ring, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := openBackend(ctx, e, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	ring, err := openRing(e, cfg, store, false, nil)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	return cfg, store, ring, nil
}

// subjectRoutes adds the calls about one subject: a deletion request or a
// consent withdrawal, and crypto-shredding.
func (a *adminAPI) subjectRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/subjects/{subject}/requests", func(w http.ResponseWriter, r *http.Request) {
		subject := r.PathValue("subject")
		var req struct {
			Kind    retention.RequestKind `json:"kind"`
			Channel string                `json:"channel"`
		}
		if !decode(w, r, &req) {
			http.Error(w, `want {"kind": "deletion" or "withdrawal", "channel"}`, http.StatusBadRequest)
			return
		}
		at := time.Now()
		rep, err := retention.Apply(r.Context(), a.store, a.cfg.policies(), subject, req.Kind, at)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.Kind == retention.Withdrawal && req.Channel != "" {
			if user, ok := cutPrefixFold(subject, "user:"); ok {
				if err := a.store.SetConsent(r.Context(), req.Channel, user, false, at, "withdrawal request"); err != nil {
					http.Error(w, "store unavailable", http.StatusServiceUnavailable)
					return
				}
			}
		}
		a.record(w, r, "subject_request", map[string]any{"subject": subject, "kind": req.Kind, "channel": req.Channel,
			"at_ms": at.UnixMilli(), "records": rep.Records, "changed": rep.Changed, "no_rule": rep.NoRule})
	})
	mux.HandleFunc("POST /admin/subjects/{subject}/shred", func(w http.ResponseWriter, r *http.Request) {
		subject := r.PathValue("subject")
		deleted, err := retention.Shred(r.Context(), a.store, a.ring, subject, time.Now())
		switch {
		case errors.Is(err, retention.ErrHeld):
			http.Error(w, err.Error(), http.StatusConflict)
			return
		case err != nil && !ledger.ValidSubject(subject):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			a.log.Error("shred failed", "err", err)
			http.Error(w, "shred failed", http.StatusServiceUnavailable)
			return
		}
		a.record(w, r, "subject_key_destroyed", map[string]any{"subject": subject, "deleted": len(deleted)})
	})
}

// reloadKEKs reads the key encryption keys of the config file again, so
// that a KEK rotation needs no restart: new data keys are wrapped with the
// new current KEK from then on.
func (a *adminAPI) reloadKEKs() error {
	cfg := a.cfg
	if !cfg.builtin {
		c, err := loadConfig(cfg.path)
		if err != nil {
			return err
		}
		cfg = c
	}
	cur, prev, err := cfg.keks(a.e.getenv, false, nil)
	if err != nil {
		return err
	}
	a.ring.SetKEKs(cur, prev...)
	a.log.Info("key encryption keys reloaded", "current", cur.ID(), "previous", len(prev))
	return nil
}

// runSubjectIndex keeps the index of records by subject up to date,
// behind the appends, until ctx ends: a few hundred records at a time, and
// only while no webhook waits for a commit (busy), so that the index never
// delays an acknowledgement for long.
func runSubjectIndex(ctx context.Context, store backend, every time.Duration, busy func() bool, log *slog.Logger) {
	periodically(ctx, every, func() {
		for ctx.Err() == nil && !busy() {
			more, err := store.IndexSubjectsBatch(ctx, 256)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("records not indexed by subject", "err", err)
				}
				return
			}
			if !more {
				return
			}
		}
	})
}
