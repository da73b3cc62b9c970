package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/witness"
	"golang.org/x/mod/sumdb/note"
)

// keyList is a flag given once per value.
type keyList []string

func (k *keyList) String() string     { return strings.Join(*k, ",") }
func (k *keyList) Set(v string) error { *k = append(*k, v); return nil }

// witnessFlags are the flags of verify and verify-bundle that require
// witness cosignatures.
type witnessFlags struct {
	quorum *int
	keys   keyList
	file   *string
	maxLag *time.Duration
}

func addWitnessFlags(flags *flag.FlagSet, withFile bool) *witnessFlags {
	wf := &witnessFlags{
		quorum: flags.Int("witness-quorum", 0, "require this many valid witness cosignatures (C2SP tlog-cosignature) on the cosigned checkpoint, and that the ledger extends it"),
	}
	flags.Var(&wf.keys, "witness-key", "a witness's note verifier key (repeat for each; default: the config's witnesses)")
	if withFile {
		wf.file = flags.String("cosigned", "", "the cosigned checkpoint (default: checkpoint.cosigned in the publish directory)")
		wf.maxLag = flags.Duration("witness-max-lag", 0, "with -witness-quorum, fail when a record older than this is not covered by the cosigned checkpoint (default: 10m, or 10 times witnesses.every if that is longer)")
	}
	return wf
}

// verifiers returns the witnesses' verifiers: from -witness-key, or the
// config's.
func (wf *witnessFlags) verifiers(cfg *Config) ([]note.Verifier, error) {
	var vs []note.Verifier
	keys := wf.keys
	if len(keys) == 0 && cfg != nil && cfg.Witnesses != nil {
		for _, w := range cfg.Witnesses.List {
			keys = append(keys, w.Key)
		}
	}
	for _, k := range keys {
		v, err := witness.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("%w: -witness-key: %v", errUsage, err)
		}
		vs = append(vs, v)
	}
	if *wf.quorum > len(vs) {
		return nil, fmt.Errorf("%w: -witness-quorum %d with %d witness keys (give -witness-key, or a config with witnesses)", errUsage, *wf.quorum, len(vs))
	}
	return vs, nil
}

// checkCosigned checks signed (a cosigned checkpoint) against the quorum,
// printing the outcome. It returns the External that holds the ledger to
// it, or errVerifyFailed.
func (wf *witnessFlags) checkCosigned(e *env, where string, signed []byte, logV note.Verifier, ws []note.Verifier) (ledger.External, error) {
	_, names, err := witness.VerifyQuorum(signed, logV, ws, *wf.quorum)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: %s: %v\n", where, err)
		return ledger.External{}, errVerifyFailed
	}
	size := "?"
	if n, err := note.Open(signed, note.VerifierList(logV)); err == nil {
		if c, err := ledger.ParseCheckpoint(n.Text); err == nil {
			size = fmt.Sprint(c.Size)
		}
	}
	fmt.Fprintf(e.stdout, "OK witnesses: %s of size %s cosigned by %d of the required %d (%s)\n", where, size, len(names), *wf.quorum, strings.Join(names, ", "))
	return ledger.External{Name: "cosigned checkpoint (" + where + ")", Signed: signed}, nil
}

// verifyWitnesses runs verify's witness check: with -witness-quorum, the
// cosigned checkpoint file must carry the quorum, and the returned
// External holds the ledger to it.
func (wf *witnessFlags) verifyWitnesses(e *env, cfg *Config, publishDir string, logV note.Verifier) ([]ledger.External, error) {
	if *wf.quorum <= 0 {
		return nil, nil
	}
	ws, err := wf.verifiers(cfg)
	if err != nil {
		return nil, err
	}
	file := *wf.file
	if file == "" {
		file = cosignedFile(publishDir)
	}
	signed, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(e.stdout, "FAIL witnesses: no cosigned checkpoint at %s\n", file)
		return nil, errVerifyFailed
	}
	if err != nil {
		return nil, err
	}
	ext, err := wf.checkCosigned(e, file, signed, logV, ws)
	if err != nil {
		return nil, err
	}
	return []ledger.External{ext}, nil
}

// lagBound returns -witness-max-lag, or its default for cfg.
func (wf *witnessFlags) lagBound(cfg *Config) time.Duration {
	if wf.maxLag != nil && *wf.maxLag > 0 {
		return *wf.maxLag
	}
	d := 10 * time.Minute
	if cfg != nil && cfg.Witnesses != nil {
		d = max(d, 10*cfg.Witnesses.Every)
	}
	return d
}

// checkWitnessLag fails when the record just after the cosigned
// checkpoint (the first no witness vouched for) is older than the bound:
// the witnesses cosign each new checkpoint within a round, so a record
// left uncovered longer is one they refused, or never saw.
func (wf *witnessFlags) checkWitnessLag(ctx context.Context, e *env, cfg *Config, cosigned []ledger.External, logV note.Verifier, leaves ledger.LeafReader, now time.Time) error {
	if *wf.quorum <= 0 || len(cosigned) == 0 {
		return nil
	}
	n, err := note.Open(cosigned[0].Signed, note.VerifierList(logV))
	if err != nil {
		return err
	}
	c, err := ledger.ParseCheckpoint(n.Text)
	if err != nil {
		return err
	}
	ls, err := leaves.ReadLeaves(ctx, c.Size, c.Size+1)
	if errors.Is(err, ledger.ErrNotFound) || (err == nil && len(ls) == 0) {
		return nil // no record beyond the cosigned checkpoint
	}
	if err != nil {
		return err
	}
	var l ledger.Leaf
	if err := l.UnmarshalBinary(ls[0]); err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: record %d: %v\n", c.Size, err)
		return errVerifyFailed
	}
	bound := wf.lagBound(cfg)
	if age := now.Sub(l.Time); age > bound {
		fmt.Fprintf(e.stdout, "FAIL witnesses: record %d and later are not covered by the cosigned checkpoint (size %d), and record %d is %s old, more than -witness-max-lag %s: the witnesses refused the log or were not reached\n",
			c.Size, c.Size, c.Size, age.Truncate(time.Second), bound)
		return errVerifyFailed
	}
	return nil
}
