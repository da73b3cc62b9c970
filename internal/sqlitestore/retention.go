package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// Expired implements retention.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, from uint64, limit int) ([]retention.Candidate, error) {
	rows, err := s.rq.QueryContext(ctx, `SELECT idx, leaf, keys, delete_after_ms FROM records
		WHERE delete_after_ms IS NOT NULL AND delete_after_ms <= ? AND payload IS NOT NULL AND idx >= ?
		ORDER BY idx LIMIT ?`, now.UnixMilli(), from, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: expired records: %w", err)
	}
	return scanCandidates(rows)
}

func scanCandidates(rows rowScanner) ([]retention.Candidate, error) {
	defer rows.Close()
	var out []retention.Candidate
	for rows.Next() {
		var idx uint64
		var lb []byte
		var keys sql.NullString
		var after sql.NullInt64
		if err := rows.Scan(&idx, &lb, &keys, &after); err != nil {
			return nil, fmt.Errorf("sqlitestore: read records: %w", err)
		}
		c, err := retention.NewCandidate(idx, lb, keys.String, after.Int64)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: read records: %w", err)
	}
	return out, nil
}

// SubjectRecords implements retention.Store.
func (s *Store) SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]retention.Candidate, error) {
	if err := s.IndexSubjects(ctx); err != nil {
		return nil, err
	}
	rows, err := s.rq.QueryContext(ctx, `SELECT r.idx, r.leaf, r.keys, r.delete_after_ms
		FROM record_subjects AS x JOIN records AS r ON r.idx = x.idx
		WHERE x.subject = ? AND x.idx >= ? AND r.payload IS NOT NULL
		ORDER BY x.idx LIMIT ?`, subject, from, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: records of a subject: %w", err)
	}
	return scanCandidates(rows)
}

// setDeleteAfter applies retention.SetDeleteAfter inside tx.
func setDeleteAfter(ctx context.Context, tx *sql.Tx, cs []retention.Candidate) error {
	for _, c := range cs {
		var after any
		if c.DeleteAfterMs > 0 {
			after = c.DeleteAfterMs
		}
		if _, err := tx.ExecContext(ctx, "UPDATE records SET delete_after_ms = ? WHERE idx = ? AND payload IS NOT NULL", after, c.Index); err != nil {
			return fmt.Errorf("sqlitestore: set delete-after: %w", err)
		}
	}
	return nil
}

