package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/handoff"
)

var _ handoff.Store = (*Store)(nil)

// Conversation implements handoff.Store.
func (s *Store) Conversation(ctx context.Context, channel, id string) (handoff.Conversation, error) {
	c, err := handoff.ScanConversation(s.rq.QueryRowContext(ctx, "SELECT "+handoff.ConversationColumns+" FROM conversations WHERE channel = ? AND id = ?", channel, id).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return c, handoff.ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("sqlitestore: read conversation: %w", err)
	}
	return c, nil
}

// Conversations implements handoff.Store.
func (s *Store) Conversations(ctx context.Context, channels []string, states []handoff.State) ([]handoff.Conversation, error) {
	q := "SELECT " + handoff.ConversationColumns + " FROM conversations WHERE 1 = 1"
	var args []any
	if channels != nil {
		q += " AND channel IN (" + placeholders(len(channels)) + ")"
		for _, c := range channels {
			args = append(args, c)
		}
	}
	if len(states) > 0 {
		q += " AND state IN (" + placeholders(len(states)) + ")"
		for _, st := range states {
			args = append(args, string(st))
		}
	}
	q += " ORDER BY max(since_ms, last_event_ms, last_agent_ms) DESC LIMIT 10000"
	rows, err := s.rq.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read conversations: %w", err)
	}
	defer rows.Close()
	var out []handoff.Conversation
	for rows.Next() {
		c, err := handoff.ScanConversation(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: read conversations: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func placeholders(n int) string {
	if n == 0 {
		return "NULL"
	}
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// NoteEvent implements handoff.Store.
func (s *Store) NoteEvent(ctx context.Context, channel, id string, at time.Time, held bool) error {
	inc := 0
	if held {
		inc = 1
	}
	_, err := s.w.ExecContext(ctx, `UPDATE conversations SET last_event_ms = max(last_event_ms, ?), waiting = waiting + ?
		WHERE channel = ? AND id = ?`, at.UnixMilli(), inc, channel, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: note a conversation's event: %w", err)
	}
	return nil
}

// NoteAgent implements handoff.Store.
func (s *Store) NoteAgent(ctx context.Context, channel, id string, at time.Time) error {
	_, err := s.w.ExecContext(ctx, `UPDATE conversations SET last_agent_ms = max(last_agent_ms, ?), waiting = 0
		WHERE channel = ? AND id = ?`, at.UnixMilli(), channel, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: note a conversation's reply: %w", err)
	}
	return nil
}

// setConversation applies handoff.SetState inside tx.
func setConversation(ctx context.Context, tx *sql.Tx, e handoff.SetState) error {
	cur, err := handoff.ScanConversation(tx.QueryRowContext(ctx, "SELECT "+handoff.ConversationColumns+" FROM conversations WHERE channel = ? AND id = ?", e.Channel, e.ID).Scan)
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlitestore: read conversation: %w", err)
	}
	if !e.Allows(cur, found) {
		return handoff.ErrConflict
	}
	waiting := cur.Waiting
	if e.State != handoff.StateHuman {
		waiting = 0
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO conversations (`+handoff.ConversationColumns+`) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)
		ON CONFLICT (channel, id) DO UPDATE SET state = excluded.state, agent = excluded.agent, reason = excluded.reason,
		since_ms = excluded.since_ms, waiting = excluded.waiting`,
		e.Channel, e.ID, string(e.State), e.Agent, e.Reason, e.At.UnixMilli(), waiting)
	if err != nil {
		return fmt.Errorf("sqlitestore: write conversation: %w", err)
	}
	return nil
}

// queueNotification applies handoff.QueueNotification inside tx.
func queueNotification(ctx context.Context, tx *sql.Tx, n handoff.QueueNotification) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO notifications (channel, target, body, attempts, next_ms, created_ms) VALUES (?, ?, ?, 0, ?, ?)`,
		n.Channel, n.Target, n.Body, n.At.UnixMilli(), n.At.UnixMilli())
	if err != nil {
		return fmt.Errorf("sqlitestore: queue notification: %w", err)
	}
	return nil
}

// notificationAttempt applies handoff.NotificationAttempt inside tx.
func notificationAttempt(ctx context.Context, tx *sql.Tx, a handoff.NotificationAttempt) error {
	var err error
	if a.Done {
		_, err = tx.ExecContext(ctx, "DELETE FROM notifications WHERE id = ?", a.ID)
	} else {
		_, err = tx.ExecContext(ctx, "UPDATE notifications SET attempts = ?, next_ms = ? WHERE id = ?", a.Attempts, a.Next.UnixMilli(), a.ID)
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: note notification attempt: %w", err)
	}
	return nil
}

// DueNotifications implements handoff.Store.
func (s *Store) DueNotifications(ctx context.Context, now time.Time, limit int) ([]handoff.Notification, error) {
	rows, err := s.rq.QueryContext(ctx, `SELECT id, channel, target, body, attempts, next_ms, created_ms FROM notifications
		WHERE next_ms <= ? ORDER BY next_ms, id LIMIT ?`, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read notifications: %w", err)
	}
	defer rows.Close()
	var out []handoff.Notification
	for rows.Next() {
		var n handoff.Notification
		var next, created int64
		if err := rows.Scan(&n.ID, &n.Channel, &n.Target, &n.Body, &n.Attempts, &next, &created); err != nil {
			return nil, fmt.Errorf("sqlitestore: read notifications: %w", err)
		}
		n.Next, n.Created = time.UnixMilli(next).UTC(), time.UnixMilli(created).UTC()
		out = append(out, n)
	}
	return out, rows.Err()
}

// ClaimNotification implements handoff.Store.
func (s *Store) ClaimNotification(ctx context.Context, id int64, next, until time.Time) (bool, error) {
	res, err := s.w.ExecContext(ctx, "UPDATE notifications SET next_ms = ? WHERE id = ? AND next_ms = ?", until.UnixMilli(), id, next.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sqlitestore: claim notification: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
