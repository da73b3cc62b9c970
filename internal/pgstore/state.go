package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

var (
	_ pipeline.Store   = (*Store)(nil)
	_ pipeline.Claimer = (*Store)(nil)
	_ outbound.State   = (*Store)(nil)
	_ retention.Store  = (*Store)(nil)
	_ keys.Store       = (*Store)(nil)
)

// Cursor implements pipeline.Store.
func (s *Store) Cursor(ctx context.Context) (uint64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT next FROM pipeline_cursor WHERE id = 0").Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: read cursor: %w", err)
	}
	return uint64(n), nil
}

// Enqueue implements pipeline.Store. The cursor only moves forward: a
// second dispatcher that read the same cursor gets ledger.ErrConflict and
// writes nothing.
func (s *Store) Enqueue(ctx context.Context, next uint64, items []*pipeline.Item, now time.Time) error {
	_, err := s.Append(ctx, nil, pipeline.Enqueue{Next: next, Items: items, Now: now})
	return err
}

// enqueue applies pipeline.Enqueue inside tx.
func enqueue(ctx context.Context, tx pgx.Tx, e pipeline.Enqueue) error {
	next, items, now := e.Next, e.Items, e.Now
	tag, err := tx.Exec(ctx, "UPDATE pipeline_cursor SET next = $1 WHERE id = 0 AND next < $1", int64(next))
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return ledger.ErrConflict
	}
	ms := now.UnixMilli()
	claim := func(key string) (bool, error) {
		tag, err := tx.Exec(ctx, "INSERT INTO dedup (key, first_ms) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, ms)
		return tag.RowsAffected() == 1, err
	}
	// Keys claimed before the dedup memory was per channel, read for
	// the whole batch at once: one round trip, not one per item.
	bare := make([]string, len(items))
	for i, it := range items {
		bare[i] = it.Key
	}
	rows, err := tx.Query(ctx, "SELECT key FROM dedup WHERE key = ANY($1)", bare)
	if err != nil {
		return err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	seen := func(key string) (bool, error) { return slices.Contains(found, key), nil }
	for _, it := range items {
		if err := it.Dedup(claim, seen); err != nil {
			return err
		}
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		conv := it.Conversation
		if conv == "" {
			conv = "event:" + it.Key // no source: an order of its own
		}
		var seq int64
		if err := tx.QueryRow(ctx, "INSERT INTO queue (item, conversation) VALUES ($1, $2) RETURNING seq", b, conv).Scan(&seq); err != nil {
			return err
		}
		it.Seq = uint64(seq)
	}
	return nil
}

// Pending implements pipeline.Store.
func (s *Store) Pending(ctx context.Context, after uint64, limit int) ([]*pipeline.Item, error) {
	rows, err := s.pool.Query(ctx, "SELECT seq, item FROM queue WHERE seq > $1 ORDER BY seq LIMIT $2", int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read queue: %w", err)
	}
	return scanItems(rows)
}

// scanItems reads (seq, item) rows of the queue.
func scanItems(rows pgx.Rows) ([]*pipeline.Item, error) {
	defer rows.Close()
	var out []*pipeline.Item
	for rows.Next() {
		var seq int64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			return nil, fmt.Errorf("pgstore: read queue: %w", err)
		}
		it := &pipeline.Item{}
		if err := json.Unmarshal(b, it); err != nil {
			return nil, fmt.Errorf("pgstore: queue item %d: %w", seq, err)
		}
		it.Seq = uint64(seq)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read queue: %w", err)
	}
	return out, nil
}

// ForgetKeys implements pipeline.Store.
func (s *Store) ForgetKeys(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM dedup WHERE first_ms < $1", before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("pgstore: forget keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// QueueDepth implements pipeline.Store.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT COUNT(*) FROM queue").Scan(&n)
	return n, err
}

// Setting implements outbound.State.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, "SELECT value FROM settings WHERE key = $1", key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgstore: read setting: %w", err)
	}
	return v, nil
}

// setSetting applies outbound.SetSetting inside tx.
func setSetting(ctx context.Context, tx pgx.Tx, key, value string) error {
	_, err := tx.Exec(ctx, `INSERT INTO settings (key, value, updated_ms) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms`, key, value, time.Now().UnixMilli())
	return err
}

// OptedIn implements outbound.State.
func (s *Store) OptedIn(ctx context.Context, channel, user string) (bool, error) {
	var in bool
	err := s.pool.QueryRow(ctx, `SELECT opt_in FROM consent WHERE channel = $1 AND "user" = $2`, channel, user).Scan(&in)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pgstore: read consent: %w", err)
	}
	return in, nil
}

