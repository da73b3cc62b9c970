package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
)

// apply applies one effect of an append inside its transaction, after
// the records (the first at index first) are inserted.
func (s *Store) apply(ctx context.Context, tx pgx.Tx, first uint64, e ledger.Effect) error {
	var err error
	switch e := e.(type) {
	case pipeline.Dequeue:
		err = dequeue(ctx, tx, e)
	case pipeline.Enqueue:
		err = enqueue(ctx, tx, e)
	case retention.DeletePayloads:
		// A hold added since the caller read the holds: it starts over.
		// (The hold's insert and this check are ordered by the log's
		// counter row, which both transactions lock by appending.)
		var n int
		if err = tx.QueryRow(ctx, "SELECT COUNT(*) FROM holds WHERE released_ms = 0 AND id > $1", int64(e.HoldsKnown)).Scan(&n); err == nil && n > 0 {
			err = retention.ErrHoldsChanged
		}
		if err == nil {
			err = deletePayloads(ctx, tx, e.Indices, e.Destroy)
		}
	case retention.SetDeleteAfter:
		err = setDeleteAfter(ctx, tx, e.Records)
	case retention.AddHold:
		err = addHold(ctx, tx, first, e.Hold)
	case retention.ReleaseHold:
		err = releaseHold(ctx, tx, e.ID, e.At)
	case outbound.SetSetting:
		err = setSetting(ctx, tx, e.Key, e.Value)
	case outbound.SetConsent:
		err = setConsent(ctx, tx, e)
	case handoff.SetState:
		err = setConversation(ctx, tx, e)
	case handoff.QueueNotification:
		err = queueNotification(ctx, tx, e)
	case handoff.NotificationAttempt:
		err = notificationAttempt(ctx, tx, e)
	default:
		err = ledger.ErrUnsupportedEffect
	}
	if err != nil {
		return fmt.Errorf("%s: %w", e.EffectName(), err)
	}
	return nil
}
