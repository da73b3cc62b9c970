// Package sqlitestore is the embedded ledger.Store: one SQLite database
// file (pure Go driver, WAL journal, synchronous commits) in the data
// directory, for a gateway that needs no other service.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/retention"
	_ "modernc.org/sqlite" // the pure Go SQLite driver
)

var _ ledger.Store = (*Store)(nil)

// schemaVersion is the version of the schema this code writes, kept in
// PRAGMA user_version. A database of a newer version is refused.
const schemaVersion = 10

// migrations[i] brings a database from version i to version i+1.
var migrations = []string{
	`CREATE TABLE records (
		idx     INTEGER PRIMARY KEY, -- the leaf index, dense from 0
		leaf    BLOB NOT NULL,       -- ledger.Leaf, the log's entry
		nonce   BLOB,                -- NULL once the payload is deleted
		payload BLOB                 -- NULL once the payload is deleted
	);
	CREATE TABLE tiles (
		level INTEGER NOT NULL,
		idx   INTEGER NOT NULL,
		data  BLOB NOT NULL,         -- 32-byte hashes, partial until 256
		PRIMARY KEY (level, idx)
	) WITHOUT ROWID;
	CREATE TABLE tree_head (
		id         INTEGER PRIMARY KEY CHECK (id = 0),
		size       INTEGER NOT NULL,
		hash       BLOB NOT NULL,
		checkpoint BLOB
	);
	INSERT INTO tree_head (id, size, hash, checkpoint) VALUES (0, 0, zeroblob(32), NULL);
	CREATE TABLE checkpoints (
		seq        INTEGER PRIMARY KEY,
		size       INTEGER NOT NULL,
		checkpoint BLOB NOT NULL
	);
	CREATE TABLE probe (pad BLOB); -- written and emptied by Ping`,

	// Version 2: the pipeline's cursor, dedup memory and queue.
	`CREATE TABLE pipeline_cursor (
		id   INTEGER PRIMARY KEY CHECK (id = 0),
		next INTEGER NOT NULL -- the next ledger record to dispatch
	);
	INSERT INTO pipeline_cursor (id, next) VALUES (0, 0);
	CREATE TABLE dedup (
		key      TEXT PRIMARY KEY, -- "id:<webhookEventId>", "sha256:<hex>", "msg:<channel>:<id>"
		first_ms INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX dedup_first ON dedup (first_ms);
	CREATE TABLE queue (
		seq  INTEGER PRIMARY KEY AUTOINCREMENT,
		item BLOB NOT NULL -- pipeline.Item as JSON
	);`,

	// Version 3: operator switches and consent.
	`CREATE TABLE settings (
		key        TEXT PRIMARY KEY,
		value      TEXT NOT NULL,
		updated_ms INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE consent (
		channel TEXT NOT NULL,
		user    TEXT NOT NULL,
		opt_in  INTEGER NOT NULL,
		at_ms   INTEGER NOT NULL,
		source  TEXT NOT NULL,
		PRIMARY KEY (channel, user)
	) WITHOUT ROWID;`,

	// Version 4: retention (delete-after per record) and legal holds.
	`ALTER TABLE records ADD COLUMN delete_after_ms INTEGER; -- NULL: no automatic deletion
	CREATE INDEX records_delete_after ON records (delete_after_ms) WHERE delete_after_ms IS NOT NULL;
	CREATE TABLE holds (
		id          INTEGER PRIMARY KEY AUTOINCREMENT,
		channel     TEXT NOT NULL,     -- "" for every channel
		from_ms     INTEGER NOT NULL,  -- 0: from the beginning
		to_ms       INTEGER NOT NULL,  -- 0: with no end
		reason      TEXT NOT NULL,
		created_ms  INTEGER NOT NULL,
		released_ms INTEGER NOT NULL DEFAULT 0
	);`,

	// Version 5: encryption at rest with per-subject data keys, and the
	// index of records by subject (for holds, deletion requests and
	// crypto-shredding). The index is filled behind the appends, in
	// batches of its own (IndexSubjectsBatch): keyed by subject, each row
	// lands on its own page, and writing it in every group commit would
	// multiply the pages each acknowledgement waits for. A record_subjects row refers to the
	// data key its record was sealed with, so that a key cannot be
	// destroyed while an indexed record still needs it; records of the
	// system subject are not indexed.
	`ALTER TABLE records ADD COLUMN keys TEXT; -- ledger.FormatKeys; NULL: stored as it is, or deleted
	CREATE TABLE subject_keys (
		subject    TEXT PRIMARY KEY,
		id         BLOB NOT NULL UNIQUE,
		kek        TEXT NOT NULL,
		wrapped    BLOB NOT NULL,
		created_ms INTEGER NOT NULL
	);
	CREATE TABLE record_subjects (
		subject TEXT NOT NULL,
		idx     INTEGER NOT NULL,
		key_id  BLOB NOT NULL REFERENCES subject_keys (id),
		PRIMARY KEY (subject, idx)
	) WITHOUT ROWID;
	CREATE TABLE subject_index_cursor (
		id   INTEGER PRIMARY KEY CHECK (id = 0),
		next INTEGER NOT NULL -- the next record to index
	);
	INSERT INTO subject_index_cursor (id, next) VALUES (0, 0);
	ALTER TABLE holds ADD COLUMN subject TEXT NOT NULL DEFAULT ''; -- "" for every subject`,

	// Version 6: rule cooldowns, kept across restarts.
	`CREATE TABLE cooldowns (
		key      TEXT PRIMARY KEY, -- rules.CooldownKey: a hash, no user id
		until_ms INTEGER NOT NULL,
		event    TEXT NOT NULL     -- the event that fired it (its retry may fire again)
	) WITHOUT ROWID;
	CREATE INDEX cooldowns_until ON cooldowns (until_ms);`,

	// Version 7: conversations handed to people, and the notifications
	// queued for them (internal/handoff).
	`CREATE TABLE conversations (
		channel       TEXT NOT NULL,
		id            TEXT NOT NULL, -- "user:U...", "group:C...", "room:R..."
		state         TEXT NOT NULL, -- bot, human, resolved
		agent         TEXT NOT NULL DEFAULT '',
		reason        TEXT NOT NULL DEFAULT '',
		since_ms      INTEGER NOT NULL,
		last_event_ms INTEGER NOT NULL DEFAULT 0,
		last_agent_ms INTEGER NOT NULL DEFAULT 0,
		waiting       INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (channel, id)
	) WITHOUT ROWID;
	CREATE INDEX conversations_state ON conversations (state);
	CREATE TABLE notifications (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		channel    TEXT NOT NULL,
		target     TEXT NOT NULL,
		body       BLOB NOT NULL,
		attempts   INTEGER NOT NULL,
		next_ms    INTEGER NOT NULL,
		created_ms INTEGER NOT NULL
	);
	CREATE INDEX notifications_next ON notifications (next_ms);`,

	// Version 8: how far the archive has published (object storage,
	// witnesses): a cursor by stream, rebuilt by publishing again if lost.
	`CREATE TABLE publications (
		name       TEXT PRIMARY KEY,
		value      TEXT NOT NULL,
		updated_ms INTEGER NOT NULL
	) WITHOUT ROWID;`,

	// Version 9: the fan-out destinations' queue.
	`CREATE TABLE fanout_queue (
		seq          INTEGER PRIMARY KEY AUTOINCREMENT,
		destination  TEXT NOT NULL,
		conversation TEXT NOT NULL,             -- entries of one conversation are delivered in seq order
		attempts     INTEGER NOT NULL DEFAULT 0,
		next_ms      INTEGER NOT NULL DEFAULT 0, -- not tried before
		entry        BLOB NOT NULL              -- fanout.Entry as JSON
	);
	CREATE INDEX fanout_queue_destination ON fanout_queue (destination, seq);`,

	// Version 10: each conversation's first queued entry for each
	// destination, kept by triggers as the queue changes, so that a round
	// finds the conversations to deliver without reading past the ones
	// with many entries queued or waiting for a retry, in the order they
	// come due (fanout.Store.Heads).
	`CREATE TABLE fanout_heads (
		destination  TEXT NOT NULL,
		conversation TEXT NOT NULL,
		seq          INTEGER NOT NULL, -- the conversation's first entry in fanout_queue
		next_ms      INTEGER NOT NULL, -- and its next try
		PRIMARY KEY (destination, conversation)
	) WITHOUT ROWID;
	CREATE INDEX fanout_heads_order ON fanout_heads (destination, next_ms, seq);
	DROP INDEX fanout_queue_destination;
	CREATE INDEX fanout_queue_conversation ON fanout_queue (destination, conversation, seq);
	-- The first entry's other columns are those of the row MIN chose.
	INSERT INTO fanout_heads (destination, conversation, seq, next_ms)
		SELECT destination, conversation, MIN(seq), next_ms FROM fanout_queue GROUP BY destination, conversation;
	CREATE TRIGGER fanout_heads_enqueue AFTER INSERT ON fanout_queue BEGIN
		INSERT INTO fanout_heads (destination, conversation, seq, next_ms)
			VALUES (NEW.destination, NEW.conversation, NEW.seq, NEW.next_ms)
			ON CONFLICT (destination, conversation) DO UPDATE SET seq = excluded.seq, next_ms = excluded.next_ms
			WHERE excluded.seq < fanout_heads.seq;
	END;
	-- A first entry that leaves makes way for the next one of its
	-- conversation, if any; another leaving changes nothing.
	CREATE TRIGGER fanout_heads_dequeue AFTER DELETE ON fanout_queue BEGIN
		DELETE FROM fanout_heads WHERE destination = OLD.destination AND conversation = OLD.conversation AND seq = OLD.seq;
		INSERT INTO fanout_heads (destination, conversation, seq, next_ms)
			SELECT destination, conversation, seq, next_ms FROM fanout_queue
			WHERE destination = OLD.destination AND conversation = OLD.conversation ORDER BY seq LIMIT 1
			ON CONFLICT (destination, conversation) DO UPDATE SET seq = excluded.seq, next_ms = excluded.next_ms
			WHERE excluded.seq < fanout_heads.seq;
	END;
	CREATE TRIGGER fanout_heads_retry AFTER UPDATE OF next_ms ON fanout_queue BEGIN
		UPDATE fanout_heads SET next_ms = NEW.next_ms
			WHERE destination = NEW.destination AND conversation = NEW.conversation AND seq = NEW.seq;
	END;`,
}

