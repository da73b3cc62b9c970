package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Publication returns the cursor of an archive stream, "" if none.
func (s *Store) Publication(ctx context.Context, name string) (string, error) {
	var v string
	err := s.rq.QueryRowContext(ctx, "SELECT value FROM publications WHERE name = ?", name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlitestore: read publication %s: %w", name, err)
	}
	return v, nil
}

// SetPublication sets the cursor of an archive stream.
func (s *Store) SetPublication(ctx context.Context, name, value string) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO publications (name, value, updated_ms) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms`, name, value, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("sqlitestore: write publication %s: %w", name, err)
	}
	return nil
}
