package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
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

// kekConfig returns where the config's KEKs come from. Only the default
// file beside the data may be created, by serve on its first start (and
// only while the store holds no data keys: see keys.Config); a kek_file
// that the config names must exist.
func (c *Config) kekConfig(getenv func(string) string) (keys.Config, error) {
	ec := c.Encryption
	var kc keys.Config
	switch {
	case ec.KEKFile != "" && ec.KEKEnv != "":
		return kc, c.site.errorf("encryption", "give kek_file or kek_env, not both")
	case ec.KEKEnv != "":
		v := getenv(ec.KEKEnv)
		if v == "" {
			return kc, c.site.errorf("encryption.kek_env", "environment variable %s is not set", ec.KEKEnv)
		}
		k, err := keys.ParseKEK(v)
		if err != nil {
			return kc, c.site.errorf("encryption.kek_env", "%s: %v (want base64 of 32 bytes: linegate keys new-kek)", ec.KEKEnv, err)
		}
		kc.Current = k
	case ec.KEKFile != "":
		kc.CurrentFile = ec.KEKFile
	default:
		kc.CurrentFile, kc.Create = c.defaultKEKFile(), true
	}
	for i, f := range ec.PreviousKEKFiles {
		k, err := keys.LoadKEKFile(f)
		if err != nil {
			return kc, c.site.errorf(fmt.Sprintf("encryption.previous_kek_files[%d]", i), "%v", err)
		}
		kc.Previous = append(kc.Previous, k)
	}
	for i, name := range ec.PreviousKEKEnvs {
		k, err := keys.ParseKEK(getenv(name))
		if err != nil {
			return kc, c.site.errorf(fmt.Sprintf("encryption.previous_kek_envs[%d]", i), "%s: %v (want base64 of 32 bytes)", name, err)
		}
		kc.Previous = append(kc.Previous, k)
	}
	return kc, nil
}

// openRing returns the key ring of a config over store, once its KEKs are
// known to unwrap the store's data keys. With create (serve), a missing
// default KEK file is created where the store holds no data keys.
func openRing(ctx context.Context, e *env, cfg *Config, store keys.Store, create bool, log *slog.Logger) (*keys.Ring, error) {
	kc, err := cfg.kekConfig(e.getenv)
	if err != nil {
		return nil, err
	}
	kc.Create = kc.Create && create
	ring, created, err := keys.OpenRing(ctx, store, kc)
	if err != nil {
		return nil, fmt.Errorf("config: encryption: %w", err)
	}
	if created && log != nil {
		log.Warn("created a key encryption key beside the data: move it to a key store or a separate disk and set encryption.kek_file, or backups of the data directory carry their key",
			"kek_file", kc.CurrentFile, "kek", ring.Current())
	}
	return ring, nil
}

func runKeys(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "keys", []subcommand{
		{"new-kek", "print (or write to a file) a new key encryption key", runKeysNewKEK},
		{"rotate", "re-wrap every data key with the config's current key encryption key", runKeysRotate},
		{"shred", "destroy a subject's data key and delete the payloads sealed with it", runKeysShred},
	}, args)
}

func runKeysNewKEK(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys new-kek", "[-out FILE]")
	out := fs.String("out", "", "the file to create, 0600, never overwritten (default: print the key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(e.stdout, keys.GenerateKEK())
		return nil
	}
	k, err := keys.WriteKEKFile(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote a new key encryption key %s to %s\n", k.ID(), *out)
	return nil
}

func runKeysRotate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys rotate", "[-config FILE]")
	configPath := fs.String("config", "", "the serve config, whose encryption.kek_file (or kek_env) is the new KEK and previous_kek_files the old ones (default: the built-in example)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := ring.Rotate(ctx)
	if err != nil {
		return err
	}
	if t, ok := store.(interface{ TruncateWAL(context.Context) error }); ok {
		if err := t.TruncateWAL(ctx); err != nil {
			return err
		}
	}
	if _, err := appendAdmin(ctx, store, ring, "keys_rotated", map[string]any{"kek": ring.Current(), "rewrapped": rep.Rewrapped}, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d data keys re-wrapped with key encryption key %s (%d already were); the previous keys can now be removed from the config\n",
		rep.Rewrapped, ring.Current(), rep.Current)
	return nil
}

func runKeysShred(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys shred", "-subject user:U... [-config FILE]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	subject := fs.String("subject", "", "the subject whose data key to destroy: user:U..., group:C... or room:R... (a bare U..., C... or R... is one too; required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *subject == "" {
		return &helpHint{"keys shred", fmt.Errorf("%w: -subject is required", errUsage)}
	}
	s, err := parseSubject(*subject)
	if err != nil {
		return &helpHint{"keys shred", fmt.Errorf("%w: -subject %v", errUsage, err)}
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	// A subject without a data key has nothing sealed under it: never
	// written, or shredded before. Say so, and record nothing.
	have, err := store.SubjectKeys(ctx, []string{s})
	if err != nil {
		return err
	}
	if len(have) == 0 {
		fmt.Fprintf(e.stdout, "no data key exists for %s: nothing was destroyed or deleted, nothing recorded (the subject never wrote, or was shredded before; check the id)\n", s)
		return nil
	}
	at := time.Now()
	deleted, err := retention.Shred(ctx, store, ledger.NewWriter(store, ring, nil), ring, s, map[string]any{"by": "linegate keys shred"}, at)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "destroyed the data key of %s at %s; %d payloads sealed with it deleted, with a deletion record naming the subject by pseudonym %s\n",
		s, bothTimes(at), len(deleted), record.Pseudonym(s))
	return nil
}

// openConfigStore opens the store and the key ring of a config, for the
// CLI commands that run beside serve (purge, hold, keys rotate and shred):
// they do not take the SQLite data directory's lock (see beside).
func openConfigStore(ctx context.Context, e *env, configPath string) (*Config, backend, *keys.Ring, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := openBackend(ctx, e, cfg, beside)
	if err != nil {
		return nil, nil, nil, err
	}
	ring, err := openRing(ctx, e, cfg, store, false, nil)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	return cfg, store, ring, nil
}
