package handoff

import (
	"context"
	"errors"
	"fmt"

	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
)

// Gate wraps the pipeline's action: an event of a conversation a person
// owns is never answered by a rule. Its outcome is held_for_human, and
// consent (the opt-out and opt-in keywords) still applies to it through
// consent. Events of other conversations go to next; those of a
// conversation with a stored state are noted (its last event).
func (s *Service) Gate(next pipeline.Action, consent func(ctx context.Context, it *pipeline.Item, ev *line.Event) error) pipeline.Action {
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, ev *line.Event) error {
		id := ev.Conversation()
		if id == "" {
			return next.Handle(ctx, it, ev)
		}
		c, err := s.o.Store.Conversation(ctx, it.Channel, id)
		if errors.Is(err, ErrNotFound) {
			return next.Handle(ctx, it, ev)
		}
		if err != nil {
			return fmt.Errorf("handoff: read the conversation's state: %w", err)
		}
		at := s.o.Now()
		if it.ReceivedMs > 0 {
			at = msTime(it.ReceivedMs)
		}
		if c.State != StateHuman {
			if err := s.o.Store.NoteEvent(ctx, it.Channel, id, at, false); err != nil {
				s.log.Warn("handoff: note an event", "channel", it.Channel, "err", err)
			}
			return next.Handle(ctx, it, ev)
		}
		if consent != nil {
			if err := consent(ctx, it, ev); err != nil {
				return err
			}
		}
		if err := s.o.Store.NoteEvent(ctx, it.Channel, id, at, true); err != nil {
			s.log.Warn("handoff: note a held event", "channel", it.Channel, "err", err)
		}
		s.held.WithLabelValues(it.Channel).Inc()
		it.Outcome, it.Reason = pipeline.OutcomeHeldForHuman, "a person owns the conversation: no rule answers it"
		if c.Agent == "" {
			it.Reason += " (waiting for one)"
		}
		return nil
	})
}