// Options tunes a Store.
type Options struct {
	// MaxPages, if positive, caps the database file at this many pages
	// (4 KiB each): writes beyond it fail as on a full disk.
	MaxPages int64
	// Keep gives, by retention class, how long a record's payload is kept
	// after the record's time; a record is written with that delete-after
	// time. Classes not listed (or 0) are kept until deleted otherwise.
	Keep map[string]time.Duration
	// Shared opens the database without its lock (on the database file
	// itself, and on the file "lock" beside it, which names the holder),
	// beside the process that may hold it, and leaves the modes of
	// existing files alone. Without Shared, Open takes the lock, exclusive
	// and held until Close, and fails with ErrLocked
	// naming the holder: one process has the directory to itself (a
	// gateway, whose sequencer must be alone on the log). Shared is for
	// reading beside a gateway (export) and for the writes that are safe
	// beside one; the caller decides which those are. (OpenReadOnly never
	// takes the lock.)
	Shared bool
}

// Store is a ledger.Store on SQLite.
type Store struct {
	keep map[string]time.Duration
	w    *sql.DB    // the one writer connection: SQLite has a single writer
	r    *sql.DB    // readers, concurrent under WAL
	rq   *readStmts // s.r, with its queries kept prepared
	ckpt *sql.DB    // the WAL checkpointer's connection
	stop context.CancelFunc
	done chan struct{}
	file *dbFile // this process's descriptor of the database file
	lock *dbLock // nil when Shared

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // the writer's statements, prepared once (stmt)
	wanted map[string]bool      // statements to prepare and keep after the commit
}

