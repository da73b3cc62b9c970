package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"

	"github.com/linegate/linegate/internal/ledger"
)

// ErrChanged is the error (wrapped) of a View's Close when the database
// file, read as immutable by a ReadOnly handle, changed while it was read:
// what the view showed may be torn, and must be read again.
var ErrChanged = errors.New("sqlitestore: the database changed while it was read")

// ReadOnly is a database opened to be read and nothing else, by a process
// that may have no right to write it (linegate verify, run by an auditor):
// it never migrates, never writes, takes no lock of the directory, and
// leaves the database file as it found it. Its views are snapshots
// (Snapshot), which also read the data keys.
type ReadOnly struct {
	db        *sql.DB
	path      string
	immutable bool
	opened    fileState // with immutable: the files as they were at Open
	file      *dbFile   // without immutable: this process's descriptor of the database file
}

var _ ledger.Snapshotter = (*ReadOnly)(nil)

// OpenReadOnly opens the database at path to read it. It refuses a
// database of any other schema version than this code's, older or newer,
// naming both: it does not migrate.
//
// How it reads depends on the write-ahead log beside the database:
//
//   - path-wal exists: a gateway may be writing, or stopped before its
//     last checkpoint. The database is opened with mode=ro, and read
//     through the WAL under SQLite's locks, each view a snapshot. SQLite
//     needs the WAL's index, path-shm, to do so, and creates it if it is
//     missing (the directory must then be writable).
//   - no path-wal: no process has the database open (the last connection
//     to a WAL database deletes the WAL as it closes) and everything is in
//     the file. It is opened with immutable=1: no locks, and no -wal or
//     -shm created beside it (mode=ro alone would create both), so that it
//     reads from a read-only directory and leaves no trace. A gateway that
//     starts meanwhile may change the file under the reader: a view's Close
//     then fails with ErrChanged.
func OpenReadOnly(ctx context.Context, path string) (*ReadOnly, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	r := &ReadOnly{path: path}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(ON)")
	if _, err := os.Stat(path + "-wal"); errors.Is(err, fs.ErrNotExist) {
		r.immutable = true
		q.Set("immutable", "1")
		if r.opened, err = stateOf(path); err != nil {
			return nil, err
		}
	}
	if !r.immutable {
		// Under SQLite's locks, which the process's other handles of
		// the database must not drop by closing a descriptor of it.
		var err error
		if r.file, err = acquireFile(path); err != nil {
			return nil, err
		}
	}
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		r.file.release()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	r.db = db
	if err := r.checkVersion(ctx); err != nil {
		db.Close()
		r.file.release()
		return nil, err
	}
	return r, nil
}

// checkVersion refuses a database of another schema than this code's.
func (r *ReadOnly) checkVersion(ctx context.Context) error {
	var v int
	if err := r.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		if !r.immutable {
			return fmt.Errorf("sqlitestore: read %s: %w (reading a database that has a write-ahead log needs its -shm file: give write access to the directory, or read a copy of it)", r.path, err)
		}
		return fmt.Errorf("sqlitestore: read %s: %w", r.path, err)
	}
	switch {
	case v == schemaVersion:
		return nil
	case v == 0:
		return fmt.Errorf("sqlitestore: %s is not a linegate ledger (schema version 0)", r.path)
	case v > schemaVersion:
		return fmt.Errorf("sqlitestore: %s: database schema version %d is newer than this linegate's (%d): read it with a linegate as new as the one that wrote it", r.path, v, schemaVersion)
	default:
		return fmt.Errorf("sqlitestore: %s: database schema version %d is older than this linegate's (%d), and a read-only open does not migrate: read it with the linegate that wrote it", r.path, v, schemaVersion)
	}
}

// Snapshot returns a view of the database as it is now; it is a *View.
func (r *ReadOnly) Snapshot(ctx context.Context) (ledger.ReadView, error) {
	var done func() error
	if r.immutable {
		done = r.unchanged
	}
	return snapshot(ctx, r.db, done)
}

// Close closes the database.
func (r *ReadOnly) Close() error {
	err := r.db.Close()
	r.file.release()
	r.file = nil
	return err
}

// fileState is what shows that a database file was written: its size and
// modification time, and whether a WAL appeared beside it.
type fileState struct {
	size, mtime int64
	wal         bool
}

func stateOf(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, fmt.Errorf("sqlitestore: %w", err)
	}
	_, err = os.Stat(path + "-wal")
	return fileState{size: fi.Size(), mtime: fi.ModTime().UnixNano(), wal: err == nil}, nil
}

// unchanged fails with ErrChanged if the database was written since Open.
func (r *ReadOnly) unchanged() error {
	st, err := stateOf(r.path)
	if err != nil {
		return err
	}
	if st != r.opened {
		return fmt.Errorf("%w: %s was opened by another process (a gateway started?) while it was read as immutable: read it again", ErrChanged, r.path)
	}
	return nil
}
