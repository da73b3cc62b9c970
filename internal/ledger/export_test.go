package ledger

import "context"

// Preadmit runs one slice of the sequencer's admission ahead of its next
// integration. Only while the sequencer sleeps: a ledger whose
// CheckpointInterval is long, and no Sync or Close under way.
func (l *Ledger) Preadmit(ctx context.Context) { l.preadmit(ctx) }

// Admitted returns how many records are admitted and not yet signed.
func (l *Ledger) Admitted() int { return len(l.admitted) }