// exec runs a write statement in tx, with the writer's kept statement of
// q (stmt).
func (s *Store) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryRow is exec for a statement that returns one row.
func (s *Store) queryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Row, error) {
	st, err := s.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(ctx, args...), nil
}

// maxStmts bounds the statements kept.
const maxStmts = 512

// stmt returns q prepared for tx. SQLite parses a statement at every
// prepare, and the driver prepares every statement it is not given
// prepared: under load that was a twentieth of the gateway's CPU. So the
// writer's statements are prepared once on its one connection and kept
// (Tx.StmtContext finds them there). One that is not kept yet is prepared
// in tx for this once, and kept after the commit (keepWanted): preparing
// it on the connection now would wait for tx, which holds it.
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	st := s.stmts[q]
	if st == nil && len(s.stmts)+len(s.wanted) < maxStmts {
		if s.wanted == nil {
			s.wanted = map[string]bool{}
		}
		s.wanted[q] = true
	}
	s.stmtMu.Unlock()
	if st != nil {
		return tx.StmtContext(ctx, st), nil
	}
	st, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: prepare: %w", err)
	}
	return st, nil
}

// keepWanted prepares the statements stmt wanted kept, outside any
// transaction and without holding stmtMu: preparing waits for the
// writer's connection, which another caller's transaction may hold while
// it asks stmt for a statement.
func (s *Store) keepWanted(ctx context.Context) {
	s.stmtMu.Lock()
	var qs []string
	for q := range s.wanted {
		qs = append(qs, q)
	}
	clear(s.wanted)
	s.stmtMu.Unlock()
	for _, q := range qs {
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			continue // prepared in its transaction again next time
		}
		s.stmtMu.Lock()
		if s.stmts == nil {
			s.stmts = map[string]*sql.Stmt{}
		}
		if s.stmts[q] == nil {
			s.stmts[q], st = st, nil
		}
		s.stmtMu.Unlock()
		if st != nil {
			st.Close()
		}
	}
}