// setConsent applies outbound.SetConsent inside tx. A consent record older
// than the one stored does not replace it.
func setConsent(ctx context.Context, tx pgx.Tx, c outbound.SetConsent) error {
	_, err := tx.Exec(ctx, `INSERT INTO consent (channel, "user", opt_in, at_ms, source) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (channel, "user") DO UPDATE SET opt_in = excluded.opt_in, at_ms = excluded.at_ms, source = excluded.source
		WHERE excluded.at_ms >= consent.at_ms`, c.Channel, c.User, c.OptIn, c.At.UnixMilli(), c.Source)
	return err
}

// Expired implements retention.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, from uint64, limit int) ([]retention.Candidate, error) {
	rows, err := s.pool.Query(ctx, `SELECT idx, leaf, keys, delete_after_ms FROM records
		WHERE delete_after_ms IS NOT NULL AND delete_after_ms <= $1 AND payload IS NOT NULL AND idx >= $2
		ORDER BY idx LIMIT $3`, now.UnixMilli(), int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: expired records: %w", err)
	}
	return scanCandidates(rows)
}

func scanCandidates(rows pgx.Rows) ([]retention.Candidate, error) {
	defer rows.Close()
	var out []retention.Candidate
	for rows.Next() {
		var idx int64
		var lb []byte
		var keys pgtype.Text
		var after pgtype.Int8
		if err := rows.Scan(&idx, &lb, &keys, &after); err != nil {
			return nil, fmt.Errorf("pgstore: read records: %w", err)
		}
		c, err := retention.NewCandidate(uint64(idx), lb, keys.String, after.Int64)
		if err != nil {
			return nil, fmt.Errorf("pgstore: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read records: %w", err)
	}
	return out, nil
}

// SubjectRecords implements retention.Store.
func (s *Store) SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]retention.Candidate, error) {
	if err := s.IndexSubjects(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT r.idx, r.leaf, r.keys, r.delete_after_ms
		FROM record_subjects AS x JOIN records AS r ON r.idx = x.idx
		WHERE x.subject = $1 AND x.idx >= $2 AND r.payload IS NOT NULL
		ORDER BY x.idx LIMIT $3`, subject, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: records of a subject: %w", err)
	}
	return scanCandidates(rows)
}

// setDeleteAfter applies retention.SetDeleteAfter inside tx.
func setDeleteAfter(ctx context.Context, tx pgx.Tx, cs []retention.Candidate) error {
	for _, c := range cs {
		var after any
		if c.DeleteAfterMs > 0 {
			after = c.DeleteAfterMs
		}
		if _, err := tx.Exec(ctx, "UPDATE records SET delete_after_ms = $1 WHERE idx = $2 AND payload IS NOT NULL", after, int64(c.Index)); err != nil {
			return err
		}
	}
	return nil
}

// deletePayloads applies retention.DeletePayloads inside tx, which has
// appended the deletion record and so holds the row lock of log_state:
// no record sealed with a key about to be destroyed can commit unindexed
// meanwhile.
func deletePayloads(ctx context.Context, tx pgx.Tx, indices []uint64, destroy []string) error {
	if len(destroy) > 0 {
		// Index what is not yet. (Records purged unindexed need no
		// index: their keys go with their payloads.)
		if _, err := tx.Exec(ctx, "SELECT next FROM log_state WHERE id = 0 FOR UPDATE"); err != nil {
			return err
		}
		if err := indexSubjects(ctx, tx, -1); err != nil {
			return err
		}
	}
	ids := make([]int64, len(indices))
	for i, x := range indices {
		ids[i] = int64(x)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM record_subjects WHERE idx = ANY($1)`, ids); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "UPDATE records SET payload = NULL, nonce = NULL, keys = NULL WHERE idx = ANY($1)", ids); err != nil {
		return err
	}
	for _, subj := range destroy {
		if _, err := tx.Exec(ctx, "DELETE FROM subject_keys WHERE subject = $1", subj); err != nil {
			return fmt.Errorf("destroy a data key (were records added meanwhile? run again): %w", err)
		}
		// The subject's id leaves the state tables too: its consent (no
		// row is the safe default: no opt-in), the subject of its
		// released holds, which keep its pseudonym, and the reasons of
		// holds that name it.
		if user, ok := strings.CutPrefix(subj, "user:"); ok {
			if _, err := tx.Exec(ctx, `DELETE FROM consent WHERE "user" = $1`, user); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE holds SET subject = $1 WHERE subject = $2 AND released_ms != 0", record.Pseudonym(subj), subj); err != nil {
			return err
		}
		// A hold's reason may name the subject ("case for U..."): whole
		// or bare, the id becomes the pseudonym there too.
		_, id, _ := strings.Cut(subj, ":")
		if _, err := tx.Exec(ctx, "UPDATE holds SET reason = replace(replace(reason, $1, $2), $3, $2) WHERE strpos(reason, $3) > 0",
			subj, record.Pseudonym(subj), id); err != nil {
			return err
		}
	}
	return nil
}

