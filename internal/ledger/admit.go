package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/linegate/linegate/internal/record"
)

// ErrRefused is wrapped by the errors of an integration that found a
// record it will not sign: the sequencer stops, and Ready reports the
// error, until the record is dealt with.
var ErrRefused = errors.New("ledger: refused to sign")

// ErrMalformed is wrapped by a Store's errors for a row that linegate
// cannot have written (a key reference that does not parse): the
// sequencer refuses it.
var ErrMalformed = errors.New("ledger: malformed record")

// admit reads the records [start, end) that the next integration signs
// into the log (read ahead of it by preadmit, or by the integration
// itself) and checks each of them as verify would
// (CheckRecord): a row put into the database by hand, without the key
// encryption key (a forged webhook, a payload stored in the clear, a
// commitment that does not match) is never signed. It returns their
// leaves.
//
// Records below the store's count are dense (no store removes one): a
// record missing there, or a row that does not parse, was removed, moved
// or written by hand, and is refused.
//
// A payload deleted before its record was integrated (a subject's key
// shredded within the interval) passes only when a deletion record that
// the sequencer can open (sealed with the key encryption key) names it:
// the shred appends that record in the commit that deletes the payload,
// so it is in the store by the time the payload is seen gone.
func (l *Ledger) admit(ctx context.Context, start, end uint64) ([][]byte, error) {
	leaves := make([][]byte, 0, end-start)
	var gone map[uint64]bool // payloads deleted, not yet named
	next := start
	for rec, err := range l.store.Records(ctx, start, end) {
		if errors.Is(err, ErrMalformed) {
			return nil, fmt.Errorf("%w a record from %d on: %v", ErrRefused, next, err)
		}
		if err != nil {
			return nil, fmt.Errorf("ledger: read records [%d, %d): %w", start, end, err)
		}
		if rec.Index != next || rec.Leaf == nil {
			return nil, fmt.Errorf("%w record %d: missing, below the count of records (%d): removed or moved by hand", ErrRefused, next, end)
		}
		leaf, payload, err := CheckRecord(ctx, l.opts.Sealer, rec)
		if errors.Is(err, ErrUnavailable) {
			// Its keys could not be read (the database went away): tried
			// again at the next integration, never refused for it.
			return nil, fmt.Errorf("ledger: record %d: %w", rec.Index, err)
		} else if err != nil {
			return nil, fmt.Errorf("%w record %d: %v", ErrRefused, rec.Index, err)
		}
		if rec.Payload == nil {
			if gone == nil {
				gone = map[uint64]bool{}
			}
			gone[rec.Index] = true
		}
		unname(gone, leaf, payload)
		leaves = append(leaves, rec.Leaf)
		next++
	}
	if next != end {
		return nil, fmt.Errorf("%w record %d: missing, below the count of records (%d): removed or moved by hand", ErrRefused, next, end)
	}
	if len(gone) > 0 {
		if err := l.named(ctx, end, gone); err != nil {
			return nil, err
		}
	}
	if err := l.copies.check(ctx, l.store, start, leaves); err != nil {
		return nil, err
	}
	// Remembered as signed: the records after them are checked against
	// them, whether or not they are signed yet.
	l.copies.added(start, leaves)
	return leaves, nil
}

// unname removes from gone the records that a deletion record (leaf and
// payload in the clear, as CheckRecord returns them) names.
func unname(gone map[uint64]bool, leaf Leaf, payload []byte) {
	if len(gone) == 0 || leaf.Kind != KindDeletion || payload == nil {
		return
	}
	if _, b, err := record.Decode(leaf.Kind, payload); err == nil {
		for _, i := range b.(*record.Deletion).Deleted {
			delete(gone, i)
		}
	}
}

// named looks, among the records from `from` to the store's count, for
// the deletion records that name the records of gone (whose payloads are
// deleted), and refuses the first one that none names. Those records are
// read here only for their names: each one is checked on its own when
// its turn comes, and one that does not open does not count.
func (l *Ledger) named(ctx context.Context, from uint64, gone map[uint64]bool) error {
	n, err := l.store.Count(ctx)
	if err != nil {
		return fmt.Errorf("ledger: count records: %w", err)
	}
	if from < n {
		for rec, err := range l.store.Records(ctx, from, n) {
			if err != nil {
				if errors.Is(err, ErrMalformed) {
					break // refused when its turn comes
				}
				return fmt.Errorf("ledger: read records [%d, %d): %w", from, n, err)
			}
			if rec.Leaf == nil || rec.Payload == nil {
				continue
			}
			if leaf, payload, err := CheckRecord(ctx, l.opts.Sealer, rec); err == nil {
				unname(gone, leaf, payload)
			} else if errors.Is(err, ErrUnavailable) {
				return fmt.Errorf("ledger: record %d: %w", rec.Index, err)
			}
			if len(gone) == 0 {
				return nil
			}
		}
	}
	if len(gone) == 0 {
		return nil
	}
	first := slices.Min(slices.Collect(maps.Keys(gone)))
	return fmt.Errorf("%w record %d: its payload is gone, and no deletion record names it", ErrRefused, first)
}

// copyWindow is how many of the last records signed the sequencer
// remembers, to refuse a copy of one of them. A sealed row copied whole
// (leaf, nonce, payload and keys) opens under its own leaf, so only its
// commitment, salted with a random nonce at every append, shows it is not
// new. verify finds copies of older records over the whole log.
const copyWindow = 1 << 16

