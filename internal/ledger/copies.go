package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
)

// copyFinder finds records whose leaf is a copy of an earlier record's
// (the same salted commitment: never two records linegate wrote, whose
// nonces are random) over a whole log, in memory that does not grow with
// it by more than a few bits a record: a Bloom filter over the
// commitments in a first pass, then, only for the commitments it saw
// twice (a copy, or one of its rare false positives), a second pass over
// the leaves to tell which. Written by hand: a Bloom filter of a few
// lines, over hashes that are already random, needs no library.
type copyFinder struct {
	bits     []uint64
	m        uint64
	suspects map[[32]byte]bool
}

// bloomBits is the filter's size per record (1 in about 100,000 false
// positives with bloomHashes probes).
const (
	bloomBits   = 24
	bloomHashes = 12
)

func newCopyFinder(records uint64) *copyFinder {
	m := max(records*bloomBits, 1024)
	return &copyFinder{bits: make([]uint64, (m+63)/64), m: m, suspects: map[[32]byte]bool{}}
}

// add notes a record's commitment, in index order.
func (cf *copyFinder) add(c [32]byte) {
	// The commitment is uniformly random: its words are the hashes.
	h1 := binary.BigEndian.Uint64(c[0:8])
	h2 := binary.BigEndian.Uint64(c[8:16]) | 1
	seen := true
	for i := range uint64(bloomHashes) {
		bit := (h1 + i*h2) % cf.m
		w, mask := bit/64, uint64(1)<<(bit%64)
		if cf.bits[w]&mask == 0 {
			seen = false
			cf.bits[w] |= mask
		}
	}
	if seen {
		cf.suspects[c] = true
	}
}

// find returns the first record that is a copy of an earlier one, reading
// the leaves of [0, count) again, or ok false.
func (cf *copyFinder) find(ctx context.Context, view ReadView, count uint64) (copyIdx, of uint64, ok bool, err error) {
	if len(cf.suspects) == 0 {
		return 0, 0, false, nil
	}
	first := map[[32]byte]uint64{}
	for lo := uint64(0); lo < count; lo += 4096 {
		hi := min(count, lo+4096)
		leaves, err := view.ReadLeaves(ctx, lo, hi)
		if err != nil {
			return 0, 0, false, fmt.Errorf("read leaves [%d, %d): %w", lo, hi, err)
		}
		for i, b := range leaves {
			var l Leaf
			if l.UnmarshalBinary(b) != nil || !cf.suspects[l.Commitment] {
				continue
			}
			idx := lo + uint64(i)
			if j, seen := first[l.Commitment]; seen {
				return idx, j, true, nil
			}
			first[l.Commitment] = idx
		}
	}
	return 0, 0, false, nil
}
