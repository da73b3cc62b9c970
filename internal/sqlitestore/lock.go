package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrLocked is the error (wrapped) of Open when another process holds the
// lock of the database.
var ErrLocked = errors.New("sqlitestore: data directory in use")

// lockName is the lock file of a data directory.
const lockName = "lock"

// dbLock gives one process a database to itself. It is an exclusive
// advisory lock (flock) on the database file itself, taken through a
// descriptor of its own (on Linux, where flock and SQLite's own fcntl
// locks do not conflict), and one on the file "lock" beside it, which
// names its holder and keeps out gateways of earlier versions, which lock
// only that file. The lock on the database is the one that a rename
// cannot take away: a second process is refused even once the lock file
// is moved or deleted. The kernel releases both when the process ends,
// however it ends, so a crashed gateway leaves no stale lock; the lock
// file stays, and its text is only read while the lock is held.
type dbLock struct {
	db   *dbFile  // nil where the database file itself is not locked
	file *os.File // the lock file
}

// lockDB takes the lock of the database at path, whose descriptor (nil
// where the database file is not locked) is db, or fails with ErrLocked
// and the holder's pid, host and start time.
func lockDB(path string, db *dbFile) (*dbLock, error) {
	lockPath := filepath.Join(filepath.Dir(path), lockName)
	host, _ := os.Hostname()
	me := fmt.Sprintf("linegate pid %d on host %s, started %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if db != nil {
		if err := db.lock(path, lockPath, strings.TrimSpace(me)); err != nil {
			return nil, err
		}
	}
	l := &dbLock{db: db}
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		l.release()
		return nil, fmt.Errorf("sqlitestore: lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		l.release()
		return nil, fmt.Errorf("sqlitestore: lock %s: %w", lockPath, err)
	}
	if held {
		holder := readHolder(f)
		f.Close()
		l.release()
		return nil, locked(lockPath, holder)
	}
	// Written over the old text, then cut to length: a reader never sees
	// an empty file.
	if _, err := f.WriteAt([]byte(me), 0); err == nil {
		err = f.Truncate(int64(len(me)))
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		unlock(f)
		f.Close()
		l.release()
		return nil, fmt.Errorf("sqlitestore: lock %s: %w", lockPath, err)
	}
	l.file = f
	return l, nil
}

func locked(path, holder string) error {
	return fmt.Errorf("%w: %s is held by %s; one process at a time (a gateway, migrate-store) may open an SQLite data directory: stop it first", ErrLocked, path, holder)
}

// readHolder returns the text of a held lock file.
func readHolder(f *os.File) string {
	b := make([]byte, 512)
	n, err := f.ReadAt(b, 0)
	if n == 0 && err != nil && !errors.Is(err, fs.ErrClosed) {
		return "another process"
	}
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		return s
	}
	return "another process"
}

// describeHolder names the process that holds the database locked
// through db: the text of the lock file at lockPath if that file is
// locked too, or else (the lock file was moved or deleted) the pid that
// the kernel's lock table gives.
func describeHolder(lockPath string, db *os.File) string {
	if f, err := os.Open(lockPath); err == nil {
		held, err := tryLock(f)
		if err == nil && held {
			holder := readHolder(f)
			f.Close()
			return holder
		}
		if err == nil {
			unlock(f)
		}
		f.Close()
	}
	if pid := lockTableHolder(db); pid > 0 {
		host, _ := os.Hostname()
		return fmt.Sprintf("pid %d on host %s (from the kernel's lock table: %s does not name it; was it moved?)", pid, host, lockPath)
	}
	return fmt.Sprintf("another process (%s does not name it; was it moved?)", lockPath)
}

// release releases the lock, the lock file emptied first.
func (l *dbLock) release() {
	if l.file != nil {
		l.file.Truncate(0)
		unlock(l.file)
		l.file.Close()
		l.file = nil
	}
	if l.db != nil {
		l.db.unlock()
		l.db = nil
	}
}

// dbFile is this process's descriptor of a database file, which the lock
// is taken on. Closing any descriptor of a file releases every fcntl lock
// the process holds on it, SQLite's included: so the process opens one per
// database file, shares it among the Stores and ReadOnly handles that
// have the database open, and closes it only once the last of them has
// closed its connections.
type dbFile struct {
	f      *os.File
	fi     os.FileInfo
	spare  []*os.File // descriptors opened meanwhile (the path renamed under Open), closed with f
	users  int
	holder string // while this process holds the lock: who it is
}

var dbFiles struct {
	sync.Mutex
	open []*dbFile
}

// acquireFile returns this process's descriptor of the database at path,
// which must exist: the one already open, or a new one. The caller
// releases it once its connections to the database are closed. It
// returns nil where the database file is not locked.
func acquireFile(path string) (*dbFile, error) {
	if !lockDBFile {
		return nil, nil
	}
	dbFiles.Lock()
	defer dbFiles.Unlock()
	if fi, err := os.Stat(path); err == nil {
		if d := findFile(fi); d != nil {
			d.users++
			return d, nil
		}
	}
	// Read-only is enough for flock, and for a reader without the right
	// to write.
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	if d := findFile(fi); d != nil {
		d.spare = append(d.spare, f)
		d.users++
		return d, nil
	}
	d := &dbFile{f: f, fi: fi, users: 1}
	dbFiles.open = append(dbFiles.open, d)
	return d, nil
}

func findFile(fi os.FileInfo) *dbFile {
	for _, d := range dbFiles.open {
		if os.SameFile(d.fi, fi) {
			return d
		}
	}
	return nil
}

// release gives the descriptor back; the last user closes it.
func (d *dbFile) release() {
	if d == nil {
		return
	}
	dbFiles.Lock()
	defer dbFiles.Unlock()
	if d.users--; d.users > 0 {
		return
	}
	dbFiles.open = slices.DeleteFunc(dbFiles.open, func(o *dbFile) bool { return o == d })
	for _, f := range append(d.spare, d.f) {
		f.Close()
	}
}

// lock takes the exclusive flock of the database, as holder, or fails with
// ErrLocked naming the process that has it.
func (d *dbFile) lock(path, lockPath, holder string) error {
	dbFiles.Lock()
	defer dbFiles.Unlock()
	if d.holder != "" {
		return locked(path, d.holder)
	}
	held, err := tryLock(d.f)
	if err != nil {
		return fmt.Errorf("sqlitestore: lock %s: %w", path, err)
	}
	if held {
		return locked(path, describeHolder(lockPath, d.f))
	}
	d.holder = holder
	return nil
}

func (d *dbFile) unlock() {
	dbFiles.Lock()
	defer dbFiles.Unlock()
	d.holder = ""
	unlock(d.f)
}
