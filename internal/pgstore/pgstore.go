// Package pgstore is the ledger's PostgreSQL store (pgx), for several
// gateway replicas that share one database. It keeps the same contract as
// the embedded SQLite store and passes the same conformance suite.
//
// Concurrency: every method is a transaction of its own. Appends take a row
// lock on the log's counter, so that indices are dense and committed records
// always form a prefix, whichever replica appends; the tree head is a
// compare-and-swap; the sequencer lease is a session advisory lock, which
// PostgreSQL releases when the holder's connection ends (a replica killed,
// or cut off).
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/linegate/linegate/internal/ledger"
)

var _ ledger.Store = (*Store)(nil)

// schemaVersion is the version of the schema this code writes. A database
// of a newer version is refused.
const schemaVersion = 6

// migrations[i] brings a database from version i to version i+1.
var migrations = []string{
	`CREATE TABLE records (
		idx             BIGINT PRIMARY KEY, -- the leaf index, dense from 0
		leaf            BYTEA NOT NULL,
		nonce           BYTEA,               -- NULL once the payload is deleted
		payload         BYTEA,               -- NULL once the payload is deleted
		delete_after_ms BIGINT,              -- NULL: no automatic deletion
		keys            TEXT                 -- ledger.FormatKeys; NULL: stored as it is, or deleted
	);
	CREATE INDEX records_delete_after ON records (delete_after_ms) WHERE delete_after_ms IS NOT NULL;
	CREATE TABLE log_state (
		id   INT PRIMARY KEY CHECK (id = 0),
		next BIGINT NOT NULL -- the index the next appended record gets
	);
	INSERT INTO log_state (id, next) VALUES (0, 0);
	CREATE TABLE tiles (
		level BIGINT NOT NULL,
		idx   BIGINT NOT NULL,
		data  BYTEA NOT NULL,
		PRIMARY KEY (level, idx)
	);
	CREATE TABLE tree_head (
		id         INT PRIMARY KEY CHECK (id = 0),
		size       BIGINT NOT NULL,
		hash       BYTEA NOT NULL,
		checkpoint BYTEA
	);
	INSERT INTO tree_head (id, size, hash) VALUES (0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');
	CREATE TABLE checkpoints (
		seq        BIGSERIAL PRIMARY KEY,
		size       BIGINT NOT NULL,
		checkpoint BYTEA NOT NULL
	);
	CREATE TABLE pipeline_cursor (
		id   INT PRIMARY KEY CHECK (id = 0),
		next BIGINT NOT NULL
	);
	INSERT INTO pipeline_cursor (id, next) VALUES (0, 0);
	CREATE TABLE dedup (
		key      TEXT PRIMARY KEY,
		first_ms BIGINT NOT NULL
	);
	CREATE INDEX dedup_first ON dedup (first_ms);
	CREATE TABLE queue (
		seq          BIGSERIAL PRIMARY KEY,
		item         BYTEA NOT NULL,  -- pipeline.Item as JSON
		conversation TEXT NOT NULL,   -- items of one conversation run in seq order
		claimed_by   TEXT,            -- the replica working on it
		claimed_ms   BIGINT           -- until when its claim holds
	);
	CREATE INDEX queue_conversation ON queue (conversation, seq);
	CREATE TABLE settings (
		key        TEXT PRIMARY KEY,
		value      TEXT NOT NULL,
		updated_ms BIGINT NOT NULL
	);
	CREATE TABLE consent (
		channel  TEXT NOT NULL,
		"user"   TEXT NOT NULL,
		opt_in   BOOLEAN NOT NULL,
		at_ms    BIGINT NOT NULL,
		source   TEXT NOT NULL,
		PRIMARY KEY (channel, "user")
	);
	CREATE TABLE holds (
		id          BIGSERIAL PRIMARY KEY,
		channel     TEXT NOT NULL,
		subject     TEXT NOT NULL DEFAULT '',
		from_ms     BIGINT NOT NULL,
		to_ms       BIGINT NOT NULL,
		reason      TEXT NOT NULL,
		created_ms  BIGINT NOT NULL,
		released_ms BIGINT NOT NULL DEFAULT 0
	);
	CREATE TABLE subject_keys (
		subject    TEXT COLLATE "C" PRIMARY KEY,
		id         BYTEA NOT NULL UNIQUE,
		kek        TEXT NOT NULL,
		wrapped    BYTEA NOT NULL,
		created_ms BIGINT NOT NULL
	);
	CREATE TABLE record_subjects (
		subject TEXT COLLATE "C" NOT NULL,
		idx     BIGINT NOT NULL,
		key_id  BYTEA NOT NULL REFERENCES subject_keys (id),
		PRIMARY KEY (subject, idx)
	);
	CREATE INDEX record_subjects_idx ON record_subjects (idx);
	CREATE TABLE subject_index_cursor (
		id   INT PRIMARY KEY CHECK (id = 0),
		next BIGINT NOT NULL
	);
	INSERT INTO subject_index_cursor (id, next) VALUES (0, 0);`,

	// Version 2: rule cooldowns, shared by the replicas.
	`CREATE TABLE cooldowns (
		key      TEXT PRIMARY KEY, -- rules.CooldownKey: a hash, no user id
		until_ms BIGINT NOT NULL,
		event    TEXT NOT NULL     -- the event that fired it (its retry may fire again)
	);
	CREATE INDEX cooldowns_until ON cooldowns (until_ms);`,

	// Version 3: conversations handed to people, and the notifications
	// queued for them (internal/handoff).
	`CREATE TABLE conversations (
		channel       TEXT NOT NULL,
		id            TEXT NOT NULL, -- "user:U...", "group:C...", "room:R..."
		state         TEXT NOT NULL, -- bot, human, resolved
		agent         TEXT NOT NULL DEFAULT '',
		reason        TEXT NOT NULL DEFAULT '',
		since_ms      BIGINT NOT NULL,
		last_event_ms BIGINT NOT NULL DEFAULT 0,
		last_agent_ms BIGINT NOT NULL DEFAULT 0,
		waiting       INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (channel, id)
	);
	CREATE INDEX conversations_state ON conversations (state);
	CREATE TABLE notifications (
		id         BIGSERIAL PRIMARY KEY,
		channel    TEXT NOT NULL,
		target     TEXT NOT NULL,
		body       BYTEA NOT NULL,
		attempts   INTEGER NOT NULL,
		next_ms    BIGINT NOT NULL,
		created_ms BIGINT NOT NULL
	);
	CREATE INDEX notifications_next ON notifications (next_ms);`,

	// Version 4: how far the archive has published (object storage,
	// witnesses): a cursor by stream, rebuilt by publishing again if lost.
	`CREATE TABLE publications (
		name       TEXT PRIMARY KEY,
		value      TEXT NOT NULL,
		updated_ms BIGINT NOT NULL
	);`,

	// Version 5: the fan-out destinations' queue.
	`CREATE TABLE fanout_queue (
		seq          BIGSERIAL PRIMARY KEY,
		destination  TEXT NOT NULL,
		conversation TEXT NOT NULL,            -- entries of one conversation are delivered in seq order
		attempts     INT NOT NULL DEFAULT 0,
		next_ms      BIGINT NOT NULL DEFAULT 0, -- not tried before
		entry        BYTEA NOT NULL            -- fanout.Entry as JSON
	);
	CREATE INDEX fanout_queue_destination ON fanout_queue (destination, seq);`,

	// Version 6: each conversation's first queued entry for each
	// destination, kept by triggers as the queue changes, so that a round
	// finds the conversations to deliver without reading past the ones
	// with many entries queued or waiting for a retry, in the order they
	// come due (fanout.Store.Heads). Replicas queue at once: a head is
	// replaced only by a lower seq, so that the order in which their
	// transactions commit does not matter.
	`CREATE TABLE fanout_heads (
		destination  TEXT NOT NULL,
		conversation TEXT NOT NULL,
		seq          BIGINT NOT NULL, -- the conversation's first entry in fanout_queue
		next_ms      BIGINT NOT NULL, -- and its next try
		PRIMARY KEY (destination, conversation)
	);
	CREATE INDEX fanout_heads_order ON fanout_heads (destination, next_ms, seq);
	DROP INDEX fanout_queue_destination;
	CREATE INDEX fanout_queue_conversation ON fanout_queue (destination, conversation, seq);
	INSERT INTO fanout_heads (destination, conversation, seq, next_ms)
		SELECT DISTINCT ON (destination, conversation) destination, conversation, seq, next_ms
		FROM fanout_queue ORDER BY destination, conversation, seq;
	CREATE FUNCTION fanout_heads_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO fanout_heads AS h (destination, conversation, seq, next_ms)
			VALUES (NEW.destination, NEW.conversation, NEW.seq, NEW.next_ms)
			ON CONFLICT (destination, conversation) DO UPDATE SET seq = excluded.seq, next_ms = excluded.next_ms
			WHERE excluded.seq < h.seq;
		RETURN NULL;
	END $$;
	-- A first entry that leaves makes way for the next one of its
	-- conversation, if any; another leaving changes nothing.
	CREATE FUNCTION fanout_heads_dequeue() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		DELETE FROM fanout_heads WHERE destination = OLD.destination AND conversation = OLD.conversation AND seq = OLD.seq;
		INSERT INTO fanout_heads AS h (destination, conversation, seq, next_ms)
			SELECT destination, conversation, seq, next_ms FROM fanout_queue
			WHERE destination = OLD.destination AND conversation = OLD.conversation ORDER BY seq LIMIT 1
			ON CONFLICT (destination, conversation) DO UPDATE SET seq = excluded.seq, next_ms = excluded.next_ms
			WHERE excluded.seq < h.seq;
		RETURN NULL;
	END $$;
	CREATE FUNCTION fanout_heads_retry() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		UPDATE fanout_heads SET next_ms = NEW.next_ms
			WHERE destination = NEW.destination AND conversation = NEW.conversation AND seq = NEW.seq;
		RETURN NULL;
	END $$;
	CREATE TRIGGER fanout_heads_enqueue AFTER INSERT ON fanout_queue FOR EACH ROW EXECUTE FUNCTION fanout_heads_enqueue();
	CREATE TRIGGER fanout_heads_dequeue AFTER DELETE ON fanout_queue FOR EACH ROW EXECUTE FUNCTION fanout_heads_dequeue();
	CREATE TRIGGER fanout_heads_retry AFTER UPDATE OF next_ms ON fanout_queue FOR EACH ROW EXECUTE FUNCTION fanout_heads_retry();`,
}

