package ledger

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/record"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The log is held to what it has published. A checkpoint copied outside
// the database (the checkpoint file, an anchor) is a promise that every
// later tree extends it; a database restored from an older backup, or
// whose last records were deleted and tree head cut back, breaks it, and a
// gateway that went on signing would overwrite the evidence. So New checks,
// before it extends the stored tree, as Sunlight's LoadLog does:
//
//   - the stored tree head against its own signed checkpoint;
//   - the right-edge tiles, whose hashes must give the checkpoint's root;
//   - the published checkpoint file and the latest anchor: the stored tree
//     must extend each (equal sizes with equal roots; a smaller one by a
//     consistency proof from the stored tiles).
//
// Then, before each integration, the sequencer checks that the new tree
// extends the last one it published (or followed), and stops publishing
// for good if not.
//
// A restore from backup is legitimate only as an explicit, recorded act:
// an admin record whose detail is a RollbackAck names, byte for byte, every
// published checkpoint that the restored tree does not extend. New accepts
// those, WriteAnchor bridges the lost anchors, and Verify reports each as
// an acknowledged loss.

// ActionRollbackAcknowledged is the action of a rollback acknowledgement
// record (KindAdmin, body record.Admin, detail RollbackAck).
const ActionRollbackAcknowledged = "rollback_acknowledged"

// RollbackAck is the detail of the admin record (record.Admin, action
// ActionRollbackAcknowledged) that acknowledges a rollback: the database
// was restored to an older tree, and the records beyond it, which
// published checkpoints cover, are lost.
type RollbackAck struct {
	// Lost are the published checkpoints that the restored tree does not
	// extend.
	Lost []LostCheckpoint `json:"lost"`
	// RestoredSize is the size of the stored tree when the rollback was
	// acknowledged.
	RestoredSize uint64 `json:"restored_size"`
	// LostFrom and LostTo bound the records lost, [LostFrom, LostTo): from
	// the restored size to the largest size published.
	LostFrom uint64 `json:"lost_from"`
	LostTo   uint64 `json:"lost_to"`
	Reason   string `json:"reason"`
	Time     string `json:"time"` // RFC 3339
}

// LostCheckpoint is a published checkpoint named by a RollbackAck.
type LostCheckpoint struct {
	Name       string `json:"name"` // "published checkpoint file", "anchor 2026-11-26"
	Size       uint64 `json:"size"`
	Checkpoint string `json:"checkpoint"` // the signed note, verbatim
}

// DecodeRollbackAck decodes the body of an admin record. It reports false
// for the body of any other action.
func DecodeRollbackAck(body []byte) (RollbackAck, bool) {
	var b struct { // record.Admin, its Detail typed
		Action string      `json:"action"`
		Detail RollbackAck `json:"detail"`
	}
	if json.Unmarshal(body, &b) != nil || b.Action != ActionRollbackAcknowledged {
		return RollbackAck{}, false
	}
	return b.Detail, true
}

// InconsistentError reports a checkpoint published outside the store (the
// checkpoint file, an anchor, the last checkpoint a ledger published) that
// the store's tree does not extend.
type InconsistentError struct {
	Name     string // "published checkpoint file", "anchor 2026-11-26", ...
	Size     uint64 // the published checkpoint's tree size
	TreeSize uint64 // the store's tree size
}

func (e *InconsistentError) Error() string {
	switch {
	case e.Size > e.TreeSize:
		return fmt.Sprintf("ledger: the database's tree (size %d) is behind the %s (size %d): restored from an older backup, or records were deleted",
			e.TreeSize, e.Name, e.Size)
	case e.Size == e.TreeSize:
		return fmt.Sprintf("ledger: the database's tree (size %d) differs from the %s (size %d): records or tiles were rewritten",
			e.TreeSize, e.Name, e.Size)
	}
	return fmt.Sprintf("ledger: the database's tree (size %d) does not extend the %s (size %d): records or tiles were rewritten",
		e.TreeSize, e.Name, e.Size)
}

// emptyRoot is the root hash of the empty tree.
var emptyRoot, _ = tlog.TreeHash(0, nil)

// extends reports whether the tree of size n and root hash nHash extends
// the tree of size m and root mHash, by a consistency proof from r's
// hashes. It returns an error only when r cannot give the hashes.
func extends(r tlog.HashReader, n uint64, nHash [32]byte, m uint64, mHash [32]byte) (bool, error) {
	switch {
	case m > n:
		return false, nil
	case m == n:
		return nHash == mHash, nil
	case m == 0:
		return mHash == emptyRoot, nil
	}
	p, err := tlog.ProveTree(int64(n), int64(m), r)
	if err != nil {
		return false, err
	}
	return tlog.CheckTree(p, int64(n), nHash, int64(m), mHash) == nil, nil
}

