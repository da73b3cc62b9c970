package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Anchors are the daily proof of integrity: at the end of each day the
// latest checkpoint is written as a file NAME.checkpoint to a directory
// outside the database (a WORM bucket mount, say), with NAME.consistency,
// the proof that it extends the previous anchor. Files are created once
// and never rewritten. Verify checks the database against every anchor, so
// a database rolled back or rewritten after an anchor was written is
// caught.

// consistencyHeader starts a consistency proof file.
const consistencyHeader = "linegate.consistency@v1"

// hashReader reads stored hashes from the tiles of a store, keeping the
// tiles it read in its cache. The sequencer shares its right-edge cache
// with it; proofs use a cache of their own.
type hashReader struct {
	ctx   context.Context
	store TileReader
	tiles map[[2]uint64][]byte
}

func newHashReader(ctx context.Context, store TileReader) *hashReader {
	return &hashReader{ctx: ctx, store: store, tiles: map[[2]uint64][]byte{}}
}

// hash returns one stored hash.
func (r *hashReader) hash(idx int64) (tlog.Hash, error) {
	t := tlog.TileForIndex(TileHeight, idx)
	key := [2]uint64{uint64(t.L), uint64(t.N)}
	data, ok := r.tiles[key]
	if !ok || len(data) < t.W*hashSize {
		var err error
		if data, err = r.store.ReadTile(r.ctx, uint64(t.L), uint64(t.N)); err != nil {
			return tlog.Hash{}, fmt.Errorf("read tile %d/%d: %w", t.L, t.N, err)
		}
		r.tiles[key] = data
	}
	h, err := tlog.HashFromTile(t, data, idx)
	if err != nil {
		return h, fmt.Errorf("tile %d/%d: %w", t.L, t.N, err)
	}
	return h, nil
}

