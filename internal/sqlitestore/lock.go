package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrLocked is the error (wrapped) of Open when another process holds the
// lock of the database's directory.
var ErrLocked = errors.New("sqlitestore: data directory in use")

// lockName is the lock file of a data directory.
const lockName = "lock"

// dirLock is an exclusive lock on a data directory: an advisory lock
// (flock) on the file "lock" in it, which names its holder. The kernel
// releases it when the process ends, however it ends, so a crashed
// gateway leaves no stale lock; the file stays, and its text is only read
// while the lock is held.
type dirLock struct {
	f *os.File
}

// lockDir takes the lock of dir, or fails with ErrLocked and the holder's
// pid, host and start time.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sqlitestore: lock %s: %w", path, err)
	}
	if held {
		holder := readHolder(f)
		f.Close()
		return nil, fmt.Errorf("%w: %s is held by %s; one process at a time (a gateway, migrate-store) may open an SQLite data directory: stop it first", ErrLocked, path, holder)
	}
	host, _ := os.Hostname()
	me := fmt.Sprintf("linegate pid %d on host %s, started %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
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
		return nil, fmt.Errorf("sqlitestore: lock %s: %w", path, err)
	}
	return &dirLock{f: f}, nil
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

// release empties the lock file and releases the lock.
func (l *dirLock) release() {
	l.f.Truncate(0)
	unlock(l.f)
	l.f.Close()
}
