package sqlitestore

import (
	"context"
	"fmt"
	"strings"

	"github.com/linegate/linegate/internal/keys"
)

var _ keys.Store = (*Store)(nil)

// SubjectKeys implements keys.Store.
func (s *Store) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	return reader{s.rq}.SubjectKeys(ctx, subjects)
}

type rowScanner interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}

func scanKeys(rows rowScanner, out []keys.Wrapped) ([]keys.Wrapped, error) {
	defer rows.Close()
	for rows.Next() {
		var w keys.Wrapped
		if err := rows.Scan(&w.Subject, &w.ID, &w.KEK, &w.Key, &w.CreatedMs); err != nil {
			return nil, fmt.Errorf("sqlitestore: read data keys: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: read data keys: %w", err)
	}
	return out, nil
}

// AddSubjectKeys implements keys.Store.
func (s *Store) AddSubjectKeys(ctx context.Context, ws []keys.Wrapped) ([]keys.Wrapped, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: begin: %w", err)
	}
	defer tx.Rollback()
	subjects := make([]any, len(ws))
	for i, w := range ws {
		if _, err := tx.ExecContext(ctx, "INSERT INTO subject_keys (subject, id, kek, wrapped, created_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject) DO NOTHING",
			w.Subject, w.ID, w.KEK, w.Key, w.CreatedMs); err != nil {
			return nil, fmt.Errorf("sqlitestore: store data keys: %w", err)
		}
		subjects[i] = w.Subject
	}
	rows, err := tx.QueryContext(ctx, "SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject IN (?"+strings.Repeat(", ?", len(ws)-1)+")", subjects...)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: read data keys: %w", err)
	}
	out, err := scanKeys(rows, nil)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlitestore: commit: %w", err)
	}
	return out, nil
}

// ListSubjectKeys implements keys.Store.
func (s *Store) ListSubjectKeys(ctx context.Context, after string, limit int) ([]keys.Wrapped, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject > ? ORDER BY subject LIMIT ?", after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list data keys: %w", err)
	}
	return scanKeys(rows, nil)
}

// RewrapSubjectKey implements keys.Store.
func (s *Store) RewrapSubjectKey(ctx context.Context, oldKEK string, w keys.Wrapped) (bool, error) {
	res, err := s.w.ExecContext(ctx, "UPDATE subject_keys SET kek = ?, wrapped = ? WHERE subject = ? AND id = ? AND kek = ?",
		w.KEK, w.Key, w.Subject, w.ID, oldKEK)
	if err != nil {
		return false, fmt.Errorf("sqlitestore: re-wrap data key: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// KEKSamples implements keys.Store.
func (s *Store) KEKSamples(ctx context.Context) ([]keys.Wrapped, error) {
	return reader{s.rq}.KEKSamples(ctx)
}