// The second keys of the advisory locks, by use (the first is lockID).
const (
	lockMigrate   = 1
	lockSequencer = 2
	lockDispatch  = 3
)

// lockID is the first key of the advisory locks: a hash of the schema
// the store lives in, so that two installations in two schemas of one
// database (or the tests, each in a schema of its own) never share a
// lease. The second key is the use.
const (
	lockID = "hashtext('linegate:' || current_schema())"
)

// Options tunes a Store.
type Options struct {
	// Keep gives, by retention class, how long a record's payload is kept
	// after the record's time (as in the SQLite store).
	Keep map[string]time.Duration
	// MaxConns bounds the connection pool (default 16).
	MaxConns int32
}

// Store is a ledger.Store on PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	keep map[string]time.Duration
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and applies migrations, once, whichever replica comes first.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", redact(err))
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	// A dead database must not hang a webhook past LINE's deadline.
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", redact(err))
	}
	s := &Store{pool: pool, keep: opts.Keep}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// redact keeps a connection error's reason without the DSN (which may
// hold a password).
func redact(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return "malformed database address"
	}
	return err.Error()
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	// Replicas starting at once: the first migrates, the others wait here
	// and then find the schema current.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+lockID+", $1)", int32(lockMigrate)); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (id INT PRIMARY KEY CHECK (id = 0), version INT NOT NULL)"); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	var v int
	err = tx.QueryRow(ctx, "SELECT version FROM schema_version WHERE id = 0").Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = tx.Exec(ctx, "INSERT INTO schema_version (id, version) VALUES (0, 0)")
	}
	if err != nil {
		return fmt.Errorf("pgstore: read schema version: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("pgstore: database schema version %d is newer than this linegate (%d): upgrade linegate", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("pgstore: migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE schema_version SET version = $1 WHERE id = 0", v+1); err != nil {
			return fmt.Errorf("pgstore: migrate to version %d: %w", v+1, err)
		}
	}
	return tx.Commit(ctx)
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Append implements ledger.Store. The UPDATE of log_state takes its row
// lock until commit: appends from every replica are ordered by it, and
// the next one sees this one's records committed.
//
// Effects are applied after the records, in the same transaction.
// PostgreSQL keeps a deleted payload's bytes until VACUUM reuses its
// space; autovacuum does that in time, and an operator who needs it at
// once runs VACUUM on records (the docs say so).
func (s *Store) Append(ctx context.Context, recs []ledger.Record, effects ...ledger.Effect) (uint64, error) {
	firsts, errs, err := s.AppendGroups(ctx, []ledger.Group{{Records: recs, Effects: effects}})
	if err != nil {
		return 0, err
	}
	if errs[0] != nil {
		return 0, fmt.Errorf("pgstore: append: %w", errs[0])
	}
	return firsts[0], nil
}

