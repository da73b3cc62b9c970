package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/linegate/linegate/internal/ledger"
)

// A bundle carries the latest cosigned checkpoint, so that an auditor can
// require witnesses offline: witness/checkpoint.cosigned, and
// witness/consistency, the proof that joins it and the bundle's checkpoint
// (from the smaller tree to the larger).

// addCosigned adds the cosigned checkpoint of the config's publish
// directory to the bundle at dir, if there is one. It says so on stdout.
func addCosigned(ctx context.Context, e *env, src evidenceSource, dir string, records []uint64) error {
	cosigned, err := os.ReadFile(cosignedFile(src.cfg.Log.PublishDir))
	if errors.Is(err, fs.ErrNotExist) {
		if src.cfg.Witnesses != nil {
			fmt.Fprintln(e.stdout, "  no cosigned checkpoint yet: the bundle carries none (export again once the witnesses cosigned)")
		}
		return nil
	}
	if err != nil {
		return err
	}
	v, err := ledger.NewVerifier(src.vkey)
	if err != nil {
		return err
	}
	cos, err := ledger.OpenCheckpoint(cosigned, v, src.cfg.Log.Origin)
	if err != nil {
		return fmt.Errorf("the cosigned checkpoint: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		return err
	}
	bcp, err := ledger.OpenCheckpoint(b, v, src.cfg.Log.Origin)
	if err != nil {
		return err
	}
	from, old, cur := "cosigned", cos.Size, bcp.Size
	if cos.Size > bcp.Size {
		from, old, cur = "bundle", bcp.Size, cos.Size
	}
	var proof [][32]byte
	if old > 0 && old < cur {
		if proof, err = ledger.ConsistencyProof(ctx, src.store, old, cur); err != nil {
			return err
		}
	}
	wdir := filepath.Join(dir, "witness")
	if err := os.Mkdir(wdir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(wdir, "checkpoint.cosigned"), cosigned, 0o400); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(wdir, "consistency"), ledger.FormatConsistency(from, old, cur, proof), 0o400); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "  with the cosigned checkpoint of size %d (witness/)\n", cos.Size)
	if n := beyondCosigned(records, cos.Size); n > 0 {
		fmt.Fprintf(e.stdout, "  %d of the bundle's records (index %d and later) are not yet covered by the cosigned checkpoint: verify-bundle -witness-quorum fails on them; export again after the next witness round (witnesses.every), or if the witnesses refuse the log, look into it first\n", n, cos.Size)
	}
	return nil
}

// verifyBundleWitnesses checks, with -witness-quorum, the bundle's
// cosigned checkpoint: the quorum of cosignatures, and its consistency
// with the bundle's checkpoint.
//
// Every record of the bundle must lie inside the cosigned checkpoint: a
// cosignature of an older prefix of the tree says nothing of the records
// after it (a log the witnesses refused as a fork still has an honest
// prefix).
func (wf *witnessFlags) verifyBundleWitnesses(e *env, dir string, vkey []byte, records []uint64) error {
	if *wf.quorum <= 0 {
		return nil
	}
	ws, err := wf.verifiers(nil)
	if err != nil {
		return err
	}
	v, err := ledger.NewVerifier(vkey)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	cosigned, err := fs.ReadFile(root.FS(), "witness/checkpoint.cosigned")
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: the bundle carries no cosigned checkpoint: %v\n", err)
		return errVerifyFailed
	}
	if _, err := wf.checkCosigned(e, "witness/checkpoint.cosigned", cosigned, v, ws); err != nil {
		return err
	}
	b, err := fs.ReadFile(root.FS(), "checkpoint")
	if err != nil {
		return err
	}
	cos, err1 := ledger.OpenCheckpoint(cosigned, v, v.Name())
	bcp, err2 := ledger.OpenCheckpoint(b, v, v.Name())
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: %v\n", err)
		return errVerifyFailed
	}
	proof, err := fs.ReadFile(root.FS(), "witness/consistency")
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: %v\n", err)
		return errVerifyFailed
	}
	from, prev, cur := "cosigned", cos, bcp
	if cos.Size > bcp.Size {
		from, prev, cur = "bundle", bcp, cos
	}
	if err := ledger.CheckConsistency(proof, from, prev, cur); err != nil {
		fmt.Fprintf(e.stdout, "FAIL witnesses: the bundle's checkpoint (size %d) and the cosigned one (size %d): %v\n", bcp.Size, cos.Size, err)
		return errVerifyFailed
	}
	if n := beyondCosigned(records, cos.Size); n > 0 {
		fmt.Fprintf(e.stdout, "FAIL witnesses: %d of the bundle's records (index %d and later) lie beyond the cosigned checkpoint of size %d: no witness vouched for them\n", n, cos.Size, cos.Size)
		return errVerifyFailed
	}
	return nil
}

// beyondCosigned counts the records (leaf indices) at or beyond size.
func beyondCosigned(records []uint64, size uint64) int {
	n := 0
	for _, r := range records {
		if r >= size {
			n++
		}
	}
	return n
}
