package archive_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/archive"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore/objstoretest"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const origin = "example.com/archive-test"

// memLog is a log in memory with the read side the archive needs: leaves,
// tiles of height 8, and cursors.
type memLog struct {
	leaves  [][]byte
	hashes  []tlog.Hash
	cursors map[string]string
	signer  note.Signer
}

func newLog(t *testing.T, s note.Signer, prefix string, n int) *memLog {
	l := &memLog{cursors: map[string]string{}, signer: s}
	for i := range n {
		leaf := fmt.Appendf(nil, "%s leaf %d", prefix, i)
		hs, err := tlog.StoredHashes(int64(len(l.leaves)), leaf, l)
		if err != nil {
			t.Fatal(err)
		}
		l.hashes = append(l.hashes, hs...)
		l.leaves = append(l.leaves, leaf)
	}
	return l
}

func (l *memLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *memLog) ReadTile(_ context.Context, level, index uint64) ([]byte, error) {
	n := int64(len(l.leaves))
	w := min(ledger.TileWidth, uint64(n>>(8*level))-index*ledger.TileWidth)
	return tlog.ReadTileData(tlog.Tile{H: 8, L: int(level), N: int64(index), W: int(w)}, l)
}

func (l *memLog) ReadLeaves(_ context.Context, start, end uint64) ([][]byte, error) {
	return l.leaves[start:end], nil
}

func (l *memLog) Publication(_ context.Context, k string) (string, error) { return l.cursors[k], nil }
func (l *memLog) SetPublication(_ context.Context, k, v string) error     { l.cursors[k] = v; return nil }

func (l *memLog) head(t *testing.T) ledger.TreeHead {
	n := int64(len(l.leaves))
	root, err := tlog.TreeHash(n, l)
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, n, base64.StdEncoding.EncodeToString(root[:]))
	cp, err := note.Sign(&note.Note{Text: text}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return ledger.TreeHead{Size: uint64(n), Hash: root, Checkpoint: cp}
}

// TestPublisher: full tiles and bundles are published as the log serves
// them, checked first; a tile that does not match its records is not
// published; a bucket ahead of the database, or with another tree, is
// caught by CheckBucket.
func TestPublisher(t *testing.T) {
	srv := objstoretest.Start(t)
	bucket := srv.Bucket(t, "archive")
	skey, vkey, _ := note.GenerateKey(rand.Reader, origin)
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ret := archive.Retention{Checkpoints: 2 * time.Hour, Tiles: 2 * time.Hour, Anchors: 2 * time.Hour, Bundles: 2 * time.Hour}

	l := newLog(t, s, "honest", 600)
	head := l.head(t)
	pub := archive.New(archive.Options{Bucket: bucket, Store: l, Head: func() ledger.TreeHead { return head },
		Verifier: v, Origin: origin, Retention: ret, Logger: log})
	if n, err := pub.CheckBucket(ctx, head, nil); err != nil || n != 0 {
		t.Fatalf("CheckBucket on an empty bucket = %d, %v", n, err)
	}
	if err := pub.Step(ctx); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"tile/0/000", "tile/0/001", "tile/entries/000", "tile/entries/001", "checkpoint-600"} {
		got, err := bucket.Get(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		var want []byte
		switch {
		case key == "checkpoint-600":
			want = head.Checkpoint
		case strings.HasPrefix(key, "tile/entries/"):
			i := map[string]int{"tile/entries/000": 0, "tile/entries/001": 1}[key]
			for _, leaf := range l.leaves[i*256 : (i+1)*256] {
				want = append(want, byte(len(leaf)>>8), byte(len(leaf)))
				want = append(want, leaf...)
			}
		default:
			i := map[string]uint64{"tile/0/000": 0, "tile/0/001": 1}[key]
			want, _ = l.ReadTile(ctx, 0, i)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, want %d", key, len(got), len(want))
		}
	}
	if _, err := bucket.Get(ctx, "tile/0/002"); err == nil {
		t.Error("a partial tile was published")
	}
	if n, err := pub.CheckBucket(ctx, head, nil); err != nil || n != 600 {
		t.Fatalf("CheckBucket after publishing = %d, %v", n, err)
	}

	t.Run("a database behind the bucket", func(t *testing.T) {
		old := newLog(t, s, "honest", 300)
		_, err := pub.CheckBucket(ctx, old.head(t), nil)
		var be *archive.BucketError
		if !errors.As(err, &be) {
			t.Fatalf("CheckBucket of a tree behind the bucket: %v; want a BucketError", err)
		}
		// Acknowledged as a rollback, it passes.
		cp, _ := bucket.Get(ctx, "checkpoint-600")
		acked := func(signed []byte) (bool, error) { return bytes.Equal(signed, cp), nil }
		if _, err := pub.CheckBucket(ctx, old.head(t), acked); err != nil {
			t.Fatalf("CheckBucket with the loss acknowledged: %v", err)
		}
	})
	t.Run("another tree of a larger size", func(t *testing.T) {
		fork := newLog(t, s, "forked", 700)
		fp := archive.New(archive.Options{Bucket: bucket, Store: fork, Head: func() ledger.TreeHead { return fork.head(t) },
			Verifier: v, Origin: origin, Retention: ret, Logger: log})
		if _, err := fp.CheckBucket(ctx, fork.head(t), nil); err == nil {
			t.Fatal("CheckBucket passed a tree that does not extend the bucket's")
		}
	})
	t.Run("a tile that does not match its records", func(t *testing.T) {
		b2 := srv.Bucket(t, "tampered")
		bad := newLog(t, s, "honest", 300)
		bad.leaves[10] = []byte("rewritten")
		h := bad.head(t)
		p := archive.New(archive.Options{Bucket: b2, Store: bad, Head: func() ledger.TreeHead { return h },
			Verifier: v, Origin: origin, Retention: ret, Logger: log})
		err := p.Step(ctx)
		if err == nil || !strings.Contains(err.Error(), "differs from the leaf hash of record 10") {
			t.Fatalf("Step with a rewritten record: %v", err)
		}
		if keys, _ := b2.List(ctx, ""); len(keys) != 0 {
			t.Fatalf("published despite the mismatch: %v", keys)
		}
	})
	t.Run("a checkpoint not signed by the log's key", func(t *testing.T) {
		other, _, _ := note.GenerateKey(rand.Reader, origin)
		os, _ := note.NewSigner(other)
		forged := newLog(t, os, "honest", 10)
		h := forged.head(t)
		p := archive.New(archive.Options{Bucket: bucket, Store: forged, Head: func() ledger.TreeHead { return h },
			Verifier: v, Origin: origin, Retention: ret, Logger: log})
		if err := p.Step(ctx); err == nil {
			t.Fatal("Step published a checkpoint the log's key did not sign")
		}
	})
}
