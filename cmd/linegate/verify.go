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
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/retention"
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

// runVerify checks the ledger from storage, which it opens read-only: it
// never migrates the database nor writes to it, and reads an SQLite file
// that its user may only read. Everything it checks comes from one
// snapshot, so that it can run beside a gateway under load.
func runVerify(ctx context.Context, e *env, args []string) (err error) {
	flags := newFlagSet(e, "verify", "[-config FILE | -data DIR] [-vkey FILE] [-kek FILE] [-metrics-file FILE] [-witness-quorum K [-witness-key VKEY...] [-witness-max-lag D]]")
	configPath := flags.String("config", "", "the serve config whose ledger to verify")
	dataDir := flags.String("data", "", "a data directory to verify")
	vkeyFlag := flags.String("vkey", "", "the checkpoint verifier key you hold (default: the data directory's own log.vkey, with a warning)")
	noPublished := flags.Bool("no-published", false, "pass without the published checkpoint file (kept elsewhere): a database cut back is then caught by the anchors alone")
	kekFile := flags.String("kek", "", "the key encryption key file, to open sealed payloads and check their commitments (default: the config's, or DIR/kek with -data; without one, the structure only)")
	metricsFile := flags.String("metrics-file", "", "write the outcome to FILE for node_exporter's textfile collector (*.prom): linegate_verify_ok, linegate_verify_last_run_timestamp_seconds, linegate_verify_records")
	wf := addWitnessFlags(flags, true)
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	var verified uint64
	if *metricsFile != "" {
		defer func() { err = writeVerifyMetrics(*metricsFile, err, verified) }()
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
	if *vkeyFlag != "" {
		vkeyFile = *vkeyFlag
	} else {
		fmt.Fprintf(e.stderr, "warning: trusting %s, the key kept beside the data: whoever can rewrite the database can replace it too; pin the key you hold with -vkey\n", vkeyFile)
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
	missingPublished := errors.Is(err, fs.ErrNotExist)
	if missingPublished {
		fmt.Fprintf(e.stderr, "warning: no published checkpoint in %s: a database rolled back cannot be detected against it\n", publishDir)
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
	cosigned, err := wf.verifyWitnesses(e, cfg, publishDir, verifier)
	if err != nil {
		return err
	}
	external = append(external, cosigned...)
	src, err := openReadOnly(ctx, e, cfg, dir)
	if err != nil {
		return err
	}
	defer src.Close()
	view, err := src.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer view.Close()
	sealer, err := verifySealer(ctx, e, cfg, dir, *kekFile, view)
	if err != nil {
		return err
	}
	start := time.Now()
	// Deletions are checked against the retention classes of the config
	// (or the presets, with -data): each must have been due.
	policies := retention.Policies(retention.Presets())
	if cfg != nil {
		policies = retention.Policies(cfg.policies())
	}
	lagErr := wf.checkWitnessLag(ctx, e, cfg, cosigned, verifier, view, time.Now())
	rep, err := ledger.Verify(ctx, view, verifier, origin, external, sealer, ledger.WithDeletionPolicy(policies))
	// A view that was not what it seemed (an SQLite file written while
	// it was read without locks) makes any finding void.
	if cerr := view.Close(); cerr != nil {
		return cerr
	}
	if err != nil {
		return verifyFailure(e, err)
	}
	if lagErr != nil {
		return lagErr
	}
	if missingPublished && rep.TreeSize > 0 && !*noPublished {
		// The file is the one copy of the latest tree outside the
		// database (besides the anchors): without it, a database whose
		// last records were deleted and tree head cut back looks whole.
		fmt.Fprintf(e.stdout, "FAIL published checkpoint file: missing from %s, while the database holds a signed tree of size %d (give -no-published if it is kept elsewhere)\n", publishDir, rep.TreeSize)
		return errVerifyFailed
	}
	verified = rep.Records
	summary, notes := verifyReport(rep, len(anchors), sealer != nil, time.Since(start))
	fmt.Fprintln(e.stdout, summary)
	for _, n := range notes {
		fmt.Fprintln(e.stdout, n)
	}
	return nil
}

// verifyReport is what verify says of a ledger that verified: the OK
// line, and the notes of what it acknowledged, left pending, or could not
// check. opened says whether payloads were opened (a key was given).
func verifyReport(rep ledger.VerifyReport, anchors int, opened bool, d time.Duration) (string, []string) {
	summary := fmt.Sprintf("OK %d records (%d in the tree, %d awaiting integration; %d payloads deleted by policy), %d checkpoints, %d tiles, %d anchors, %d payload bytes, in %v",
		rep.Records, rep.TreeSize, rep.Records-rep.TreeSize, rep.Deleted, rep.Checkpoints, rep.Tiles, anchors, rep.PayloadBytes, d.Round(time.Millisecond))
	var notes []string
	for _, r := range rep.Rollbacks {
		notes = append(notes, fmt.Sprintf("ACKNOWLEDGED LOSS: %s", r))
	}
	if rep.DeletedUnsigned > 0 {
		notes = append(notes, fmt.Sprintf("PENDING: %d payloads deleted by deletion records appended after the signed tree head; they count once a checkpoint signs them (run verify again)", rep.DeletedUnsigned))
	}
	if rep.DueUnchecked > 0 {
		notes = append(notes, fmt.Sprintf("NOT CHECKED: %d deletions of records whose retention class verify has no policy for (give the config with -config)", rep.DueUnchecked))
	}
	if !opened && rep.Unopened > 0 {
		n := fmt.Sprintf("NOT CHECKED: payload commitments: %d payloads sealed, not opened (no key encryption key; give -kek to check them)", rep.Unopened)
		if rep.DeletedUnchecked > 0 {
			n += fmt.Sprintf("; %d payloads deleted before a sealed deletion record, not matched to it", rep.DeletedUnchecked)
		}
		notes = append(notes, n)
	}
	return summary, notes
}

// readOnlyStore is storage opened to be read and nothing else.
type readOnlyStore interface {
	ledger.Snapshotter
	Close() error
}

// openReadOnly opens the config's database, or the SQLite database of
// dir, read-only: see sqlitestore.OpenReadOnly and pgstore.OpenReadOnly.
func openReadOnly(ctx context.Context, e *env, cfg *Config, dir string) (readOnlyStore, error) {
	if cfg != nil {
		dsn, err := cfg.databaseDSN(e.getenv)
		if err != nil {
			return nil, err
		}
		if dsn != "" {
			return pgstore.OpenReadOnly(ctx, dsn)
		}
	}
	return sqlitestore.OpenReadOnly(ctx, filepath.Join(dir, "ledger.db"))
}

// verifySealer returns the key ring that opens the view's payloads: with
// -kek FILE, the config's KEKs, or with -data the file DIR/kek if there.
// Without any, it returns nil, and verify checks the structure only.
func verifySealer(ctx context.Context, e *env, cfg *Config, dir, kekFile string, view ledger.ReadView) (ledger.Sealer, error) {
	vk, ok := view.(viewKeys)
	if !ok {
		return nil, errors.New("the store's snapshots hold no data keys")
	}
	ks := snapshotKeys{vk}
	var ring *keys.Ring
	var err error
	switch {
	case kekFile != "":
		ring, _, err = keys.OpenRing(ctx, ks, keys.Config{CurrentFile: kekFile})
	case cfg != nil:
		ec := cfg.Encryption
		if ec.KEKFile == "" && ec.KEKEnv == "" && !fileExists(cfg.defaultKEKFile()) {
			return nil, nil
		}
		ring, err = openRing(ctx, e, cfg, ks, false, nil)
	default:
		f := filepath.Join(dir, "kek")
		if !fileExists(f) {
			return nil, nil
		}
		ring, _, err = keys.OpenRing(ctx, ks, keys.Config{CurrentFile: f})
	}
	if err != nil {
		return nil, err
	}
	return ring, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// viewKeys is what a backend's snapshot reads of the data keys.
type viewKeys interface {
	SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error)
	KEKSamples(ctx context.Context) ([]keys.Wrapped, error)
}

// snapshotKeys is the keys.Store of a verification: the data keys of the
// snapshot verified, so that a key destroyed since (with its payloads)
// still opens the snapshot's payloads. It writes nothing.
type snapshotKeys struct{ viewKeys }

var errKeysReadOnly = errors.New("verify reads data keys and writes none")

func (snapshotKeys) AddSubjectKeys(context.Context, []keys.Wrapped) ([]keys.Wrapped, error) {
	return nil, errKeysReadOnly
}

func (snapshotKeys) ListSubjectKeys(context.Context, string, int) ([]keys.Wrapped, error) {
	return nil, errKeysReadOnly
}

func (snapshotKeys) RewrapSubjectKey(context.Context, string, keys.Wrapped) (bool, error) {
	return false, errKeysReadOnly
}