// AppendGroups implements ledger.Store: one transaction, a savepoint
// around each group with effects (a refused effect takes back only its
// own group), runs of groups without effects inserted together.
func (s *Store) AppendGroups(ctx context.Context, groups []ledger.Group) ([]uint64, []error, error) {
	firsts, errs := make([]uint64, len(groups)), make([]error, len(groups))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		clear(errs)
		keyIDs := map[string]bool{}
		for i := 0; i < len(groups); {
			if len(groups[i].Effects) == 0 {
				j := i
				var recs []ledger.Record
				for ; j < len(groups) && len(groups[j].Effects) == 0; j++ {
					recs = append(recs, groups[j].Records...)
				}
				if len(recs) > 0 {
					first, err := s.appendRecords(ctx, tx, recs, keyIDs)
					if err != nil {
						return err
					}
					for k := i; k < j; k++ {
						firsts[k] = first
						first += uint64(len(groups[k].Records))
					}
				}
				i = j
				continue
			}
			g := groups[i]
			ids := map[string]bool{}
			errs[i] = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { // a savepoint
				var first uint64
				if len(g.Records) > 0 {
					var err error
					if first, err = s.appendRecords(ctx, sp, g.Records, ids); err != nil {
						return err
					}
					if err := checkKeysExist(ctx, sp, ids); err != nil {
						return err
					}
				}
				firsts[i] = first
				for _, e := range g.Effects {
					if err := s.apply(ctx, sp, first, e); err != nil {
						return err
					}
				}
				return nil
			})
			if errs[i] == nil {
				for id := range ids {
					keyIDs[id] = true
				}
			}
			i++
		}
		return checkKeysExist(ctx, tx, keyIDs)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("pgstore: append: %w", err)
	}
	return firsts, errs, nil
}