// CheckPublished checks that the tree of head, whose tiles store holds,
// extends a checkpoint published outside the store: the checkpoint must
// verify with v, and the tree must extend it by a consistency proof from
// the stored tiles. It returns an *InconsistentError when the tree does
// not extend it.
func CheckPublished(ctx context.Context, store TileReader, head TreeHead, ext External, v note.Verifier, origin string) (Checkpoint, error) {
	c, err := OpenCheckpoint(ext.Signed, v, origin)
	if err != nil {
		return c, fmt.Errorf("ledger: %s: %w", ext.Name, err)
	}
	if head.Checkpoint == nil {
		head.Hash = emptyRoot // a new store's tree head, never signed
	}
	ok, err := extends(newHashReader(ctx, store), head.Size, head.Hash, c.Size, c.Hash)
	if err != nil {
		return c, fmt.Errorf("ledger: %s (size %d): %w", ext.Name, c.Size, err)
	}
	if !ok {
		return c, &InconsistentError{Name: ext.Name, Size: c.Size, TreeSize: head.Size}
	}
	return c, nil
}

// CheckHead checks a stored tree head as New does before extending it: its
// checkpoint verifies with v and names its size and root, and the hashes
// of the right-edge tiles give that root. It returns the tiles it read
// (the right edge), checked.
func CheckHead(ctx context.Context, store TileReader, head TreeHead, v note.Verifier, origin string) (map[[2]uint64][]byte, error) {
	if head.Checkpoint == nil {
		if head.Size != 0 {
			return nil, fmt.Errorf("ledger: the stored tree head (size %d) has no checkpoint", head.Size)
		}
		return map[[2]uint64][]byte{}, nil
	}
	c, err := OpenCheckpoint(head.Checkpoint, v, origin)
	if err != nil {
		return nil, fmt.Errorf("ledger: the stored tree head (size %d): %w", head.Size, err)
	}
	if c.Size != head.Size || c.Hash != head.Hash {
		return nil, fmt.Errorf("ledger: the stored tree head (size %d) does not match its checkpoint (size %d, root %s)",
			head.Size, c.Size, b64(c.Hash[:]))
	}
	hr := newHashReader(ctx, store)
	root, err := tlog.TreeHash(int64(head.Size), hr)
	if err != nil {
		return nil, fmt.Errorf("ledger: the stored tree's right edge (size %d): %w", head.Size, err)
	}
	if root != head.Hash {
		return nil, fmt.Errorf("ledger: the stored tree's right-edge tiles do not hash to its checkpoint's root (size %d): %s",
			head.Size, edgeFault(ctx, store, head.Size, hr.tiles))
	}
	return hr.tiles, nil
}