func (r *hashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, err := r.hash(idx)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// ConsistencyProof proves, from the store's tiles, that the tree of size
// newSize extends the tree of size oldSize.
func ConsistencyProof(ctx context.Context, store TileReader, oldSize, newSize uint64) ([][32]byte, error) {
	p, err := tlog.ProveTree(int64(newSize), int64(oldSize), newHashReader(ctx, store))
	if err != nil {
		return nil, fmt.Errorf("ledger: consistency proof %d -> %d: %w", oldSize, newSize, err)
	}
	out := make([][32]byte, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out, nil
}

// WriteAnchor writes NAME.checkpoint (the signed checkpoint) and, when
// there is an earlier anchor, NAME.consistency (the proof from it) to dir.
// An anchor already there is left alone: anchors are written once.
//
// It refuses (an *InconsistentError) to write an anchor whose tree, in
// store, does not extend the latest anchor, unless that anchor is among
// acked: the checkpoints that a rollback acknowledgement names as lost
// (Ledger.Acknowledged). Then the proof is from the latest anchor the tree
// extends, or from none ("from -"), and every anchor in between must be
// among acked; ReadAnchors reads them as lost.
func WriteAnchor(ctx context.Context, store Store, dir, name string, checkpoint []byte, v note.Verifier, origin string, acked ...[]byte) error {
	cp, err := OpenCheckpoint(checkpoint, v, origin)
	if err != nil {
		return err
	}
	// Readable by all: anchors are signed checkpoints and proofs, public
	// by design, and hold no ledger data.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, name+".checkpoint")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	anchors, err := ReadAnchors(dir, v, origin)
	if err != nil {
		return err
	}
	if len(anchors) > 0 {
		r := newHashReader(ctx, store)
		var prev *Anchor
		for i := len(anchors) - 1; i >= 0 && prev == nil; i-- {
			a := anchors[i]
			ok, err := extends(r, cp.Size, cp.Hash, a.Size, a.Hash)
			switch {
			case err != nil:
				return fmt.Errorf("ledger: anchor %s: prove it extends anchor %s: %w", name, a.name, err)
			case ok:
				prev = a
			case !slices.ContainsFunc(acked, func(b []byte) bool { return bytes.Equal(b, a.signed) }):
				return &InconsistentError{Name: "anchor " + a.name, Size: a.Size, TreeSize: cp.Size}
			}
		}
		if prev == nil {
			prev = &Anchor{name: noAnchor} // the empty tree
		}
		var proof [][32]byte
		if prev.Size > 0 { // every tree extends the empty one
			if proof, err = ConsistencyProof(ctx, store, prev.Size, cp.Size); err != nil {
				return err
			}
		}
		if err := writeOnce(filepath.Join(dir, name+".consistency"), FormatConsistency(prev.name, prev.Size, cp.Size, proof)); err != nil {
			return err
		}
	}
	// The checkpoint last: an anchor exists once its checkpoint does.
	return writeOnce(path, checkpoint)
}

// RunAnchors writes an anchor (WriteAnchor, into Options.AnchorsDir) of
// the published checkpoint at the end of each period until ctx ends: each
// day at midnight in loc when every is 24h, else every period from the
// Unix epoch. Among replicas, the one sequencing the log writes it
// (Sequencing); the others skip the period. Failures are logged, and the
// next period tries again.
func (l *Ledger) RunAnchors(ctx context.Context, loc *time.Location, every time.Duration) {
	if l.opts.AnchorsDir == "" || every <= 0 {
		return
	}
	for {
		next, name := nextAnchor(time.Now(), loc, every)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		if !l.Sequencing() {
			continue
		}
		if err := WriteAnchor(ctx, l.store, l.opts.AnchorsDir, name, l.Head().Checkpoint, l.opts.Verifier, l.opts.Origin, l.Acknowledged()...); err != nil {
			l.log.Error("anchor not written", "anchor", name, "err", err)
			continue
		}
		l.log.Info("anchor written", "anchor", name, "tree_size", l.Head().Size)
	}
}

// nextAnchor returns when the current period ends and the name of its
// anchor: the date in loc for daily anchors, else the period's start in
// UTC (so that names sort in time order whatever the zone).
func nextAnchor(now time.Time, loc *time.Location, every time.Duration) (time.Time, string) {
	if every == 24*time.Hour {
		t := now.In(loc)
		start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
		return start.AddDate(0, 0, 1), start.Format("2006-01-02")
	}
	start := now.Truncate(every)
	return start.Add(every), start.UTC().Format("2006-01-02T150405Z")
}

// noAnchor is the name a consistency proof gives the empty tree, when the
// anchor extends no earlier anchor: all were lost in a rollback.
const noAnchor = "-"

// FormatConsistency writes a consistency proof file: that the tree of size
// newSize extends anchor from, of size oldSize.
func FormatConsistency(from string, oldSize, newSize uint64, proof [][32]byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nfrom %s\nold %d\nnew %d\n", consistencyHeader, from, oldSize, newSize)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	return b.Bytes()
}

// CheckConsistency checks a consistency proof file against the checkpoints
// it joins.
func CheckConsistency(file []byte, from string, prev, cur Checkpoint) error {
	return checkConsistency(file, &Anchor{Checkpoint: prev, name: from}, &Anchor{Checkpoint: cur})
}

// writeOnce creates a file that must not exist, syncs it and its directory.
func writeOnce(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Anchor is an anchor read back.
type Anchor struct {
	Checkpoint
	name   string
	signed []byte
}

// Name is the anchor's name (its period, such as 2026-11-26).
func (a *Anchor) Name() string { return a.name }

// Signed is the anchor's signed checkpoint.
func (a *Anchor) Signed() []byte { return a.signed }

// ReadAnchors reads and checks every anchor in dir, in name order: each
// checkpoint's signature, and each consistency proof against the anchor
// before it. It needs nothing but the files and the verifier.
func ReadAnchors(dir string, v note.Verifier, origin string) ([]*Anchor, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ReadAnchorsFS(os.DirFS(dir), v, origin)
}

// ReadAnchorsFS is ReadAnchors over a file system: an evidence bundle's,
// which must not be trusted to hold only regular files. An error reading
// the directory is returned, never taken for a directory without anchors.
func ReadAnchorsFS(fsys fs.FS, v note.Verifier, origin string) ([]*Anchor, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".checkpoint") {
			files = append(files, e.Name())
		}
	}
	slices.Sort(files)
	var out []*Anchor
	for _, f := range files {
		name := strings.TrimSuffix(f, ".checkpoint")
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		cp, err := OpenCheckpoint(b, v, origin)
		if err != nil {
			return nil, verr("anchor "+name, "%v", err)
		}
		a := &Anchor{Checkpoint: cp, name: name, signed: b}
		if len(out) > 0 {
			if err := checkConsistencyFile(fsys, name+".consistency", out, a); err != nil {
				return nil, verr("anchor "+name, "%v", err)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// checkConsistencyFile checks the proof that cur extends an earlier
// anchor: the one before it, or, after a rollback was acknowledged, an
// earlier one or the empty tree ("-"), the anchors in between being lost.
func checkConsistencyFile(fsys fs.FS, path string, earlier []*Anchor, cur *Anchor) error {
	b, err := fs.ReadFile(fsys, path)
	if err != nil {
		return fmt.Errorf("consistency proof from %s: %w", earlier[len(earlier)-1].name, err)
	}
	prev := earlier[len(earlier)-1]
	if _, rest, ok := strings.Cut(string(b), "\nfrom "); ok {
		from, _, _ := strings.Cut(rest, "\n")
		if i := slices.IndexFunc(earlier, func(a *Anchor) bool { return a.name == from }); i >= 0 {
			prev = earlier[i]
		} else if from == noAnchor {
			prev = &Anchor{name: noAnchor}
		}
	}
	return checkConsistency(b, prev, cur)
}

func checkConsistency(b []byte, prev, cur *Anchor) error {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 4 || lines[0] != consistencyHeader || lines[1] != "from "+prev.name {
		return fmt.Errorf("consistency proof: malformed header")
	}
	oldN, err1 := strconv.ParseUint(strings.TrimPrefix(lines[2], "old "), 10, 64)
	newN, err2 := strconv.ParseUint(strings.TrimPrefix(lines[3], "new "), 10, 64)
	if err1 != nil || err2 != nil || oldN != prev.Size || newN != cur.Size {
		return fmt.Errorf("consistency proof: sizes do not match the anchors")
	}
	var proof tlog.TreeProof
	for _, l := range lines[4:] {
		h, err := tlog.ParseHash(l)
		if err != nil {
			return fmt.Errorf("consistency proof: malformed hash")
		}
		proof = append(proof, h)
	}
	if prev.Size == 0 {
		return nil // every tree extends the empty one
	}
	if err := tlog.CheckTree(proof, int64(cur.Size), cur.Hash, int64(prev.Size), prev.Hash); err != nil {
		return fmt.Errorf("not consistent with anchor %s: %w", prev.name, err)
	}
	return nil
}

// InclusionProof proves from the store's tiles that the record at index is
// in the tree of the given size: RFC 6962 audit path, leaf side first.
func InclusionProof(ctx context.Context, store TileReader, index, size uint64) ([][32]byte, error) {
	p, err := tlog.ProveRecord(int64(size), int64(index), newHashReader(ctx, store))
	if err != nil {
		return nil, fmt.Errorf("ledger: inclusion proof of %d in %d: %w", index, size, err)
	}
	out := make([][32]byte, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out, nil
}

// FormatTlogProof writes a c2sp.org/tlog-proof@v1 proof.
func FormatTlogProof(index uint64, proof [][32]byte, checkpoint []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "c2sp.org/tlog-proof@v1\nindex %d\n", index)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(checkpoint)
	return b.Bytes()
}

// ParseTlogProof reads a c2sp.org/tlog-proof@v1 proof (ignoring extra
// data) and returns the index, the hashes and the signed checkpoint.
func ParseTlogProof(b []byte) (uint64, [][]byte, []byte, error) {
	head, cp, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return 0, nil, nil, errors.New("tlog-proof: no checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) < 2 || lines[0] != "c2sp.org/tlog-proof@v1" {
		return 0, nil, nil, errors.New("tlog-proof: bad header")
	}
	lines = lines[1:]
	if strings.HasPrefix(lines[0], "extra ") {
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return 0, nil, nil, errors.New("tlog-proof: no index")
	}
	idx, err := strconv.ParseUint(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil || strconv.FormatUint(idx, 10) != strings.TrimPrefix(lines[0], "index ") {
		return 0, nil, nil, errors.New("tlog-proof: bad index")
	}
	var hashes [][]byte
	for _, l := range lines[1:] {
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != 32 {
			return 0, nil, nil, errors.New("tlog-proof: bad hash")
		}
		hashes = append(hashes, h)
	}
	return idx, hashes, cp, nil
}
