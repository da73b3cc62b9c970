package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/outbound"
)

var _ outbound.State = (*Store)(nil)

// Setting implements outbound.State.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.rq.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlitestore: read setting: %w", err)
	}
	return v, nil
}

// setSetting applies outbound.SetSetting inside tx.
func (s *Store) setSetting(ctx context.Context, tx *sql.Tx, key, value string) error {
	// Kept prepared: the fan-out's cursors are set with most deliveries.
	_, err := s.exec(ctx, tx, "INSERT INTO settings (key, value, updated_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
		key, value, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("sqlitestore: write setting: %w", err)
	}
	return nil
}

// OptedIn implements outbound.State.
func (s *Store) OptedIn(ctx context.Context, channel, user string) (bool, error) {
	var in bool
	err := s.rq.QueryRowContext(ctx, "SELECT opt_in FROM consent WHERE channel = ? AND user = ?", channel, user).Scan(&in)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sqlitestore: read consent: %w", err)
	}
	return in, nil
}

// setConsent applies outbound.SetConsent inside tx. A consent record
// older than the one stored does not replace it.
func setConsent(ctx context.Context, tx *sql.Tx, c outbound.SetConsent) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO consent (channel, user, opt_in, at_ms, source) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (channel, user) DO UPDATE SET opt_in = excluded.opt_in, at_ms = excluded.at_ms, source = excluded.source
		WHERE excluded.at_ms >= consent.at_ms`, c.Channel, c.User, c.OptIn, c.At.UnixMilli(), c.Source)
	if err != nil {
		return fmt.Errorf("sqlitestore: write consent: %w", err)
	}
	return nil
}

// Cooldown implements rules.Cooldowns.
func (s *Store) Cooldown(ctx context.Context, key, event string, now, until time.Time) (bool, error) {
	res, err := s.w.ExecContext(ctx, `INSERT INTO cooldowns (key, until_ms, event) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms, event = excluded.event
		WHERE cooldowns.until_ms <= ? OR cooldowns.event = excluded.event`, key, until.UnixMilli(), event, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sqlitestore: cooldown: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ForgetCooldowns deletes the cooldowns that ended before t.
func (s *Store) ForgetCooldowns(ctx context.Context, t time.Time) error {
	if _, err := s.w.ExecContext(ctx, "DELETE FROM cooldowns WHERE until_ms < ?", t.UnixMilli()); err != nil {
		return fmt.Errorf("sqlitestore: forget cooldowns: %w", err)
	}
	return nil
}
