package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrRefused is wrapped by the errors of an integration that found a
// record it will not sign: the sequencer stops, and Ready reports the
// error, until the record is dealt with.
var ErrRefused = errors.New("ledger: refused to sign")

// admit reads the records [start, end) that an integration is about to
// sign into the log and checks each of them as verify would
// (CheckRecord): a row put into the database by hand, without the key
// encryption key (a forged webhook, a payload stored in the clear, a
// commitment that does not match) is never signed. It returns their
// leaves.
//
// A payload deleted before its record was integrated (a subject's key
// shredded within the interval) passes here: verify requires a deletion
// record to name it.
func (l *Ledger) admit(ctx context.Context, start, end uint64) ([][]byte, error) {
	leaves := make([][]byte, 0, end-start)
	next := start
	for rec, err := range l.store.Records(ctx, start, end) {
		if err != nil {
			return nil, fmt.Errorf("ledger: read records [%d, %d): %w", start, end, err)
		}
		if rec.Index != next || rec.Leaf == nil {
			return nil, fmt.Errorf("ledger: record %d: %w", next, ErrNotFound)
		}
		if _, _, err := CheckRecord(ctx, l.opts.Sealer, rec); err != nil {
			return nil, fmt.Errorf("%w record %d: %v", ErrRefused, rec.Index, err)
		}
		leaves = append(leaves, rec.Leaf)
		next++
	}
	if next != end {
		return nil, fmt.Errorf("ledger: record %d: %w", next, ErrNotFound)
	}
	return leaves, nil
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