// Holds implements retention.Store.
func (s *Store) Holds(ctx context.Context) ([]retention.Hold, error) {
	rows, err := s.pool.Query(ctx, "SELECT id, channel, subject, from_ms, to_ms, reason, created_ms, released_ms FROM holds ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("pgstore: holds: %w", err)
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

// addHold applies retention.AddHold inside tx: the hold's id is the index
// of its record.
func addHold(ctx context.Context, tx pgx.Tx, id uint64, h retention.Hold) error {
	_, err := tx.Exec(ctx, "INSERT INTO holds (id, channel, subject, from_ms, to_ms, reason, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		int64(id), h.Channel, h.Subject, h.FromMs, h.ToMs, h.Reason, h.CreatedMs)
	return err
}

// releaseHold applies retention.ReleaseHold inside tx.
func releaseHold(ctx context.Context, tx pgx.Tx, id int64, at time.Time) error {
	tag, err := tx.Exec(ctx, "UPDATE holds SET released_ms = $1 WHERE id = $2 AND released_ms = 0", at.UnixMilli(), id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("no active hold %d: %w", id, ledger.ErrNotFound)
	}
	return nil
}

// IndexSubjects brings the index of records by subject up to date (see
// the SQLite store: the index is filled behind the appends).
func (s *Store) IndexSubjects(ctx context.Context) error {
	for {
		more, err := s.IndexSubjectsBatch(ctx, 4096)
		if err != nil || !more {
			return err
		}
	}
}

// IndexSubjectsBatch indexes the records that come next, up to limit index
// rows (at least one record), in one transaction, and reports whether more
// wait.
func (s *Store) IndexSubjectsBatch(ctx context.Context, limit int) (bool, error) {
	var more bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One indexer at a time; the others find the work done.
		if _, err := tx.Exec(ctx, "SELECT next FROM subject_index_cursor WHERE id = 0 FOR UPDATE"); err != nil {
			return err
		}
		if err := indexSubjects(ctx, tx, limit); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM records WHERE idx >= (SELECT next FROM subject_index_cursor WHERE id = 0))").Scan(&more)
	})
	if err != nil {
		return false, fmt.Errorf("pgstore: index records by subject: %w", err)
	}
	return more, nil
}

// indexSubjects indexes the records from the cursor, inside tx, up to
// limit index rows (at least one record; all records if limit is
// negative), as the SQLite store does. Appends are ordered by the row
// lock of log_state, so records become visible in index order: a gap is
// not an append in flight but a missing record (damage, which verify
// reports), and the records after it are indexed too, as in the SQLite
// store.
func indexSubjects(ctx context.Context, tx pgx.Tx, limit int) error {
	var next int64
	if err := tx.QueryRow(ctx, "SELECT next FROM subject_index_cursor WHERE id = 0 FOR UPDATE").Scan(&next); err != nil {
		return err
	}
	q := "SELECT idx, keys FROM records WHERE idx >= $1 ORDER BY idx"
	args := []any{next}
	if limit >= 0 {
		q += " LIMIT $2"
		args = append(args, limit)
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	var subj []string
	var idxs []int64
	var ids [][]byte
	end := next
	for rows.Next() {
		var idx int64
		var keys *string
		if err := rows.Scan(&idx, &keys); err != nil {
			rows.Close()
			return err
		}
		if keys == nil {
			end = idx + 1
			continue
		}
		ks, err := ledger.ParseKeys(*keys)
		if err != nil {
			rows.Close()
			return fmt.Errorf("record %d: %w", idx, err)
		}
		n := 0
		for _, k := range ks {
			if k.Subject != ledger.SubjectSystem {
				n++
			}
		}
		if limit >= 0 && n > 0 && len(subj) > 0 && len(subj)+n > limit {
			break // the next batch begins with it
		}
		for _, k := range ks {
			if k.Subject != ledger.SubjectSystem {
				subj, idxs, ids = append(subj, k.Subject), append(idxs, idx), append(ids, k.ID)
			}
		}
		end = idx + 1
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(subj) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO record_subjects (subject, idx, key_id)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]) ON CONFLICT DO NOTHING`, subj, idxs, ids); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, "UPDATE subject_index_cursor SET next = $1 WHERE id = 0", end)
	return err
}

// SubjectKeys implements keys.Store.
func (s *Store) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	return reader{q: s.pool}.SubjectKeys(ctx, subjects)
}

func scanKeys(rows pgx.Rows) ([]keys.Wrapped, error) {
	defer rows.Close()
	var out []keys.Wrapped
	for rows.Next() {
		var w keys.Wrapped
		if err := rows.Scan(&w.Subject, &w.ID, &w.KEK, &w.Key, &w.CreatedMs); err != nil {
			return nil, fmt.Errorf("pgstore: read data keys: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read data keys: %w", err)
	}
	return out, nil
}

// AddSubjectKeys implements keys.Store.
func (s *Store) AddSubjectKeys(ctx context.Context, ws []keys.Wrapped) ([]keys.Wrapped, error) {
	var out []keys.Wrapped
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		subjects := make([]string, len(ws))
		for i, w := range ws {
			if _, err := tx.Exec(ctx, "INSERT INTO subject_keys (subject, id, kek, wrapped, created_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject) DO NOTHING",
				w.Subject, w.ID, w.KEK, w.Key, w.CreatedMs); err != nil {
				return err
			}
			subjects[i] = w.Subject
		}
		rows, err := tx.Query(ctx, "SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject = ANY($1)", subjects)
		if err != nil {
			return err
		}
		out, err = scanKeys(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: store data keys: %w", err)
	}
	return out, nil
}

// ListSubjectKeys implements keys.Store.
func (s *Store) ListSubjectKeys(ctx context.Context, after string, limit int) ([]keys.Wrapped, error) {
	rows, err := s.pool.Query(ctx, `SELECT subject, id, kek, wrapped, created_ms FROM subject_keys WHERE subject > $1 ORDER BY subject LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list data keys: %w", err)
	}
	return scanKeys(rows)
}