// recentCommitments remembers the commitments of the last copyWindow
// records signed, found by their first 8 bytes (the commitments are
// random). A match is compared with the whole commitment remembered, not
// with the row now at the original's index: a record moved away from
// where it was seen (two rows swapped) is taken for the copy it is. It is
// the sequencer's, and loaded from the store's tail at its first use and
// whenever another sequencer moved the tree.
type recentCommitments struct {
	size     uint64 // the tree size it covers
	loaded   bool
	byPrefix map[uint64]uint64 // prefix -> index of the record
	ring     [][32]byte        // commitments, at index % copyWindow
}

// commitmentOf returns a leaf's commitment (its last 32 bytes; zero for a
// leaf too short to hold one).
func commitmentOf(leaf []byte) (c [32]byte) {
	if len(leaf) >= 32 {
		copy(c[:], leaf[len(leaf)-32:])
	}
	return c
}

func prefixOf(c [32]byte) uint64 { return binary.BigEndian.Uint64(c[:8]) }

// seen returns the index of the remembered record whose commitment is c.
func (rc *recentCommitments) seen(c [32]byte) (uint64, bool) {
	j, ok := rc.byPrefix[prefixOf(c)]
	if !ok || rc.ring[j%copyWindow] != c {
		return 0, false
	}
	return j, true
}

// check refuses, among the leaves of records [start, start+len), a copy
// of a record signed before or of another one among them.
func (rc *recentCommitments) check(ctx context.Context, store LeafReader, start uint64, leaves [][]byte) error {
	if !rc.loaded || rc.size != start {
		if err := rc.load(ctx, store, start); err != nil {
			return err
		}
	}
	batch := make(map[[32]byte]uint64, len(leaves))
	for i, leaf := range leaves {
		idx := start + uint64(i)
		c := commitmentOf(leaf)
		j, ok := batch[c]
		if !ok {
			j, ok = rc.seen(c)
		}
		if ok {
			return fmt.Errorf("%w record %d: a copy of record %d (the same salted commitment)", ErrRefused, idx, j)
		}
		batch[c] = idx
	}
	return nil
}

// LeafReader reads the leaves of records [start, end) (a Store, a
// ReadView).
type LeafReader interface {
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
}

// CopyGuard tells, among records read in index order, the ones copied
// whole from a recent record (of the last 65,536), as the sequencer does
// before it signs: for a reader that acts on records before they are
// signed (the pipeline). Not safe for concurrent use.
type CopyGuard struct{ rc recentCommitments }

// Copies returns, among the records [start, start+len(leaves)), those that
// are copies of a recent record or of another among them, each with the
// index of its original, and notes the others as seen. Records must be
// given in order; a start other than where the last call ended reloads
// what it remembers from r.
func (g *CopyGuard) Copies(ctx context.Context, r LeafReader, start uint64, leaves [][]byte) (map[uint64]uint64, error) {
	rc := &g.rc
	if !rc.loaded || rc.size != start {
		if err := rc.load(ctx, r, start); err != nil {
			rc.loaded = false
			return nil, err
		}
	}
	var copies map[uint64]uint64
	for i, leaf := range leaves {
		idx := start + uint64(i)
		c := commitmentOf(leaf)
		if j, ok := rc.seen(c); ok {
			if copies == nil {
				copies = map[uint64]uint64{}
			}
			copies[idx] = j
			rc.add(idx, [32]byte{}, false)
			continue
		}
		rc.add(idx, c, true)
	}
	rc.size = start + uint64(len(leaves))
	return copies, nil
}

// added notes the leaves of records [start, start+len) as signed.
func (rc *recentCommitments) added(start uint64, leaves [][]byte) {
	if !rc.loaded || rc.size != start {
		rc.loaded = false // reloaded at the next check
		return
	}
	for i, leaf := range leaves {
		rc.add(start+uint64(i), commitmentOf(leaf), true)
	}
	rc.size = start + uint64(len(leaves))
}

// add notes record idx, whose commitment is c; a record that is not to
// be matched (a copy) takes its slot and nothing else.
func (rc *recentCommitments) add(idx uint64, c [32]byte, match bool) {
	slot := idx % copyWindow
	if idx >= copyWindow {
		if old := prefixOf(rc.ring[slot]); rc.byPrefix[old] == idx-copyWindow {
			delete(rc.byPrefix, old)
		}
	}
	rc.ring[slot] = c
	if match {
		rc.byPrefix[prefixOf(c)] = idx
	}
}

// load reads the commitments of the last copyWindow records before size.
func (rc *recentCommitments) load(ctx context.Context, store LeafReader, size uint64) error {
	rc.byPrefix = make(map[uint64]uint64, copyWindow)
	if rc.ring == nil {
		rc.ring = make([][32]byte, copyWindow)
	}
	from := size - min(size, copyWindow)
	for lo := from; lo < size; lo += 4096 {
		hi := min(size, lo+4096)
		leaves, err := store.ReadLeaves(ctx, lo, hi)
		if err != nil {
			return fmt.Errorf("ledger: read leaves [%d, %d): %w", lo, hi, err)
		}
		for i, leaf := range leaves {
			rc.add(lo+uint64(i), commitmentOf(leaf), true)
		}
	}
	rc.size, rc.loaded = size, true
	return nil
}

// fault is an error that stops the ledger from signing until it is dealt
// with; Ready reports it.
type fault struct{ err atomic.Pointer[error] }

func (f *fault) set(err error) { f.err.Store(&err) }

func (f *fault) get() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}
