package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// verifyFailure prints a finding (a *ledger.VerifyError) and returns
// errVerifyFailed; any other error is returned as it is.
func verifyFailure(e *env, err error) error {
	var ve *ledger.VerifyError
	if errors.As(err, &ve) {
		fmt.Fprintf(e.stdout, "FAIL %s: %s\n", ve.Where, ve.Reason)
		return errVerifyFailed
	}
	return err
}

// errVerifyFailed is returned when the ledger does not verify; the
// details have been printed.
var errVerifyFailed = errors.New("the ledger does not verify")

func runVerify(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "verify", "[-config FILE | -data DIR]")
	configPath := flags.String("config", "", "the serve config whose ledger to verify")
	dataDir := flags.String("data", "", "a data directory to verify (its log.vkey names the origin)")
	kekFile := flags.String("kek", "", "with -data: the key encryption key file (default: DIR/kek, if there)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *configPath != "" && *dataDir != "" {
		return fmt.Errorf("%w: give -config or -data, not both", errUsage)
	}
	var dir, vkeyFile, publishDir, anchorsDir, origin string
	var cfg *Config
	if *dataDir != "" {
		dir = *dataDir
		vkeyFile = filepath.Join(dir, "log.vkey")
		publishDir = filepath.Join(dir, "published")
		anchorsDir = filepath.Join(dir, "anchors")
	} else {
		var err error
		if cfg, err = loadConfig(*configPath); err != nil {
			return err
		}
		dir, vkeyFile, publishDir, anchorsDir, origin = cfg.DataDir, vkeyPath(cfg.Log.KeyFile), cfg.Log.PublishDir, cfg.Log.AnchorsDir, cfg.Log.Origin
	}
	verifier, err := loadVerifier(vkeyFile)
	if err != nil {
		return err
	}
	if origin == "" {
		origin = verifier.Name()
	}
	var external []ledger.External
	published, err := os.ReadFile(filepath.Join(publishDir, "checkpoint"))
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(e.stderr, "warning: no published checkpoint in %s: a database rolled back cannot be detected\n", publishDir)
	} else if err != nil {
		return err
	} else {
		external = append(external, ledger.External{Name: "published checkpoint file", Signed: published})
	}
	anchors, err := ledger.ReadAnchors(anchorsDir, verifier, origin)
	if err != nil {
		return verifyFailure(e, err)
	}
	for _, a := range anchors {
		external = append(external, ledger.External{Name: "anchor " + a.Name(), Signed: a.Signed()})
	}
	var store backend
	dsn := ""
	if cfg != nil {
		if dsn, err = cfg.databaseDSN(e.getenv); err != nil {
			return err
		}
	}
	if dsn != "" {
		store, err = openBackend(ctx, e, cfg, beside)
	} else {
		dbPath := filepath.Join(dir, "ledger.db")
		if _, err := os.Stat(dbPath); err != nil {
			return err
		}
		store, err = sqlitestore.Open(ctx, dbPath, sqlitestore.Options{Shared: true}) // read only: never the lock
	}
	if err != nil {
		return err
	}
	defer store.Close()
	var sealer ledger.Sealer
	if cfg != nil {
		if sealer, err = openRing(ctx, e, cfg, store, false, nil); err != nil {
			return err
		}
	} else {
		f := *kekFile
		if f == "" {
			f = filepath.Join(dir, "kek")
		}
		if k, err := keys.LoadKEKFile(f); err == nil {
			sealer = keys.NewRing(store, k)
		} else if *kekFile != "" {
			return err
		}
	}
	start := time.Now()
	rep, err := ledger.Verify(ctx, store, verifier, origin, external, sealer)
	if err != nil {
		return verifyFailure(e, err)
	}
	d := time.Since(start)
	fmt.Fprintf(e.stdout, "OK %d records (%d in the tree, %d awaiting integration; %d payloads deleted by policy), %d checkpoints, %d tiles, %d anchors, %d payload bytes, in %v\n",
		rep.Records, rep.TreeSize, rep.Records-rep.TreeSize, rep.Deleted, rep.Checkpoints, rep.Tiles, len(anchors), rep.PayloadBytes, d.Round(time.Millisecond))
	return nil
}
