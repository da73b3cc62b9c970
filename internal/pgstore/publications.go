package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Publication returns the cursor of an archive stream, "" if none.
func (s *Store) Publication(ctx context.Context, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, "SELECT value FROM publications WHERE name = $1", name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgstore: read publication %s: %w", name, err)
	}
	return v, nil
}

// SetPublication sets the cursor of an archive stream.
func (s *Store) SetPublication(ctx context.Context, name, value string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO publications (name, value, updated_ms) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms`, name, value, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("pgstore: write publication %s: %w", name, err)
	}
	return nil
}
