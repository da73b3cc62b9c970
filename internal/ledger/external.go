package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/mod/sumdb/note"
)

// AcknowledgedRollback is a published checkpoint that the verified tree
// does not extend, and that a rollback acknowledgement inside that tree
// names as lost: a loss on record, not a silent one.
type AcknowledgedRollback struct {
	Record uint64 // the acknowledgement record
	Name   string // the checkpoint's: "published checkpoint file", "anchor 2026-11-26"
	Size   uint64 // its tree size
	// From and To bound the records lost, [From, To): from the size the
	// database was restored to, to the checkpoint's.
	From, To uint64
	Reason   string
}

// externalCheck is Verify's finding about one external checkpoint: nil
// while the tree extends it, else why not.
type externalCheck struct {
	External
	Checkpoint
	err error
}

// openExternals verifies the external checkpoints' signatures and marks
// those beyond the tree head as not extended. The others Verify checks
// against the roots it recomputes (notExtended).
func openExternals(external []External, v note.Verifier, origin string, head TreeHead) ([]*externalCheck, error) {
	var out []*externalCheck
	for _, ext := range external {
		c, err := OpenCheckpoint(ext.Signed, v, origin)
		if err != nil {
			return nil, verr(ext.Name, "%v", err)
		}
		x := &externalCheck{External: ext, Checkpoint: c}
		if c.Size > head.Size {
			x.err = verr("tree head", "size %d is behind the %s (size %d): the database was rolled back or lost records", head.Size, ext.Name, c.Size)
		}
		out = append(out, x)
	}
	return out, nil
}

// notExtended records that the tree's root at x's size is not x's.
func (x *externalCheck) notExtended(err error) { x.err = err }

// acknowledgedLosses returns the losses that the rollback
// acknowledgements among the records [0, treeSize), which Verify checked,
// name: one for each checkpoint of this log each names. Every external checkpoint that the tree does not extend must
// be among them; the first one that is not is the error. The checkpoint
// file is overwritten once the gateway runs again, so the records are
// what keeps a loss from going silent: it reads every admin record, after
// the leaves.
func acknowledgedLosses(ctx context.Context, r recordReader, treeSize, count uint64, s Sealer, v note.Verifier, origin string, exts []*externalCheck) ([]AcknowledgedRollback, error) {
	acks, err := findAcks(ctx, r, count, s, nil)
	if err != nil {
		return nil, err
	}
	for _, x := range exts {
		if x.err == nil {
			continue
		}
		a, ok := ackFor(acks, x.Signed)
		if !ok {
			return nil, x.err
		}
		if a.index >= treeSize {
			var ve *VerifyError
			errors.As(x.err, &ve)
			return nil, verr(ve.Where, "%s; record %d acknowledges the loss, but is not yet in the tree", ve.Reason, a.index)
		}
	}
	var out []AcknowledgedRollback
	for _, a := range slices.Backward(acks) {
		if a.index >= treeSize {
			continue
		}
		for _, l := range a.body.Lost {
			c, err := OpenCheckpoint([]byte(l.Checkpoint), v, origin)
			if err != nil {
				continue // no checkpoint of this log: no loss
			}
			out = append(out, AcknowledgedRollback{Record: a.index, Name: l.Name, Size: c.Size,
				From: min(a.body.RestoredSize, c.Size), To: c.Size, Reason: a.body.Reason})
		}
	}
	return out, nil
}

// String describes the loss as linegate verify prints it.
func (a AcknowledgedRollback) String() string {
	what := fmt.Sprintf("the tree of the %s (size %d)", a.Name, a.Size)
	if a.From < a.To {
		what = fmt.Sprintf("records %d..%d of the %s (size %d)", a.From, a.To-1, a.Name, a.Size)
	}
	return fmt.Sprintf("%s, acknowledged by record %d: %s", what, a.Record, a.Reason)
}
