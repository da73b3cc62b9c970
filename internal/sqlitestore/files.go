package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// createPrivate creates an empty database file at path, readable by its
// owner alone, if there is none: SQLite would create it under the umask
// (0644 as a rule), and an empty file is an empty database to it.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: create %s: %w", path, err)
	}
	return f.Close()
}

// makePrivate gives the database at path, its WAL and its shared memory
// file, those that exist, the mode 0600: each holds ledger data (the WAL
// the latest commits, in full).
func makePrivate(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sqlitestore: %w", err)
		}
		if fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("sqlitestore: make %s private: %w", p, err)
			}
		}
	}
	return nil
}