// checkpointEvery is how often the WAL is copied back into the database
// file. The writer never does it itself (wal_autocheckpoint is off): a
// checkpoint inside a commit would stall the acknowledgement of every
// webhook in that group.
const checkpointEvery = 250 * time.Millisecond

// Open opens or creates the database at path and applies migrations.
// Unless opts.Shared, it first takes the lock of the database, and makes
// the database and its WAL and shared-memory files readable by their owner
// alone (0600), whatever the umask: they hold the ledger.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	file, err := acquireFile(path)
	if err != nil {
		return nil, err
	}
	if opts.Shared {
		s, err := openDB(ctx, path, opts)
		if err != nil {
			file.release()
			return nil, err
		}
		s.file = file
		return s, nil
	}
	lock, err := lockDB(path, file)
	if err != nil {
		file.release()
		return nil, err
	}
	// An existing database keeps its mode, and SQLite gives a new WAL the
	// database's mode: make them private before the driver opens them.
	if err := makePrivate(path); err != nil {
		lock.release()
		file.release()
		return nil, err
	}
	s, err := openDB(ctx, path, opts)
	if err != nil {
		lock.release()
		file.release()
		return nil, err
	}
	s.file, s.lock = file, lock
	if err := makePrivate(path); err != nil { // the WAL and shm files, now open
		s.Close()
		return nil, err
	}
	return s, nil
}

