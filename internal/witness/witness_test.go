package witness_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/witness"
	"github.com/linegate/linegate/internal/witness/witnesstest"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const origin = "example.com/linegate-witness-test"

// tree is an in-memory RFC 6962 tree: its stored hashes.
type tree struct {
	hashes []tlog.Hash
	size   int64
}

func newTree(t *testing.T, leaves []string) *tree {
	tr := &tree{}
	for _, l := range leaves {
		hs, err := tlog.StoredHashes(tr.size, []byte(l), tlog.HashReaderFunc(tr.read))
		if err != nil {
			t.Fatal(err)
		}
		tr.hashes = append(tr.hashes, hs...)
		tr.size++
	}
	return tr
}

func (tr *tree) read(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = tr.hashes[x]
	}
	return out, nil
}

func (tr *tree) checkpoint(t *testing.T, s note.Signer, size int64) []byte {
	root, err := tlog.TreeHash(size, tlog.HashReaderFunc(tr.read))
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
	b, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (tr *tree) proofs(ctx context.Context, old, n uint64) ([][32]byte, error) {
	p, err := tlog.ProveTree(int64(n), int64(old), tlog.HashReaderFunc(tr.read))
	if err != nil {
		return nil, err
	}
	out := make([][32]byte, len(p))
	for i := range p {
		out[i] = p[i]
	}
	return out, nil
}

type memState map[string]string

func (m memState) Publication(_ context.Context, k string) (string, error) { return m[k], nil }
func (m memState) SetPublication(_ context.Context, k, v string) error     { m[k] = v; return nil }

func leaves(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestWitnessCosignsAndRefusesForks(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	logV, _ := note.NewVerifier(vkey)
	wt := witnesstest.Start(t, "example.com/witness-a", origin, vkey)
	w, err := witness.New(wt.URL, wt.VKey)
	if err != nil {
		t.Fatal(err)
	}
	wv := w.Verifier
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	honest := newTree(t, leaves("record ", 300))
	state := memState{}
	c := witness.NewCosigner([]witness.Witness{w}, 1, nil, honest.proofs, state, log)

	var last []byte
	for _, size := range []int64{5, 5, 9, 260, 300} {
		cp := honest.checkpoint(t, signer, size)
		cosigned, err := c.Cosign(ctx, cp, uint64(size))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		text, names, err := witness.VerifyQuorum(cosigned, logV, []note.Verifier{wv}, 1)
		if err != nil || len(names) != 1 || !strings.HasPrefix(text, origin+"\n") {
			t.Fatalf("size %d: VerifyQuorum = %v, %v", size, names, err)
		}
		if _, _, err := witness.VerifyQuorum(cosigned, logV, []note.Verifier{wv}, 2); err == nil {
			t.Fatal("a quorum of 2 passed with one witness")
		}
		last = cosigned
	}
	if state["witness:"+w.Name] != "300" {
		t.Fatalf("state = %v", state)
	}

	t.Run("a cosigner that lost its state learns the size from a 409", func(t *testing.T) {
		c2 := witness.NewCosigner([]witness.Witness{w}, 1, nil, honest.proofs, memState{}, log)
		if _, err := c2.Cosign(ctx, honest.checkpoint(t, signer, 300), 300); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a checkpoint without a cosignature fails the quorum", func(t *testing.T) {
		_, _, err := witness.VerifyQuorum(honest.checkpoint(t, signer, 300), logV, []note.Verifier{wv}, 1)
		var qe *witness.QuorumError
		if !errors.As(err, &qe) {
			t.Fatalf("err = %v; want a QuorumError", err)
		}
	})
	t.Run("a forged cosignature fails", func(t *testing.T) {
		i := strings.LastIndex(string(last), "— "+w.Name+" ")
		forged := []byte(string(last[:i]) + "— " + w.Name + " " + base64.StdEncoding.EncodeToString(make([]byte, 76)) + "\n")
		if _, _, err := witness.VerifyQuorum(forged, logV, []note.Verifier{wv}, 1); err == nil {
			t.Fatal("a forged cosignature verified")
		}
	})
	t.Run("a cosignature by another key does not count", func(t *testing.T) {
		_, otherV, _ := note.GenerateKey(rand.Reader, w.Name)
		ov, err := witness.NewVerifier(otherV)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := witness.VerifyQuorum(last, logV, []note.Verifier{ov}, 1); err == nil {
			t.Fatal("a cosignature verified under another key")
		}
	})

	t.Run("fork of the same size", func(t *testing.T) {
		// The log key's holder builds another tree of the size the
		// witness cosigned, and signs it.
		fork := newTree(t, leaves("rewritten ", 300))
		fc := witness.NewCosigner([]witness.Witness{w}, 1, nil, fork.proofs, memState{}, log)
		cp := fork.checkpoint(t, signer, 300)
		out, err := fc.Cosign(ctx, cp, 300)
		if !errors.Is(err, witness.ErrForked) {
			t.Fatalf("Cosign of a fork: %v; want ErrForked", err)
		}
		if _, ok := fc.Forked()[w.Name]; !ok {
			t.Fatal("the cosigner does not report the fork")
		}
		if _, _, err := witness.VerifyQuorum(out, logV, []note.Verifier{wv}, 1); err == nil {
			t.Fatal("the forked checkpoint passed the quorum")
		}
		// Not asked again.
		if _, err := fc.Cosign(ctx, cp, 300); !errors.Is(err, witness.ErrForked) {
			t.Fatalf("second Cosign: %v", err)
		}
	})
	t.Run("fork that grows", func(t *testing.T) {
		// A larger tree that does not extend the cosigned one: no
		// consistency proof from 300 can hold.
		fork := newTree(t, leaves("rewritten ", 400))
		fc := witness.NewCosigner([]witness.Witness{w}, 1, nil, fork.proofs, memState{"witness:" + w.Name: "300"}, log)
		if _, err := fc.Cosign(ctx, fork.checkpoint(t, signer, 400), 400); !errors.Is(err, witness.ErrForked) {
			t.Fatalf("Cosign of a grown fork: %v; want ErrForked", err)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		// The database restored to size 100 and signed again.
		fc := witness.NewCosigner([]witness.Witness{w}, 1, nil, honest.proofs, memState{}, log)
		_, err := fc.Cosign(ctx, honest.checkpoint(t, signer, 100), 100)
		if !errors.Is(err, witness.ErrRolledBack) {
			t.Fatalf("Cosign of a rolled-back checkpoint: %v; want ErrRolledBack", err)
		}
	})
	t.Run("the honest log goes on", func(t *testing.T) {
		if _, err := c.Cosign(ctx, honest.checkpoint(t, signer, 300), 300); err != nil {
			t.Fatalf("the witness no longer cosigns the honest log: %v", err)
		}
	})
	t.Run("unknown log", func(t *testing.T) {
		other, _, _ := note.GenerateKey(rand.Reader, "example.com/another-log")
		os, _ := note.NewSigner(other)
		cp, err := note.Sign(&note.Note{Text: "example.com/another-log\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"}, os)
		if err != nil {
			t.Fatal(err)
		}
		// The spec's answer is 404; this witness, on SQLite, answers 500.
		// Either way: no cosignature, and not taken for a fork.
		_, err = witness.AddCheckpoint(ctx, nil2(), w, 0, nil, cp)
		if err == nil || errors.Is(err, witness.ErrForked) || errors.Is(err, witness.ErrRolledBack) {
			t.Fatalf("a checkpoint of a log the witness does not know: %v", err)
		}
	})
}

func nil2() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// TestAnswers maps each answer of the protocol to its error, against a
// server that gives them as the spec words them.
func TestAnswers(t *testing.T) {
	_, vkey, _ := note.GenerateKey(rand.Reader, "example.com/w")
	for _, tc := range []struct {
		status int
		body   string
		want   error
	}{
		{404, "", witness.ErrUnknownLog},
		{403, "", witness.ErrBadSignature},
		{400, "", witness.ErrRolledBack},
		{422, "", witness.ErrForked},
		{200, "— example.com/w AAAA\n", witness.ErrCosignature},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
				t.Errorf("%s %s", r.Method, r.URL.Path)
			}
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		}))
		w, err := witness.New(srv.URL, vkey)
		if err != nil {
			t.Fatal(err)
		}
		_, err = witness.AddCheckpoint(context.Background(), nil2(), w, 0, nil, []byte("o\n1\nAAAA\n\n— o AAAA\n"))
		if !errors.Is(err, tc.want) {
			t.Errorf("HTTP %d: %v; want %v", tc.status, err, tc.want)
		}
		srv.Close()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/x.tlog.size")
		w.WriteHeader(409)
		io.WriteString(w, "17\n")
	}))
	defer srv.Close()
	w, _ := witness.New(srv.URL, vkey)
	_, err := witness.AddCheckpoint(context.Background(), nil2(), w, 3, nil, []byte("o\n1\nAAAA\n\n— o AAAA\n"))
	var ce *witness.ConflictError
	if !errors.As(err, &ce) || ce.Size != 17 {
		t.Fatalf("409: %v", err)
	}
}
