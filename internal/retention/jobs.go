package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/periodic"
)

// RunPurges purges (Purge) every interval until ctx ends. Among replicas,
// the one sequencing the log purges (sequencing); the others skip the
// round. Failures are logged, and the next round tries again.
func RunPurges(ctx context.Context, s Store, c Committer, sealer ledger.Sealer, policies map[string]Policy, every time.Duration, sequencing func() bool, log *slog.Logger) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		if !sequencing() {
			return
		}
		rep, err := Purge(ctx, s, c, sealer, policies, time.Now(), false)
		if err != nil {
			log.Error("purge failed", "err", err)
			return
		}
		if len(rep.Refused) > 0 {
			log.Error("purge refused records whose stored delete-after time is earlier than their class allows: the database was changed; run linegate verify",
				"records", len(rep.Refused), "first", rep.Refused[0])
		}
		if len(rep.Deleted) > 0 || rep.Held > 0 {
			log.Info("purge", "deleted", len(rep.Deleted), "held", rep.Held)
		}
	})
}

// SubjectIndexer keeps the index of records by subject that
// Store.SubjectRecords reads (for holds, requests and shredding) behind the
// appends. The stores implement it.
type SubjectIndexer interface {
	// IndexSubjectsBatch indexes the next records by subject, up to
	// limit index rows (one per subject of a record; at least one
	// record), in a transaction of its own, and reports whether more
	// wait.
	IndexSubjectsBatch(ctx context.Context, limit int) (bool, error)
}

// RunSubjectIndex keeps the index of records by subject up to date, every
// interval until ctx ends: a few hundred index rows at a time, and only while
// no webhook waits for a commit (busy), so that the index never delays an
// acknowledgement for long.
func RunSubjectIndex(ctx context.Context, ix SubjectIndexer, every time.Duration, busy func() bool, log *slog.Logger) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		for ctx.Err() == nil && !busy() {
			more, err := ix.IndexSubjectsBatch(ctx, 256)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("records not indexed by subject", "err", err)
				}
				return
			}
			if !more {
				return
			}
		}
	})
}