// appendRecords inserts records at the next indices and adds the ids of
// their data keys to keyIDs, for checkKeysExist before the commit.
func (s *Store) appendRecords(ctx context.Context, tx pgx.Tx, recs []ledger.Record, keyIDs map[string]bool) (uint64, error) {
	var next int64
	if err := tx.QueryRow(ctx, "UPDATE log_state SET next = next + $1 WHERE id = 0 RETURNING next", len(recs)).Scan(&next); err != nil {
		return 0, err
	}
	first := uint64(next) - uint64(len(recs))
	rows := make([][]any, len(recs))
	for i, r := range recs {
		var keys any
		if len(r.Keys) > 0 {
			keys = ledger.FormatKeys(r.Keys)
			for _, k := range r.Keys {
				keyIDs[string(k.ID)] = true
			}
		}
		rows[i] = []any{int64(first) + int64(i), r.Leaf, r.Nonce, r.Payload, s.deleteAfter(r.Leaf), keys}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"records"}, []string{"idx", "leaf", "nonce", "payload", "delete_after_ms", "keys"},
		pgx.CopyFromRows(rows)); err != nil {
		return 0, err
	}
	return first, nil
}

// checkKeysExist fails if a data key that records were sealed with no
// longer exists: another process destroyed it after the sealer cached it.
// Inside the write transaction, so that it is ordered with the
// destruction.
func checkKeysExist(ctx context.Context, tx pgx.Tx, keyIDs map[string]bool) error {
	if len(keyIDs) == 0 {
		return nil
	}
	ids := make([][]byte, 0, len(keyIDs))
	for id := range keyIDs {
		ids = append(ids, []byte(id))
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM subject_keys WHERE id = ANY($1)", ids).Scan(&n); err != nil {
		return err
	}
	if n != len(ids) {
		return fmt.Errorf("records sealed with a data key that was destroyed: %w", ledger.ErrKeyDestroyed)
	}
	return nil
}

