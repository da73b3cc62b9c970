package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/pgstore"
)

func runConfig(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "config", []subcommand{
		{"check", "check a config and everything it names, creating nothing", runConfigCheck},
	}, args)
}

// runConfigCheck checks a config as serve would before it starts, and
// more: every key, every secret (resolvable), every file it names
// (readable), the rules (they compile), the checkpoint key (named by the
// origin), and, when the database exists, that the KEKs unwrap its data
// keys. It opens the database read-only, like verify, and creates nothing.
func runConfigCheck(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "config check", "[-config FILE]")
	configPath := fs.String("config", "", "the config file to check (default: the built-in example)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	name := cfg.site.file
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	errs := []error{checkConfigFiles(ctx, e, cfg)}
	errs = append(errs, checkStore(ctx, e, cfg, note))
	if err := errors.Join(errs...); err != nil {
		for _, n := range notes {
			fmt.Fprintf(e.stdout, "note: %s\n", n)
		}
		return err
	}
	dataDir, _ := filepath.Abs(cfg.DataDir)
	fmt.Fprintf(e.stdout, "config %s: OK\n", name)
	fmt.Fprintf(e.stdout, "  data_dir: %s (a relative data_dir is relative to the working directory; other paths, to the config file's directory)\n", dataDir)
	var ids []string
	for _, ch := range cfg.Channels {
		ids = append(ids, ch.ID)
	}
	fmt.Fprintf(e.stdout, "  channels: %s\n", strings.Join(ids, ", "))
	if set, err := loadRules(e, cfg); err == nil {
		fmt.Fprintf(e.stdout, "  rules: %d, sha256 %s\n", len(set.Rules), set.Hash)
	}
	for _, n := range notes {
		fmt.Fprintf(e.stdout, "  note: %s\n", n)
	}
	return nil
}

// checkConfigFiles checks what a config names outside itself: the
// secrets and tokens resolve, the subjects, rule, reply, key and TLS files
// read, the rules compile, and an existing checkpoint key is the origin's.
// It creates and opens nothing else: serve runs it before it creates the
// data directory, so that a config that cannot run leaves nothing behind.
func checkConfigFiles(ctx context.Context, e *env, cfg *Config) error {
	var errs []error
	if _, err := cfg.databaseDSN(e.getenv); err != nil {
		errs = append(errs, err)
	}
	for _, ch := range cfg.Channels {
		if _, err := ch.resolve(e.getenv); err != nil {
			errs = append(errs, err)
		}
		for _, a := range ch.Audiences {
			if _, err := a.subjects(); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, ch.checkDestinationSecrets(cfg, e.getenv)...)
	}
	errs = append(errs, cfg.checkDestinationSecretReuse(e.getenv)...)
	if _, err := cfg.adminToken(e.getenv); err != nil {
		errs = append(errs, err)
	}
	if cfg.Archive != nil {
		if _, err := cfg.openBucket(e.getenv); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Proxy != nil {
		if _, err := cfg.proxyTools(e.getenv); err != nil {
			errs = append(errs, err)
		}
	}
	if kc, err := cfg.kekConfig(e.getenv); err != nil {
		errs = append(errs, err)
	} else if kc.Current == nil && !kc.Create {
		// A kek_file the config names must be there (only the default
		// one beside the data is created).
		if _, err := keys.LoadKEKFile(kc.CurrentFile); err != nil {
			errs = append(errs, cfg.site.errorf("encryption.kek_file", "%v", err))
		}
	}
	if _, err := loadRules(e, cfg); err != nil {
		errs = append(errs, cfg.site.errorf("rules_files", "%v", err))
	}
	if cfg.TLS != nil {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			errs = append(errs, cfg.site.errorf("tls", "%v", err))
		}
	}
	if _, err := os.Stat(cfg.Log.KeyFile); err == nil {
		if _, _, err := loadKeys(cfg.Log.KeyFile, cfg.Log.Origin); err != nil {
			errs = append(errs, cfg.site.errorf("log.key_file", "%v", err))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, cfg.site.errorf("log.key_file", "%v", err))
	}
	return errors.Join(errs...)
}

// checkStore checks, when the config's database exists, that its KEKs
// unwrap the data keys stored there, reading one snapshot read-only. With
// no database yet there is nothing to check against: it says so in a note.
func checkStore(ctx context.Context, e *env, cfg *Config, note func(string, ...any)) error {
	dsn, err := cfg.databaseDSN(e.getenv)
	if err != nil {
		return nil // reported by checkConfigFiles
	}
	if dsn == "" {
		db := filepath.Join(cfg.DataDir, "ledger.db")
		if !fileExists(db) {
			note("no database yet (%s): serve creates it; the key encryption key is not checked against stored data keys", db)
			if !fileExists(cfg.Log.KeyFile) {
				note("no checkpoint key yet (%s): serve creates it at its first start", cfg.Log.KeyFile)
			}
			return nil
		}
	}
	src, err := openReadOnly(ctx, e, cfg, cfg.DataDir)
	if errors.Is(err, pgstore.ErrNoLedger) {
		note("the database holds no ledger yet: serve creates it; the key encryption key is not checked against stored data keys")
		return nil
	}
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer src.Close()
	view, err := src.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer view.Close()
	vk, ok := view.(viewKeys)
	if !ok {
		return errors.New("database: its snapshots hold no data keys")
	}
	kc, err := cfg.kekConfig(e.getenv)
	if err != nil {
		return nil // reported by checkConfigFiles
	}
	samples, err := vk.KEKSamples(ctx)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if kc.Current == nil && kc.Create && !fileExists(kc.CurrentFile) {
		if len(samples) > 0 {
			return cfg.site.errorf("encryption", "no key encryption key: %s does not exist, and the database holds data keys: give the KEK that wrapped them (kek_file or kek_env)", kc.CurrentFile)
		}
		note("no key encryption key yet (%s): serve creates it at its first start", kc.CurrentFile)
		return nil
	}
	kc.Create = false
	ring, _, err := keys.OpenRing(ctx, snapshotKeys{vk}, kc)
	if err != nil {
		return cfg.site.errorf("encryption", "%v", err)
	}
	if len(samples) == 0 {
		note("the database holds no data keys yet: key encryption key %s will wrap them", ring.Current())
	} else {
		note("key encryption key %s unwraps the database's data keys", ring.Current())
	}
	return nil
}
