package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/handoff"
)

var _ handoff.Store = (*Store)(nil)

// Conversation implements handoff.Store.
func (s *Store) Conversation(ctx context.Context, channel, id string) (handoff.Conversation, error) {
	c, err := handoff.ScanConversation(s.pool.QueryRow(ctx, "SELECT "+handoff.ConversationColumns+" FROM conversations WHERE channel = $1 AND id = $2", channel, id).Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, handoff.ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("pgstore: read conversation: %w", err)
	}
	return c, nil
}

// Conversations implements handoff.Store.
func (s *Store) Conversations(ctx context.Context, channels []string, states []handoff.State) ([]handoff.Conversation, error) {
	q := "SELECT " + handoff.ConversationColumns + " FROM conversations WHERE 1 = 1"
	var args []any
	if channels != nil {
		args = append(args, channels)
		q += fmt.Sprintf(" AND channel = ANY($%d)", len(args))
	}
	if len(states) > 0 {
		var ss []string
		for _, st := range states {
			ss = append(ss, string(st))
		}
		args = append(args, ss)
		q += fmt.Sprintf(" AND state = ANY($%d)", len(args))
	}
	q += " ORDER BY greatest(since_ms, last_event_ms, last_agent_ms) DESC LIMIT 10000"
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read conversations: %w", err)
	}
	defer rows.Close()
	var out []handoff.Conversation
	for rows.Next() {
		c, err := handoff.ScanConversation(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("pgstore: read conversations: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// NoteEvent implements handoff.Store.
func (s *Store) NoteEvent(ctx context.Context, channel, id string, at time.Time, held bool) error {
	inc := 0
	if held {
		inc = 1
	}
	_, err := s.pool.Exec(ctx, `UPDATE conversations SET last_event_ms = greatest(last_event_ms, $1), waiting = waiting + $2
		WHERE channel = $3 AND id = $4`, at.UnixMilli(), inc, channel, id)
	if err != nil {
		return fmt.Errorf("pgstore: note a conversation's event: %w", err)
	}
	return nil
}

// NoteAgent implements handoff.Store.
func (s *Store) NoteAgent(ctx context.Context, channel, id string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE conversations SET last_agent_ms = greatest(last_agent_ms, $1), waiting = 0
		WHERE channel = $2 AND id = $3`, at.UnixMilli(), channel, id)
	if err != nil {
		return fmt.Errorf("pgstore: note a conversation's reply: %w", err)
	}
	return nil
}

// setConversation applies handoff.SetState inside tx.
func setConversation(ctx context.Context, tx pgx.Tx, e handoff.SetState) error {
	cur, err := handoff.ScanConversation(tx.QueryRow(ctx, "SELECT "+handoff.ConversationColumns+" FROM conversations WHERE channel = $1 AND id = $2 FOR UPDATE", e.Channel, e.ID).Scan)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("pgstore: read conversation: %w", err)
	}
	if !e.Allows(cur, found) {
		return handoff.ErrConflict
	}
	waiting := cur.Waiting
	if e.State != handoff.StateHuman {
		waiting = 0
	}
	_, err = tx.Exec(ctx, `INSERT INTO conversations (`+handoff.ConversationColumns+`) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)
		ON CONFLICT (channel, id) DO UPDATE SET state = excluded.state, agent = excluded.agent, reason = excluded.reason,
		since_ms = excluded.since_ms, waiting = excluded.waiting`,
		e.Channel, e.ID, string(e.State), e.Agent, e.Reason, e.At.UnixMilli(), waiting)
	if err != nil {
		return fmt.Errorf("pgstore: write conversation: %w", err)
	}
	return nil
}

// queueNotification applies handoff.QueueNotification inside tx.
func queueNotification(ctx context.Context, tx pgx.Tx, n handoff.QueueNotification) error {
	_, err := tx.Exec(ctx, `INSERT INTO notifications (channel, target, body, attempts, next_ms, created_ms) VALUES ($1, $2, $3, 0, $4, $5)`,
		n.Channel, n.Target, n.Body, n.At.UnixMilli(), n.At.UnixMilli())
	if err != nil {
		return fmt.Errorf("pgstore: queue notification: %w", err)
	}
	return nil
}

// notificationAttempt applies handoff.NotificationAttempt inside tx.
func notificationAttempt(ctx context.Context, tx pgx.Tx, a handoff.NotificationAttempt) error {
	var err error
	if a.Done {
		_, err = tx.Exec(ctx, "DELETE FROM notifications WHERE id = $1", a.ID)
	} else {
		_, err = tx.Exec(ctx, "UPDATE notifications SET attempts = $1, next_ms = $2 WHERE id = $3", a.Attempts, a.Next.UnixMilli(), a.ID)
	}
	if err != nil {
		return fmt.Errorf("pgstore: note notification attempt: %w", err)
	}
	return nil
}

// DueNotifications implements handoff.Store.
func (s *Store) DueNotifications(ctx context.Context, now time.Time, limit int) ([]handoff.Notification, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, channel, target, body, attempts, next_ms, created_ms FROM notifications
		WHERE next_ms <= $1 ORDER BY next_ms, id LIMIT $2`, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read notifications: %w", err)
	}
	defer rows.Close()
	var out []handoff.Notification
	for rows.Next() {
		var n handoff.Notification
		var next, created int64
		if err := rows.Scan(&n.ID, &n.Channel, &n.Target, &n.Body, &n.Attempts, &next, &created); err != nil {
			return nil, fmt.Errorf("pgstore: read notifications: %w", err)
		}
		n.Next, n.Created = time.UnixMilli(next).UTC(), time.UnixMilli(created).UTC()
		out = append(out, n)
	}
	return out, rows.Err()
}

// ClaimNotification implements handoff.Store.
func (s *Store) ClaimNotification(ctx context.Context, id int64, next, until time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE notifications SET next_ms = $1 WHERE id = $2 AND next_ms = $3", until.UnixMilli(), id, next.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("pgstore: claim notification: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}