func (s *Store) deleteAfter(leaf []byte) any {
	if ms, ok := ledger.DeleteAfter(leaf, s.keep); ok {
		return ms
	}
	return nil
}

// Count implements ledger.Store.
func (s *Store) Count(ctx context.Context) (uint64, error) {
	return reader{q: s.pool}.Count(ctx)
}

// ReadLeaves implements ledger.Store.
func (s *Store) ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error) {
	return reader{q: s.pool}.ReadLeaves(ctx, start, end)
}

// Records implements ledger.Store. It reads in pages, so that no
// transaction stays open for a whole verification.
func (s *Store) Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error] {
	return reader{q: s.pool}.Records(ctx, start, end)
}

// TreeHead implements ledger.Store.
func (s *Store) TreeHead(ctx context.Context) (ledger.TreeHead, error) {
	return reader{q: s.pool}.TreeHead(ctx)
}

// ReadTile implements ledger.Store.
func (s *Store) ReadTile(ctx context.Context, level, index uint64) ([]byte, error) {
	return reader{q: s.pool}.ReadTile(ctx, level, index)
}

// Integrate implements ledger.Store: the compare-and-swap is an UPDATE of
// the tree head conditioned on its size.
func (s *Store) Integrate(ctx context.Context, old ledger.TreeHead, head ledger.TreeHead, tiles []ledger.Tile) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE tree_head SET size = $1, hash = $2, checkpoint = $3 WHERE id = 0 AND size = $4 AND hash = $5",
			int64(head.Size), head.Hash[:], head.Checkpoint, int64(old.Size), old.Hash[:])
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return ledger.ErrConflict
		}
		if len(tiles) > 0 {
			var b pgx.Batch
			for _, t := range tiles {
				b.Queue("INSERT INTO tiles (level, idx, data) VALUES ($1, $2, $3) ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data",
					int64(t.Level), int64(t.Index), t.Data)
			}
			if err := tx.SendBatch(ctx, &b).Close(); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, "INSERT INTO checkpoints (size, checkpoint) VALUES ($1, $2)", int64(head.Size), head.Checkpoint)
		return err
	})
	if errors.Is(err, ledger.ErrConflict) {
		return err
	}
	if err != nil {
		return fmt.Errorf("pgstore: integrate: %w", err)
	}
	return nil
}

// Checkpoints implements ledger.Store.
func (s *Store) Checkpoints(ctx context.Context) iter.Seq2[[]byte, error] {
	return reader{q: s.pool}.Checkpoints(ctx)
}

// Ping implements ledger.Store with a write: a read-only standby or a full
// disk fails it.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "INSERT INTO settings (key, value, updated_ms) VALUES ('ping', '', 0) ON CONFLICT (key) DO UPDATE SET updated_ms = settings.updated_ms"); err != nil {
		return fmt.Errorf("pgstore: write probe: %w", err)
	}
	return nil
}
