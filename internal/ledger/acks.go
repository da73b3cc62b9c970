package ledger

import (
	"context"
	"fmt"
)

// Acknowledges reports whether a rollback acknowledgement among the
// store's records names the checkpoint signed as lost: for checkpoints
// published elsewhere than the checkpoint file and the anchors (an object
// storage bucket), which New does not read. s opens sealed records.
func Acknowledges(ctx context.Context, store Store, s Sealer, signed []byte) (bool, error) {
	n, err := store.Count(ctx)
	if err != nil {
		return false, fmt.Errorf("ledger: count records: %w", err)
	}
	acks, err := findAcks(ctx, store, n, s, func(acks []ackRecord) bool {
		_, ok := ackFor(acks, signed)
		return ok
	})
	if err != nil {
		return false, err
	}
	_, ok := ackFor(acks, signed)
	return ok, nil
}
