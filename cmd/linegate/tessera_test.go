package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/fsck"
)

// TestTesseraClientVerifiesServedLog checks the log that linegate serves
// with a client we did not write: transparency-dev/tessera's. It fetches
// and verifies our signed checkpoints, builds inclusion proofs for every
// leaf and a consistency proof between two checkpoints from our tiles, and
// runs Tessera's fsck over the whole log.
func TestTesseraClientVerifiesServedLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	send := func(from, to int) {
		for i := from; i < to; i++ {
			body := fmt.Appendf(nil, `{"destination":"U1","events":[{"type":"message","n":%d}]}`, i)
			if code := g.post(t, testSecret, body); code != 200 {
				t.Fatalf("status %d", code)
			}
		}
	}
	send(0, 300)
	g.waitTreeSize(t, 300)
	send(300, 777)
	g.waitTreeSize(t, 777)

	vkey, err := os.ReadFile(filepath.Join(dir, "data", "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := ledger.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := url.Parse(g.admin + "/log/")
	if err != nil {
		t.Fatal(err)
	}
	fetcher, err := client.NewHTTPFetcher(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := client.FetchCheckpoint(ctx, fetcher.ReadCheckpoint, verifier, testOrigin)
	if err != nil {
		t.Fatalf("tessera client rejects our checkpoint: %v", err)
	}
	if cp.Size < 777 {
		t.Fatalf("checkpoint size %d", cp.Size)
	}

	pb, err := client.NewProofBuilder(ctx, cp.Size, fetcher.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for b := uint64(0); b*256 < cp.Size; b++ {
		bundle, err := client.GetEntryBundle(ctx, fetcher.ReadEntryBundle, b, cp.Size)
		if err != nil {
			t.Fatalf("entry bundle %d: %v", b, err)
		}
		for j, leaf := range bundle.Entries {
			i := b*256 + uint64(j)
			p, err := pb.InclusionProof(ctx, i)
			if err != nil {
				t.Fatalf("inclusion proof %d: %v", i, err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), p, cp.Hash); err != nil {
				t.Fatalf("inclusion of leaf %d: %v", i, err)
			}
		}
	}

	// Consistency from the size-300 checkpoint in the stored history.
	var old []byte
	s := openStore(t, dir)
	for c, err := range s.Checkpoints(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		pc, err := ledger.OpenCheckpoint(c, verifier, testOrigin)
		if err != nil {
			t.Fatal(err)
		}
		if pc.Size >= 300 && old == nil {
			old = c
		}
	}
	s.Close()
	oc, err := ledger.OpenCheckpoint(old, verifier, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	cproof, err := pb.ConsistencyProof(ctx, oc.Size, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, oc.Size, cp.Size, cproof, oc.Hash[:], cp.Hash); err != nil {
		t.Fatalf("consistency %d -> %d: %v", oc.Size, cp.Size, err)
	}

	// Tessera's fsck recomputes every tile and the root from our entry
	// bundles, with its own code.
	bundleHasher := func(b []byte) ([][]byte, error) {
		var hs [][]byte
		for len(b) > 0 {
			if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
				return nil, fmt.Errorf("malformed bundle")
			}
			n := int(binary.BigEndian.Uint16(b))
			hs = append(hs, rfc6962.DefaultHasher.HashLeaf(b[2:2+n]))
			b = b[2+n:]
		}
		return hs, nil
	}
	f := fsck.New(testOrigin, verifier, fetcher, bundleHasher, fsck.Opts{N: 2})
	if err := f.Check(ctx); err != nil {
		t.Fatalf("tessera fsck: %v", err)
	}
	g.stop()
}