// edgeFault names the right-edge tile that disagrees with what it sums
// up: a level-0 tile with the leaf hashes of its records, a higher one
// with the roots of the full tiles below it. It is called only once the
// edge is known not to give the checkpoint's root, so it may read a few
// hundred tiles.
func edgeFault(ctx context.Context, store TileReader, size uint64, tiles map[[2]uint64][]byte) string {
	keys := slices.SortedFunc(maps.Keys(tiles), func(a, b [2]uint64) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	leaves, _ := store.(interface {
		ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
	})
	var read []string
	for _, k := range keys {
		level, index, data := k[0], k[1], tiles[k]
		where := fmt.Sprintf("tile %d/%d", level, index)
		read = append(read, where)
		w := min(TileWidth, size>>(TileHeight*level)-index*TileWidth)
		if uint64(len(data)) < w*hashSize {
			return fmt.Sprintf("%s holds %d hashes, the tree needs %d", where, len(data)/hashSize, w)
		}
		for p := range w {
			got := data[p*hashSize : (p+1)*hashSize]
			if level == 0 {
				if leaves == nil {
					break
				}
				i := index*TileWidth + p
				l, err := leaves.ReadLeaves(ctx, i, i+1)
				if err != nil {
					return fmt.Sprintf("%s: record %d: %v", where, i, err)
				}
				if h := tlog.RecordHash(l[0]); !bytes.Equal(got, h[:]) {
					return fmt.Sprintf("%s: hash %d differs from the leaf hash of record %d", where, p, i)
				}
				continue
			}
			child, err := store.ReadTile(ctx, level-1, index*TileWidth+p)
			if err != nil || len(child) < TileWidth*hashSize {
				return fmt.Sprintf("%s: hash %d: tile %d/%d is missing or short", where, p, level-1, index*TileWidth+p)
			}
			if h := tileRoot(child[:TileWidth*hashSize]); !bytes.Equal(got, h[:]) {
				return fmt.Sprintf("%s: hash %d differs from the root of tile %d/%d", where, p, level-1, index*TileWidth+p)
			}
		}
	}
	return "no one tile disagrees with the records and the tiles below it; read " + strings.Join(read, ", ")
}

// tileRoot returns the Merkle root of a full tile's hashes.
func tileRoot(data []byte) tlog.Hash {
	hs := make([]tlog.Hash, len(data)/hashSize)
	for i := range hs {
		copy(hs[i][:], data[i*hashSize:])
	}
	for len(hs) > 1 {
		for i := range len(hs) / 2 {
			hs[i] = tlog.NodeHash(hs[2*i], hs[2*i+1])
		}
		hs = hs[:len(hs)/2]
	}
	return hs[0]
}

// recordReader is what finding acknowledgements needs of storage: a
// Store or a ReadView.
type recordReader interface {
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
	Records(ctx context.Context, start, end uint64) iter.Seq2[Record, error]
}

// ackRecord is a rollback acknowledgement found in the log.
type ackRecord struct {
	index uint64
	body  RollbackAck
}

// names reports whether the acknowledgement names the checkpoint signed.
func (a ackRecord) names(signed []byte) bool {
	return slices.ContainsFunc(a.body.Lost, func(l LostCheckpoint) bool { return l.Checkpoint == string(signed) })
}

// ackFor returns the latest of acks (newest first) that names signed.
func ackFor(acks []ackRecord, signed []byte) (ackRecord, bool) {
	i := slices.IndexFunc(acks, func(a ackRecord) bool { return a.names(signed) })
	if i < 0 {
		return ackRecord{}, false
	}
	return acks[i], true
}

// findAcks returns the rollback acknowledgements among the records
// [0, end), newest first. It reads from the newest record back, the leaves
// only but for admin records, and stops as soon as enough (if not nil)
// holds of what it found: an acknowledgement that New still depends on is
// among the last records.
func findAcks(ctx context.Context, r recordReader, end uint64, s Sealer, enough func([]ackRecord) bool) ([]ackRecord, error) {
	var found []ackRecord
	const chunk = 4096
	for hi := end; hi > 0; {
		lo := hi - min(hi, chunk)
		leaves, err := r.ReadLeaves(ctx, lo, hi)
		if err != nil {
			return nil, fmt.Errorf("ledger: read leaves [%d, %d): %w", lo, hi, err)
		}
		for j := len(leaves) - 1; j >= 0; j-- {
			var leaf Leaf
			if leaf.UnmarshalBinary(leaves[j]) != nil || leaf.Kind != KindAdmin {
				continue
			}
			i := lo + uint64(j)
			for rec, err := range r.Records(ctx, i, i+1) {
				if err != nil {
					return nil, fmt.Errorf("ledger: read record %d: %w", i, err)
				}
				_, payload, err := CheckRecord(ctx, s, rec)
				if err != nil || payload == nil {
					continue // not an acknowledgement that can be read here (sealed, and no s)
				}
				_, body, err := record.SplitPayload(payload)
				if err != nil {
					continue
				}
				if a, ok := DecodeRollbackAck(body); ok {
					found = append(found, ackRecord{index: i, body: a})
				}
			}
			if enough != nil && enough(found) {
				return found, nil
			}
		}
		hi = lo
	}
	return found, nil
}

// checkPublished holds the stored tree to the checkpoints published
// outside the store: the checkpoint file and the latest anchor (whose
// consistency with every earlier anchor ReadAnchors checks). One that the
// tree does not extend is accepted only if a rollback acknowledgement in
// the store names it. It returns every checkpoint that the
// acknowledgements it relied on name as lost.
func (l *Ledger) checkPublished(ctx context.Context, head TreeHead) ([][]byte, error) {
	var exts []External
	if f := l.opts.CheckpointFile; f != "" {
		b, err := os.ReadFile(f)
		switch {
		case errors.Is(err, fs.ErrNotExist) && head.Size > 0:
			// Not an error (publish_dir may have moved), but a cut-back of
			// the database can no longer be caught against it: say so.
			l.log.Error("ledger: the published checkpoint file is missing, while the database holds a signed tree: a database cut back cannot be detected against it (the anchors still are checked); it is written again with the next checkpoint",
				"file", f, "tree_size", head.Size)
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("ledger: read the published checkpoint: %w", err)
		default:
			exts = append(exts, External{Name: "published checkpoint file", Signed: b})
		}
	}
	if d := l.opts.AnchorsDir; d != "" {
		as, err := ReadAnchors(d, l.opts.Verifier, l.opts.Origin)
		if err != nil {
			return nil, fmt.Errorf("ledger: anchors: %w", err)
		}
		if len(as) > 0 {
			a := as[len(as)-1]
			exts = append(exts, External{Name: "anchor " + a.name, Signed: a.signed})
		}
	}
	var bad []*InconsistentError
	var want [][]byte
	for _, ext := range exts {
		_, err := CheckPublished(ctx, l.store, head, ext, l.opts.Verifier, l.opts.Origin)
		var ie *InconsistentError
		if errors.As(err, &ie) {
			bad, want = append(bad, ie), append(want, ext.Signed)
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	if len(bad) == 0 {
		return nil, nil
	}
	n, err := l.store.Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: count records: %w", err)
	}
	acks, err := findAcks(ctx, l.store, n, l.opts.Sealer, func(acks []ackRecord) bool {
		return !slices.ContainsFunc(want, func(w []byte) bool { _, ok := ackFor(acks, w); return !ok })
	})
	if err != nil {
		return nil, err
	}
	var lost [][]byte
	relied := map[uint64]bool{}
	for i, ie := range bad {
		a, ok := ackFor(acks, want[i])
		if !ok {
			return nil, ie
		}
		l.log.Warn("the database's tree does not extend a published checkpoint: the rollback was acknowledged",
			"checkpoint", ie.Name, "size", ie.Size, "tree_size", ie.TreeSize, "record", a.index, "reason", a.body.Reason)
		if !relied[a.index] {
			relied[a.index] = true
			for _, c := range a.body.Lost {
				lost = append(lost, []byte(c.Checkpoint))
			}
		}
	}
	return lost, nil
}

// holdsTo checks, before this ledger publishes or follows head, that head
// extends the tree it last published, by a proof from r's hashes. A tree
// that does not stops the ledger for good: Ready reports it, and nothing
// more is signed or published.
func (l *Ledger) holdsTo(r tlog.HashReader, head TreeHead) error {
	if err := l.diverged.get(); err != nil {
		return err
	}
	pub := l.published
	if pub.Checkpoint == nil {
		return nil
	}
	ok, err := extends(r, head.Size, head.Hash, pub.Size, pub.Hash)
	if err != nil {
		return fmt.Errorf("ledger: prove size %d -> %d: %w", pub.Size, head.Size, err)
	}
	if ok {
		return nil
	}
	err = &InconsistentError{Name: "checkpoint this gateway last published", Size: pub.Size, TreeSize: head.Size}
	l.diverged.set(err)
	l.log.Error("ledger: stopped publishing: the database's tree does not extend the last published checkpoint",
		"published_size", pub.Size, "tree_size", head.Size, "err", err)
	return err
}

// admitHead checks a tree head that another sequencer stored, before this
// ledger follows or extends it: its checkpoint verifies and names it, and
// it extends what this ledger last published. From then on, it is the
// tree head to hold to.
func (l *Ledger) admitHead(ctx context.Context, head TreeHead) error {
	if err := l.diverged.get(); err != nil {
		return err
	}
	c, err := OpenCheckpoint(head.Checkpoint, l.opts.Verifier, l.opts.Origin)
	if err == nil && (c.Size != head.Size || c.Hash != head.Hash) {
		err = fmt.Errorf("checkpoint of size %d", c.Size)
	}
	if err != nil {
		err = fmt.Errorf("ledger: the stored tree head (size %d) does not match its checkpoint: %w", head.Size, err)
		l.diverged.set(err)
		l.log.Error("ledger: stopped publishing", "tree_size", head.Size, "err", err)
		return err
	}
	if err := l.holdsTo(newHashReader(ctx, l.store), head); err != nil {
		return err
	}
	l.published = head
	return nil
}

// Acknowledged returns the published checkpoints that the rollback
// acknowledgements New relied on name as lost, for WriteAnchor.
func (l *Ledger) Acknowledged() [][]byte { return l.acked }