// openDB opens the connections of the database at path.
func openDB(ctx context.Context, path string, opts Options) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)") // a commit is durable when it returns
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", "secure_delete(ON)") // deleted bytes are overwritten, not left in free pages
	if opts.MaxPages > 0 {
		q.Add("_pragma", fmt.Sprintf("max_page_count(%d)", opts.MaxPages))
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath()
	wq := url.Values{}
	for k, v := range q {
		wq[k] = append([]string(nil), v...)
	}
	wq.Add("_pragma", "wal_autocheckpoint(0)")
	w, err := sql.Open("sqlite", dsn+"?"+wq.Encode()+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	q.Add("_pragma", "query_only(ON)")
	r, err := sql.Open("sqlite", dsn+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	ckpt, err := sql.Open("sqlite", dsn+"?"+q.Encode())
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	ckpt.SetMaxOpenConns(1)
	s := &Store{w: w, r: r, rq: &readStmts{db: r}, ckpt: ckpt, keep: opts.Keep, done: make(chan struct{})}
	if err := s.migrate(ctx); err != nil {
		close(s.done)
		s.closeDBs()
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.checkpointer(bg)
	return s, nil
}

// checkpointer copies committed WAL frames into the database file in the
// background (PASSIVE: it never blocks the writer or readers).
func (s *Store) checkpointer(ctx context.Context) {
	defer close(s.done)
	periodic.Every(ctx, checkpointEvery, func(context.Context) {
		s.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	})
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("sqlitestore: read schema version: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("sqlitestore: database schema version %d is newer than this linegate (%d): upgrade linegate", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("sqlitestore: migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			return fmt.Errorf("sqlitestore: migrate to version %d: %w", v+1, err)
		}
	}
	return tx.Commit()
}

// Close stops the checkpointer, checkpoints the WAL and closes the database.
func (s *Store) Close() error {
	s.stop()
	<-s.done
	_, err := s.ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	err = errors.Join(err, s.closeDBs())
	if s.lock != nil {
		s.lock.release() // after the files are closed
		s.lock = nil
	}
	s.file.release()
	s.file = nil
	return err
}

func (s *Store) closeDBs() error {
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	s.rq.close()
	return errors.Join(s.r.Close(), s.w.Close(), s.ckpt.Close())
}

// Append implements ledger.Store.
func (s *Store) Append(ctx context.Context, recs []ledger.Record, effects ...ledger.Effect) (uint64, error) {
	firsts, errs, err := s.AppendGroups(ctx, []ledger.Group{{Records: recs, Effects: effects}})
	if err != nil {
		return 0, err
	}
	return firsts[0], errs[0]
}

// AppendGroups implements ledger.Store: one transaction (BEGIN IMMEDIATE
// takes the write lock), a savepoint around each group with effects, so
// that a refused effect takes back only its own group. Runs of groups
// without effects, the webhooks of a group commit, are inserted together.
func (s *Store) AppendGroups(ctx context.Context, groups []ledger.Group) ([]uint64, []error, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: begin: %w", err)
	}
	defer tx.Rollback()
	firsts, errs := make([]uint64, len(groups)), make([]error, len(groups))
	// The data keys of the records of groups without effects, checked
	// once before the commit; and those that a group with effects checked
	// itself.
	keyIDs, checked := map[string]bool{}, map[string]bool{}
	purged := false
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
					return nil, nil, err
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
		// The savepoints' statements are kept prepared as the others
		// (stmt): a group with effects is most groups.
		if _, err := s.exec(ctx, tx, "SAVEPOINT grp"); err != nil {
			return nil, nil, fmt.Errorf("sqlitestore: savepoint: %w", err)
		}
		ids := map[string]bool{}
		errs[i] = func() error {
			var first uint64
			if len(g.Records) > 0 {
				var err error
				if first, err = s.appendRecords(ctx, tx, g.Records, ids); err != nil {
					return err
				}
				// Before the effects, as a group appended alone.
				if err := s.checkKeysExist(ctx, tx, ids); err != nil {
					return err
				}
			}
			firsts[i] = first
			for _, e := range g.Effects {
				if err := s.apply(ctx, tx, first, e); err != nil {
					return err
				}
			}
			return nil
		}()
		if errs[i] != nil {
			if _, err := s.exec(ctx, tx, "ROLLBACK TO grp"); err != nil {
				return nil, nil, fmt.Errorf("sqlitestore: rollback to savepoint: %w", err)
			}
		} else {
			for id := range ids {
				checked[id] = true
			}
			for _, e := range g.Effects {
				_, isPurge := e.(retention.DeletePayloads)
				purged = purged || isPurge
			}
		}
		if _, err := s.exec(ctx, tx, "RELEASE grp"); err != nil {
			return nil, nil, fmt.Errorf("sqlitestore: release savepoint: %w", err)
		}
		i++
	}
	// Once for the whole commit, after every group's effects: the keys of
	// the groups without effects. A group with effects checked its own,
	// after its first write: from then to the commit this transaction
	// holds the write lock, so no other process destroys a key, and a
	// shred in a later group indexes the commit's records first and fails
	// on a key one of them refers to. When a group did delete payloads,
	// every key is checked once more all the same.
	if purged {
		for id := range checked {
			keyIDs[id] = true
		}
	}
	if err := s.checkKeysExist(ctx, tx, keyIDs); err != nil {
		return nil, nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: commit: %w", err)
	}
	s.keepWanted(ctx)
	if purged {
		// secure_delete overwrote the freed bytes in the database pages;
		// the WAL still holds earlier images of those pages. Readers may
		// hold old snapshots for a moment: the checkpoint copies what it
		// can and the truncation waits for none of them to be needed.
		// The commit stands whatever the truncation does (the caller must
		// not retry it); a failed one is done by the next purge, and the
		// periodic checkpoints copy the pages meanwhile.
		s.ckpt.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	}
	return firsts, errs, nil
}

