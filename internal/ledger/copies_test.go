package ledger_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// leafRows is a LeafReader over leaves in memory, which a test changes as
// someone with write access to the database would.
type leafRows [][]byte

func (r leafRows) ReadLeaves(_ context.Context, start, end uint64) ([][]byte, error) {
	return r[start:end], nil
}

// TestCopyGuardMovedRecord: a record seen at one index and found again at
// another is a copy, even when the row at its first index was changed
// since (two rows swapped): the guard compares with the commitment it
// remembers, not with what the database now holds there.
func TestCopyGuardMovedRecord(t *testing.T) {
	ctx := context.Background()
	var leaves [][]byte
	for range 3 {
		r, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, r.Leaf)
	}
	var g ledger.CopyGuard
	rows := leafRows{leaves[0]}
	if copies, err := g.Copies(ctx, rows, 0, rows[:1]); err != nil || len(copies) != 0 {
		t.Fatalf("Copies of a new record: %v, %v", copies, err)
	}
	// Record 0 swapped with the next one, appended after it was seen:
	// row 0 now holds the new record, row 1 the one seen at 0.
	rows = leafRows{leaves[1], leaves[0], leaves[2]}
	copies, err := g.Copies(ctx, rows, 1, rows[1:])
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]uint64{1: 0}; !maps.Equal(copies, want) {
		t.Errorf("copies %v, want %v: the record moved from 0 to 1", copies, want)
	}
}
