package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
)

// apply applies one effect of an append inside its transaction, after
// the records (the first at index first) are inserted.
func (s *Store) apply(ctx context.Context, tx *sql.Tx, first uint64, e ledger.Effect) error {
	switch e := e.(type) {
	case pipeline.Dequeue:
		// Alone on its database, the SQLite store has no claims: Owner
		// is never set here.
		if e.Owner != "" {
			return fmt.Errorf("sqlitestore: %s: claims need a shared store: %w", e.EffectName(), ledger.ErrUnsupportedEffect)
		}
		return s.dequeue(ctx, tx, e.Seqs)
	case pipeline.Enqueue:
		return s.enqueue(ctx, tx, e)
	case retention.DeletePayloads:
		// A hold added since the caller read the holds: it starts over.
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM holds WHERE released_ms = 0 AND id > ?", e.HoldsKnown).Scan(&n); err != nil {
			return fmt.Errorf("sqlitestore: read holds: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("sqlitestore: %w", retention.ErrHoldsChanged)
		}
		return deletePayloads(ctx, tx, e.Indices, e.Destroy)
	case retention.SetDeleteAfter:
		return setDeleteAfter(ctx, tx, e.Records)
	case retention.AddHold:
		return addHold(ctx, tx, first, e.Hold)
	case retention.ReleaseHold:
		return releaseHold(ctx, tx, e.ID, e.At)
	case outbound.SetSetting:
		return s.setSetting(ctx, tx, e.Key, e.Value)
	case outbound.SetConsent:
		return setConsent(ctx, tx, e)
	case fanout.Enqueue, fanout.Delivered, fanout.Retry:
		return s.applyFanout(ctx, tx, e)
	case handoff.SetState:
		return setConversation(ctx, tx, e)
	case handoff.QueueNotification:
		return queueNotification(ctx, tx, e)
	case handoff.NotificationAttempt:
		return notificationAttempt(ctx, tx, e)
	}
	return fmt.Errorf("sqlitestore: %s: %w", e.EffectName(), ledger.ErrUnsupportedEffect)
}