// appendRecords inserts records at the next indices, inside tx, which
// holds the write lock, and adds the ids of their data keys to keyIDs, for
// checkKeysExist before the commit.
func (s *Store) appendRecords(ctx context.Context, tx *sql.Tx, recs []ledger.Record, keyIDs map[string]bool) (uint64, error) {
	var first uint64
	row, err := s.queryRow(ctx, tx, "SELECT COALESCE(MAX(idx)+1, 0) FROM records")
	if err != nil {
		return 0, err
	}
	if err := row.Scan(&first); err != nil {
		return 0, fmt.Errorf("sqlitestore: next index: %w", err)
	}
	// Many rows per statement: the per-statement cost of the driver, not
	// the bytes, dominates small records.
	args := make([]any, 0, insertChunk*6)
	for start := 0; start < len(recs); start += insertChunk {
		chunk := recs[start:min(len(recs), start+insertChunk)]
		args = args[:0]
		for i, r := range chunk {
			var keys any
			if len(r.Keys) > 0 {
				keys = ledger.FormatKeys(r.Keys)
				for _, k := range r.Keys {
					keyIDs[string(k.ID)] = true
				}
			}
			args = append(args, first+uint64(start+i), r.Leaf, r.Nonce, r.Payload, s.deleteAfter(r.Leaf), keys)
		}
		if _, err := s.exec(ctx, tx, insertSQL(len(chunk)), args...); err != nil {
			return 0, fmt.Errorf("sqlitestore: insert records: %w", err)
		}
	}
	return first, nil
}

// checkKeysExist fails if a data key that records were sealed with no
// longer exists: another process destroyed it after the sealer cached it,
// and the records would be unreadable. Inside the write transaction, so
// that it is ordered with the destruction.
func (s *Store) checkKeysExist(ctx context.Context, tx *sql.Tx, ids map[string]bool) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids))
	for id := range ids {
		args = append(args, []byte(id))
	}
	for start := 0; start < len(args); start += 500 {
		chunk := args[start:min(len(args), start+500)]
		var n int
		row, err := s.queryRow(ctx, tx, "SELECT COUNT(*) FROM subject_keys WHERE id IN (?"+strings.Repeat(", ?", len(chunk)-1)+")", chunk...)
		if err != nil {
			return err
		}
		if err := row.Scan(&n); err != nil {
			return fmt.Errorf("sqlitestore: check data keys: %w", err)
		}
		if n != len(chunk) {
			return fmt.Errorf("sqlitestore: records sealed with a data key that was destroyed: %w", ledger.ErrKeyDestroyed)
		}
	}
	return nil
}

