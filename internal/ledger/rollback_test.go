package ledger_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "example.com/test"

type logKey struct {
	signer   note.Signer
	verifier note.Verifier
}

func newKey(t *testing.T) logKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return logKey{s, v}
}

func (k logKey) options(o ledger.Options) ledger.Options {
	o.Origin, o.Signer, o.Verifier = testOrigin, k.signer, k.verifier
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = time.Hour
	}
	return o
}

func openDB(t *testing.T, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// grow appends n records through a ledger with options o, integrates
// them, closes the ledger and returns its last checkpoint.
func grow(t *testing.T, store ledger.Store, k logKey, o ledger.Options, n int, tag string) []byte {
	t.Helper()
	ctx := context.Background()
	l, err := ledger.New(ctx, store, k.options(o))
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	for i := range n {
		if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c",
			Payload: fmt.Appendf(nil, "%s %d", tag, i)}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := l.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return h.Checkpoint
}

// alteredStore shows a store changed by hand: another tree head (and a
// count to match), or tiles changed as they are read.
type alteredStore struct {
	ledger.Store
	head atomic.Pointer[ledger.TreeHead]
	tile func(level, index uint64, data []byte) []byte
}

func altered(s ledger.Store, head *ledger.TreeHead, tile func(level, index uint64, data []byte) []byte) *alteredStore {
	a := &alteredStore{Store: s, tile: tile}
	a.head.Store(head)
	return a
}

func (s *alteredStore) TreeHead(ctx context.Context) (ledger.TreeHead, error) {
	if h := s.head.Load(); h != nil {
		return *h, nil
	}
	return s.Store.TreeHead(ctx)
}

func (s *alteredStore) Count(ctx context.Context) (uint64, error) {
	if h := s.head.Load(); h != nil {
		return h.Size, nil
	}
	return s.Store.Count(ctx)
}

func (s *alteredStore) ReadTile(ctx context.Context, level, index uint64) ([]byte, error) {
	data, err := s.Store.ReadTile(ctx, level, index)
	if err == nil && s.tile != nil {
		data = s.tile(level, index, bytes.Clone(data))
	}
	return data, err
}

// olderHead returns the tree head of the stored checkpoint of size n.
func olderHead(t *testing.T, store ledger.Store, k logKey, n uint64) ledger.TreeHead {
	t.Helper()
	for cp, err := range store.Checkpoints(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		c, err := ledger.OpenCheckpoint(cp, k.verifier, testOrigin)
		if err != nil {
			t.Fatal(err)
		}
		if c.Size == n {
			return ledger.TreeHead{Size: c.Size, Hash: c.Hash, Checkpoint: cp}
		}
	}
	t.Fatalf("no stored checkpoint of size %d", n)
	return ledger.TreeHead{}
}

// TestNewChecksStoredTree: New refuses a tree head that its own checkpoint
// does not sign, and right-edge tiles that do not give its root, naming
// the tile.
func TestNewChecksStoredTree(t *testing.T) {
	k := newKey(t)
	store := openDB(t, filepath.Join(t.TempDir(), "l.db"))
	grow(t, store, k, ledger.Options{}, 300, "a") // tiles 0/0, 0/1 (44 hashes), 1/0 (1 hash)
	head, err := store.TreeHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(t)
	forged, err := note.Sign(&note.Note{Text: ledger.FormatCheckpoint(testOrigin, head.Size, head.Hash)}, other.signer)
	if err != nil {
		t.Fatal(err)
	}
	flipAt := func(level, index uint64, i int) func(uint64, uint64, []byte) []byte {
		return func(l, n uint64, data []byte) []byte {
			if l == level && n == index {
				data[i] ^= 1
			}
			return data
		}
	}
	tests := []struct {
		name string
		head *ledger.TreeHead
		tile func(level, index uint64, data []byte) []byte
		want string // in the error; "" for none
	}{
		{"intact", nil, nil, ""},
		{"checkpoint signed by another key", &ledger.TreeHead{Size: head.Size, Hash: head.Hash, Checkpoint: forged}, nil,
			"stored tree head (size 300): checkpoint signature"},
		{"hash not the checkpoint's", &ledger.TreeHead{Size: head.Size, Hash: [32]byte{1}, Checkpoint: head.Checkpoint}, nil,
			"does not match its checkpoint"},
		{"size not the checkpoint's", &ledger.TreeHead{Size: head.Size - 1, Hash: head.Hash, Checkpoint: head.Checkpoint}, nil,
			"does not match its checkpoint"},
		{"level-0 edge tile changed", nil, flipAt(0, 1, 5*32+3), "tile 0/1: hash 5 differs from the leaf hash of record 261"},
		{"level-1 edge tile changed", nil, flipAt(1, 0, 7), "tile 1/0: hash 0 differs from the root of tile 0/0"},
		{"level-0 tile below the edge changed", nil, flipAt(0, 0, 7), ""}, // not read: verify's to find
		{"edge tile truncated", nil, func(l, n uint64, data []byte) []byte {
			if l == 0 && n == 1 {
				return data[:10*32]
			}
			return data
		}, "tile 0/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := altered(store, tt.head, tt.tile)
			l, err := ledger.New(context.Background(), s, k.options(ledger.Options{}))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want == "":
				l.Start()
				if err := l.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("New = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if _, err := ledger.New(context.Background(), store, ledger.Options{Origin: testOrigin, Signer: k.signer, Verifier: other.verifier}); err == nil {
		t.Error("New accepted a verifier of another key")
	}
}

// copyDB copies an SQLite database (closed) with its WAL, if any.
func copyDB(t *testing.T, from, to string) {
	t.Helper()
	for _, ext := range []string{"", "-wal", "-shm"} {
		src, err := os.Open(from + ext)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(to + ext)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
}

// rollback is a log grown to 300 records, with its checkpoint file and
// anchors (at sizes 100 and 300), and a copy of its database taken at
// size 100: a backup to restore.
type rollback struct {
	k                 logKey
	dir               string
	file, anchors     string
	current, restored string // database paths
	published         []byte // the checkpoint file's content, of size 300
}

func newRollback(t *testing.T) *rollback {
	t.Helper()
	ctx := context.Background()
	r := &rollback{k: newKey(t), dir: t.TempDir()}
	r.file, r.anchors = filepath.Join(r.dir, "checkpoint"), filepath.Join(r.dir, "anchors")
	r.current = filepath.Join(r.dir, "live", "l.db")
	r.restored = filepath.Join(r.dir, "restored", "l.db")
	for _, d := range []string{filepath.Dir(r.current), filepath.Dir(r.restored)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	o := ledger.Options{CheckpointFile: r.file, AnchorsDir: r.anchors}
	s, err := sqlitestore.Open(ctx, r.current, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cp := grow(t, s, r.k, o, 100, "a")
	if err := ledger.WriteAnchor(ctx, s, r.anchors, "2026-01-01", cp, r.k.verifier, testOrigin); err != nil {
		t.Fatal(err)
	}
	s.Close()
	copyDB(t, r.current, r.restored)
	if s, err = sqlitestore.Open(ctx, r.current, sqlitestore.Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cp = grow(t, s, r.k, o, 200, "b")
	if err := ledger.WriteAnchor(ctx, s, r.anchors, "2026-01-02", cp, r.k.verifier, testOrigin); err != nil {
		t.Fatal(err)
	}
	if r.published, err = os.ReadFile(r.file); err != nil || !bytes.Equal(r.published, cp) {
		t.Fatalf("checkpoint file: %v", err)
	}
	return r
}

// acknowledge appends a rollback acknowledgement naming lost, as the
// linegate acknowledge-rollback command does.
func acknowledge(t *testing.T, s ledger.Store, restored uint64, lost map[string][]byte) {
	t.Helper()
	ack := ledger.RollbackAck{RestoredSize: restored, LostFrom: restored, LostTo: 300, Reason: "restored after a disk failure",
		Time: time.Now().UTC().Format(time.RFC3339)}
	for name, cp := range lost {
		ack.Lost = append(ack.Lost, ledger.LostCheckpoint{Name: name, Size: 300, Checkpoint: string(cp)})
	}
	j, err := json.Marshal(ack)
	if err != nil {
		t.Fatal(err)
	}
	var detail map[string]any
	if err := json.Unmarshal(j, &detail); err != nil {
		t.Fatal(err)
	}
	payload, err := record.Encode(&record.Meta{ReceivedMs: time.Now().UnixMilli()},
		&record.Admin{Action: ledger.ActionRollbackAcknowledged, Detail: detail})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.NewWriter(s, nil, nil).Commit(context.Background(),
		[]ledger.Entry{{Kind: ledger.KindAdmin, Time: time.Now(), Payload: payload}}); err != nil {
		t.Fatal(err)
	}
}

// TestNewHoldsToPublished: New refuses a database whose tree does not
// extend the checkpoint file or the latest anchor (restored from a backup,
// cut back, or rewritten), unless a rollback acknowledgement names them.
func TestNewHoldsToPublished(t *testing.T) {
	ctx := context.Background()
	r := newRollback(t)
	live, restored := openDB(t, r.current), openDB(t, r.restored)
	anchor := func() []byte {
		b, err := os.ReadFile(filepath.Join(r.anchors, "2026-01-02.checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	// A log of the same key and size, with other records.
	other := openDB(t, filepath.Join(t.TempDir(), "l.db"))
	grow(t, other, r.k, ledger.Options{}, 300, "z")
	longer := openDB(t, filepath.Join(t.TempDir(), "l.db"))
	grow(t, longer, r.k, ledger.Options{}, 400, "z")
	cutBack := altered(live, new(olderHead(t, live, r.k, 100)), nil)

	tests := []struct {
		name    string
		store   ledger.Store
		file    bool // the checkpoint file of size 300
		anchors bool // the anchors of sizes 100 and 300
		want    string
	}{
		{"intact", live, true, true, ""},
		{"restored from a backup", restored, true, false,
			"the database's tree (size 100) is behind the published checkpoint file (size 300): restored from an older backup"},
		{"restored with its checkpoint file", restored, false, true,
			"the database's tree (size 100) is behind the anchor 2026-01-02 (size 300)"},
		{"cut back", cutBack, true, false, "(size 100) is behind the published checkpoint file (size 300)"},
		{"replaced by a new database", openDB(t, filepath.Join(t.TempDir(), "l.db")), true, true,
			"the database's tree (size 0) is behind the published checkpoint file (size 300)"},
		{"rewritten, same size", other, true, false, "the database's tree (size 300) differs from the published checkpoint file (size 300)"},
		{"rewritten, longer", longer, true, false, "the database's tree (size 400) does not extend the published checkpoint file (size 300)"},
		{"rewritten, anchors", longer, false, true, "the database's tree (size 400) does not extend the anchor 2026-01-02 (size 300)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o ledger.Options
			if tt.file {
				o.CheckpointFile = r.file
			}
			if tt.anchors {
				o.AnchorsDir = r.anchors
			}
			l, err := ledger.New(ctx, tt.store, r.k.options(o))
			var ie *ledger.InconsistentError
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want == "":
				l.Start()
				if err := l.Close(ctx); err != nil {
					t.Fatal(err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &ie):
				t.Fatalf("New = %v, want an InconsistentError naming %q", err, tt.want)
			}
			if b, err := os.ReadFile(r.file); err != nil || !bytes.Equal(b, r.published) {
				t.Fatalf("the checkpoint file was overwritten (%v)", err)
			}
		})
	}

	t.Run("new database, empty tree published", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "checkpoint")
		if err := os.WriteFile(file, olderHead(t, live, r.k, 0).Checkpoint, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := ledger.New(ctx, openDB(t, filepath.Join(t.TempDir(), "l.db")), r.k.options(ledger.Options{CheckpointFile: file}))
		if err != nil {
			t.Fatal(err)
		}
		l.Start()
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("acknowledged", func(t *testing.T) {
		o := r.k.options(ledger.Options{CheckpointFile: r.file, AnchorsDir: r.anchors})
		acknowledge(t, restored, 100, map[string][]byte{"published checkpoint file": []byte("another checkpoint")})
		if _, err := ledger.New(ctx, restored, o); err == nil {
			t.Fatal("New accepted a rollback acknowledged for another checkpoint")
		}
		acknowledge(t, restored, 100, map[string][]byte{"published checkpoint file": r.published, "anchor 2026-01-02": anchor})
		l, err := ledger.New(ctx, restored, o)
		if err != nil {
			t.Fatalf("New after the acknowledgement: %v", err)
		}
		if got := l.Acknowledged(); len(got) != 2 {
			t.Errorf("Acknowledged = %d checkpoints, want 2", len(got))
		}
		l.Start()
		if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Payload: []byte("after")}); err != nil {
			t.Fatal(err)
		}
		h, err := l.Sync(ctx)
		if err != nil || h.Size != 103 {
			t.Fatalf("Sync = size %d, %v; want 103", h.Size, err)
		}
		if err := l.Ready(ctx); err != nil {
			t.Errorf("Ready: %v", err)
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(r.file); err != nil || !bytes.Equal(b, h.Checkpoint) {
			t.Errorf("the checkpoint file was not published anew (%v)", err)
		}

		// The anchor after the loss extends the last one kept, not the
		// lost one; it is written only with the acknowledgement.
		if err := ledger.WriteAnchor(ctx, restored, r.anchors, "2026-01-03", h.Checkpoint, r.k.verifier, testOrigin); err == nil ||
			!strings.Contains(err.Error(), "anchor 2026-01-02 (size 300)") {
			t.Errorf("WriteAnchor over the lost anchor = %v, want a refusal naming it", err)
		}
		if _, err := os.Stat(filepath.Join(r.anchors, "2026-01-03.checkpoint")); err == nil {
			t.Fatal("an anchor was written over the lost one")
		}
		if err := ledger.WriteAnchor(ctx, restored, r.anchors, "2026-01-03", h.Checkpoint, r.k.verifier, testOrigin, l.Acknowledged()...); err != nil {
			t.Fatal(err)
		}
		as, err := ledger.ReadAnchors(r.anchors, r.k.verifier, testOrigin)
		if err != nil || len(as) != 3 {
			t.Fatalf("ReadAnchors = %d anchors, %v", len(as), err)
		}
		// A later start holds to the new anchor, acknowledgement or not.
		l, err = ledger.New(ctx, restored, o)
		if err != nil {
			t.Fatal(err)
		}
		l.Start()
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}

		// Verify reports the loss, from the records.
		var external []ledger.External
		for _, a := range as {
			external = append(external, ledger.External{Name: "anchor " + a.Name(), Signed: a.Signed()})
		}
		rep, err := ledger.Verify(ctx, restored, r.k.verifier, testOrigin, external, nil)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		var lost []string
		for _, rb := range rep.Rollbacks {
			lost = append(lost, rb.String())
		}
		if len(lost) != 2 || !strings.Contains(strings.Join(lost, "\n"), "records 100..299 of the anchor 2026-01-02 (size 300), acknowledged by record 101: restored after a disk failure") {
			t.Errorf("Verify reports the losses as:\n%s", strings.Join(lost, "\n"))
		}
	})
}

// neverHeld is a lease another process holds.
type neverHeld struct{}

func (neverHeld) Held(context.Context) bool { return false }

// TestFollowerStopsOnRollback: a ledger that follows another's tree head
// stops publishing, and is not ready, when the stored tree no longer
// extends what it published.
func TestFollowerStopsOnRollback(t *testing.T) {
	ctx := context.Background()
	k := newKey(t)
	store := openDB(t, filepath.Join(t.TempDir(), "l.db"))
	grow(t, store, k, ledger.Options{}, 100, "a")
	grow(t, store, k, ledger.Options{}, 200, "b")
	s := altered(store, nil, nil)
	file := filepath.Join(t.TempDir(), "checkpoint")
	l, err := ledger.New(ctx, s, k.options(ledger.Options{Lease: neverHeld{}, CheckpointFile: file, CheckpointInterval: 5 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Close(ctx)
	if err := l.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	s.head.Store(new(olderHead(t, store, k, 100)))
	deadline := time.Now().Add(5 * time.Second)
	var ie *ledger.InconsistentError
	for err := l.Ready(ctx); !errors.As(err, &ie); err = l.Ready(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %v after the tree went back", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ie.Size != 300 || ie.TreeSize != 100 {
		t.Errorf("Ready = %v", ie)
	}
	if h := l.Head(); h.Size != 300 {
		t.Errorf("published the tree of size %d", h.Size)
	}
	if b, err := os.ReadFile(file); err == nil {
		if c, err := ledger.OpenCheckpoint(b, k.verifier, testOrigin); err != nil || c.Size != 300 {
			t.Errorf("checkpoint file of size %d (%v)", c.Size, err)
		}
	}
}
