package rules

import (
	"context"
	"log/slog"
	"time"

	"github.com/linegate/linegate/internal/periodic"
)

// CooldownForgetter deletes stored cooldowns once they have ended. The
// stores implement it.
type CooldownForgetter interface {
	// ForgetCooldowns deletes the cooldowns that ended before t.
	ForgetCooldowns(ctx context.Context, t time.Time) error
}

// RunCooldownExpiry forgets the cooldowns that have ended, every interval
// until ctx ends. Among replicas, the one sequencing the log does it
// (sequencing); the others skip the round.
func RunCooldownExpiry(ctx context.Context, f CooldownForgetter, every time.Duration, sequencing func() bool, log *slog.Logger) {
	periodic.Every(ctx, every, func(ctx context.Context) {
		if !sequencing() {
			return
		}
		if err := f.ForgetCooldowns(ctx, time.Now()); err != nil {
			log.Error("cooldowns not forgotten", "err", err)
		}
	})
}