// deleteAfter returns a record's delete-after time in ms from its leaf's
// time and retention class, or nil to keep it.
func (s *Store) deleteAfter(leaf []byte) any {
	if ms, ok := ledger.DeleteAfter(leaf, s.keep); ok {
		return ms
	}
	return nil
}

// insertChunk is the most rows one INSERT statement carries.
const insertChunk = 64

var insertSQLs [insertChunk + 1]string

// insertSQL returns the INSERT statement for n records.
func insertSQL(n int) string {
	if insertSQLs[n] == "" {
		q := "INSERT INTO records (idx, leaf, nonce, payload, delete_after_ms, keys) VALUES (?, ?, ?, ?, ?, ?)" + strings.Repeat(", (?, ?, ?, ?, ?, ?)", n-1)
		insertSQLs[n] = q // a benign race: every writer stores the same string
	}
	return insertSQLs[n]
}

// Count implements ledger.Store.
func (s *Store) Count(ctx context.Context) (uint64, error) {
	return reader{s.rq}.Count(ctx)
}

// ReadLeaves implements ledger.Store.
func (s *Store) ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error) {
	return reader{s.rq}.ReadLeaves(ctx, start, end)
}

// Records implements ledger.Store.
func (s *Store) Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error] {
	return reader{s.rq}.Records(ctx, start, end)
}

// TreeHead implements ledger.Store.
func (s *Store) TreeHead(ctx context.Context) (ledger.TreeHead, error) {
	return reader{s.rq}.TreeHead(ctx)
}

// ReadTile implements ledger.Store.
func (s *Store) ReadTile(ctx context.Context, level, index uint64) ([]byte, error) {
	return reader{s.rq}.ReadTile(ctx, level, index)
}

// Integrate implements ledger.Store. The compare-and-swap is an UPDATE of
// the tree head conditioned on its size, inside the write transaction.
func (s *Store) Integrate(ctx context.Context, old ledger.TreeHead, head ledger.TreeHead, tiles []ledger.Tile) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: begin: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "UPDATE tree_head SET size = ?, hash = ?, checkpoint = ? WHERE id = 0 AND size = ? AND hash = ?",
		head.Size, head.Hash[:], head.Checkpoint, old.Size, old.Hash[:])
	if err != nil {
		return fmt.Errorf("sqlitestore: update tree head: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlitestore: update tree head: %w", err)
	} else if n != 1 {
		return ledger.ErrConflict
	}
	if len(tiles) > 0 {
		stmt, err := tx.PrepareContext(ctx, "INSERT OR REPLACE INTO tiles (level, idx, data) VALUES (?, ?, ?)")
		if err != nil {
			return fmt.Errorf("sqlitestore: prepare: %w", err)
		}
		defer stmt.Close()
		for _, t := range tiles {
			if _, err := stmt.ExecContext(ctx, t.Level, t.Index, t.Data); err != nil {
				return fmt.Errorf("sqlitestore: write tile: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO checkpoints (size, checkpoint) VALUES (?, ?)", head.Size, head.Checkpoint); err != nil {
		return fmt.Errorf("sqlitestore: write checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: commit: %w", err)
	}
	return nil
}

// Checkpoints implements ledger.Store.
func (s *Store) Checkpoints(ctx context.Context) iter.Seq2[[]byte, error] {
	return reader{s.rq}.Checkpoints(ctx)
}

// Ping implements ledger.Store with a real, synced write that needs new
// pages (two 4 KiB pages written and freed in one transaction): it fails
// while the database is locked by another process, is at its page cap, or
// its disk is full or read-only.
func (s *Store) Ping(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: write probe: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO probe (pad) VALUES (zeroblob(8192))"); err != nil {
		return fmt.Errorf("sqlitestore: write probe: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM probe"); err != nil {
		return fmt.Errorf("sqlitestore: write probe: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: write probe: %w", err)
	}
	return nil
}