// deletePayloads applies retention.DeletePayloads inside tx. secure_delete
// overwrites the freed bytes in the database pages; Append truncates the
// WAL after the commit.
func deletePayloads(ctx context.Context, tx *sql.Tx, indices []uint64, destroy []string) error {
	// Index what is not yet, so that the index has every record that
	// refers to a key about to be destroyed. (Records purged unindexed
	// need no index: their keys go with their payloads.)
	if len(destroy) > 0 {
		if err := indexSubjects(ctx, tx, -1); err != nil {
			return err
		}
	}
	for start := 0; start < len(indices); start += 500 {
		chunk := indices[start:min(len(indices), start+500)]
		args := make([]any, len(chunk))
		for i, x := range chunk {
			args[i] = x
		}
		in := "(?" + strings.Repeat(", ?", len(chunk)-1) + ")"
		// The index rows go with the payloads (they name the subjects).
		if err := unindex(ctx, tx, in, args); err != nil {
			return fmt.Errorf("sqlitestore: delete payloads: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE records SET payload = NULL, nonce = NULL, keys = NULL WHERE idx IN "+in, args...); err != nil {
			return fmt.Errorf("sqlitestore: delete payloads: %w", err)
		}
	}
	for _, subj := range destroy {
		// Fails (a foreign key) if a record of the subject still refers
		// to the key: one appended after the caller listed them.
		if _, err := tx.ExecContext(ctx, "DELETE FROM subject_keys WHERE subject = ?", subj); err != nil {
			return fmt.Errorf("sqlitestore: destroy a data key (were records added meanwhile? run again): %w", err)
		}
		if err := forgetSubject(ctx, tx, subj); err != nil {
			return err
		}
	}
	return nil
}

// Holds implements retention.Store.
func (s *Store) Holds(ctx context.Context) ([]retention.Hold, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT id, channel, subject, from_ms, to_ms, reason, created_ms, released_ms FROM holds ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: holds: %w", err)
	}
	defer rows.Close()
	var out []retention.Hold
	for rows.Next() {
		var h retention.Hold
		if err := rows.Scan(&h.ID, &h.Channel, &h.Subject, &h.FromMs, &h.ToMs, &h.Reason, &h.CreatedMs, &h.ReleasedMs); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// forgetSubject removes a shredded subject's id from the state tables:
// its consent (no row is the safe default: no opt-in), the subject of its
// released holds, which keep the subject's pseudonym, and the id where a
// hold's reason names it (the pseudonym instead). (An active hold on the
// subject refuses the shred before this.)
func forgetSubject(ctx context.Context, tx *sql.Tx, subject string) error {
	if user, ok := strings.CutPrefix(subject, "user:"); ok {
		if _, err := tx.ExecContext(ctx, "DELETE FROM consent WHERE user = ?", user); err != nil {
			return fmt.Errorf("sqlitestore: forget a subject's consent: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE holds SET subject = ? WHERE subject = ? AND released_ms != 0", record.Pseudonym(subject), subject); err != nil {
		return fmt.Errorf("sqlitestore: forget a subject's holds: %w", err)
	}
	// A hold's reason may name the subject ("case for U..."): whole or
	// bare, the id becomes the pseudonym there too.
	_, id, _ := strings.Cut(subject, ":")
	if _, err := tx.ExecContext(ctx, "UPDATE holds SET reason = replace(replace(reason, ?1, ?2), ?3, ?2) WHERE instr(reason, ?3) > 0",
		subject, record.Pseudonym(subject), id); err != nil {
		return fmt.Errorf("sqlitestore: forget a subject in the holds' reasons: %w", err)
	}
	return nil
}

// addHold applies retention.AddHold inside tx: the hold's id is the index
// of its record.
func addHold(ctx context.Context, tx *sql.Tx, id uint64, h retention.Hold) error {
	if _, err := tx.ExecContext(ctx, "INSERT INTO holds (id, channel, subject, from_ms, to_ms, reason, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
		id, h.Channel, h.Subject, h.FromMs, h.ToMs, h.Reason, h.CreatedMs); err != nil {
		return fmt.Errorf("sqlitestore: add hold: %w", err)
	}
	return nil
}

// releaseHold applies retention.ReleaseHold inside tx.
func releaseHold(ctx context.Context, tx *sql.Tx, id int64, at time.Time) error {
	res, err := tx.ExecContext(ctx, "UPDATE holds SET released_ms = ? WHERE id = ? AND released_ms = 0", at.UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("sqlitestore: release hold: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlitestore: release hold: %w", err)
	} else if n != 1 {
		return fmt.Errorf("sqlitestore: no active hold %d: %w", id, ledger.ErrNotFound)
	}
	return nil
}

// TruncateWAL copies the WAL into the database file and empties it, so that
// earlier images of changed pages (a destroyed or re-wrapped key) are gone
// from the files.
func (s *Store) TruncateWAL(ctx context.Context) error {
	if _, err := s.ckpt.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return fmt.Errorf("sqlitestore: checkpoint the WAL: %w", err)
	}
	return nil
}

// IndexSubjects brings the index of records by subject up to date.
// Lookups by subject run it first.
func (s *Store) IndexSubjects(ctx context.Context) error {
	for {
		more, err := s.IndexSubjectsBatch(ctx, 4096)
		if err != nil || !more {
			return err
		}
	}
}

// IndexSubjectsBatch indexes, in one transaction, the records that come
// next up to limit index rows (a record's subjects; at least one record),
// and reports whether more wait. Serve runs it in the background in small
// batches, between group commits, so that the write lock it takes never
// holds an acknowledgement for long: a bound in rows, not records, keeps
// a batch of records sealed for many subjects (a delivery to a fan-out
// destination carries up to its batch of users' events) as short as one
// of single-subject records.
func (s *Store) IndexSubjectsBatch(ctx context.Context, limit int) (bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("sqlitestore: begin: %w", err)
	}
	defer tx.Rollback()
	var more bool
	err = indexSubjects(ctx, tx, limit)
	if err == nil {
		err = tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM records WHERE idx >= (SELECT next FROM subject_index_cursor))").Scan(&more)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return false, fmt.Errorf("sqlitestore: index records by subject: %w", err)
	}
	return more, nil
}

// indexSubjects indexes the records from the cursor, inside tx, up to
// limit index rows (at least one record; all records if limit is
// negative).
func indexSubjects(ctx context.Context, tx *sql.Tx, limit int) error {
	var next uint64
	if err := tx.QueryRowContext(ctx, "SELECT next FROM subject_index_cursor WHERE id = 0").Scan(&next); err != nil {
		return err
	}
	// Every record but the system's has a row or more: limit records
	// hold limit rows at least, or the batch ends early.
	rows, err := tx.QueryContext(ctx, "SELECT idx, keys FROM records WHERE idx >= ? ORDER BY idx LIMIT ?", next, limit)
	if err != nil {
		return err
	}
	var args []any
	end := next
	for rows.Next() {
		var idx uint64
		var keys sql.NullString
		if err := rows.Scan(&idx, &keys); err != nil {
			rows.Close()
			return err
		}
		ks, err := ledger.ParseKeys(keys.String)
		if err != nil {
			rows.Close()
			return fmt.Errorf("record %d: %w", idx, err)
		}
		var add []any
		for _, k := range ks {
			if k.Subject != ledger.SubjectSystem {
				add = append(add, k.Subject, idx, k.ID)
			}
		}
		if limit >= 0 && len(add) > 0 && len(args) > 0 && (len(args)+len(add))/3 > limit {
			break // the next batch begins with it
		}
		args, end = append(args, add...), idx+1
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for len(args) > 0 {
		n := min(len(args)/3, 300)
		q := "INSERT OR IGNORE INTO record_subjects (subject, idx, key_id) VALUES (?, ?, ?)" + strings.Repeat(", (?, ?, ?)", n-1)
		if _, err := tx.ExecContext(ctx, q, args[:3*n]...); err != nil {
			return err
		}
		args = args[3*n:]
	}
	_, err = tx.ExecContext(ctx, "UPDATE subject_index_cursor SET next = ? WHERE id = 0", end)
	return err
}

// unindex deletes the index rows of the records idx IN in.
func unindex(ctx context.Context, tx *sql.Tx, in string, args []any) error {
	rows, err := tx.QueryContext(ctx, "SELECT idx, keys FROM records WHERE keys IS NOT NULL AND idx IN "+in, args...)
	if err != nil {
		return err
	}
	var del []any
	for rows.Next() {
		var idx uint64
		var keys string
		if err := rows.Scan(&idx, &keys); err != nil {
			rows.Close()
			return err
		}
		ks, err := ledger.ParseKeys(keys)
		if err != nil {
			rows.Close()
			return err
		}
		for _, k := range ks {
			del = append(del, k.Subject, idx)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for len(del) > 0 {
		n := min(len(del)/2, 400)
		q := "DELETE FROM record_subjects WHERE (subject, idx) IN (VALUES (?, ?)" + strings.Repeat(", (?, ?)", n-1) + ")"
		if _, err := tx.ExecContext(ctx, q, del[:2*n]...); err != nil {
			return err
		}
		del = del[2*n:]
	}
	return nil
}