// KEKSamples implements keys.Store.
func (s *Store) KEKSamples(ctx context.Context) ([]keys.Wrapped, error) {
	return reader{q: s.pool}.KEKSamples(ctx)
}

// RewrapSubjectKey implements keys.Store.
func (s *Store) RewrapSubjectKey(ctx context.Context, oldKEK string, w keys.Wrapped) (bool, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE subject_keys SET kek = $1, wrapped = $2 WHERE subject = $3 AND id = $4 AND kek = $5",
		w.KEK, w.Key, w.Subject, w.ID, oldKEK)
	if err != nil {
		return false, fmt.Errorf("pgstore: re-wrap data key: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Claim implements pipeline.Claimer. The heads of conversations are locked
// with FOR UPDATE SKIP LOCKED, so that concurrent claimers never take the
// same conversation, and a conversation is claimed whole.
func (s *Store) Claim(ctx context.Context, owner string, limit int, now, until time.Time) ([]*pipeline.Item, error) {
	rows, err := s.pool.Query(ctx, `WITH heads AS (
			SELECT q.conversation FROM queue AS q
			WHERE (q.claimed_ms IS NULL OR q.claimed_ms < $1)
			  AND NOT EXISTS (SELECT 1 FROM queue AS e WHERE e.conversation = q.conversation AND e.seq < q.seq)
			ORDER BY q.seq
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		)
		UPDATE queue SET claimed_by = $3, claimed_ms = $4
		WHERE conversation IN (SELECT conversation FROM heads)
		RETURNING seq, item`, now.UnixMilli(), limit, owner, until.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("pgstore: claim: %w", err)
	}
	out, err := scanItems(rows)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *pipeline.Item) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// Renew implements pipeline.Claimer.
func (s *Store) Renew(ctx context.Context, owner string, until time.Time) error {
	if _, err := s.pool.Exec(ctx, "UPDATE queue SET claimed_ms = $2 WHERE claimed_by = $1", owner, until.UnixMilli()); err != nil {
		return fmt.Errorf("pgstore: renew claims: %w", err)
	}
	return nil
}

// dequeue applies pipeline.Dequeue inside tx. With an owner, every item
// must still be claimed by it, or the append fails with ErrConflict.
func dequeue(ctx context.Context, tx pgx.Tx, d pipeline.Dequeue) error {
	ids := make([]int64, len(d.Seqs))
	for i, q := range d.Seqs {
		ids[i] = int64(q)
	}
	if d.Owner == "" {
		_, err := tx.Exec(ctx, "DELETE FROM queue WHERE seq = ANY($1)", ids)
		return err
	}
	tag, err := tx.Exec(ctx, "DELETE FROM queue WHERE seq = ANY($1) AND claimed_by = $2", ids, d.Owner)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return ledger.ErrConflict
	}
	return nil
}

// Cooldown implements rules.Cooldowns.
func (s *Store) Cooldown(ctx context.Context, key, event string, now, until time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO cooldowns (key, until_ms, event) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms, event = excluded.event
		WHERE cooldowns.until_ms <= $4 OR cooldowns.event = excluded.event`, key, until.UnixMilli(), event, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("pgstore: cooldown: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ForgetCooldowns deletes the cooldowns that ended before t.
func (s *Store) ForgetCooldowns(ctx context.Context, t time.Time) error {
	if _, err := s.pool.Exec(ctx, "DELETE FROM cooldowns WHERE until_ms < $1", t.UnixMilli()); err != nil {
		return fmt.Errorf("pgstore: forget cooldowns: %w", err)
	}
	return nil
}
