package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/linegate/linegate/internal/sqlitestore"
)

// TestDataDirLock: one Open at a time per directory, unless Shared; Close
// releases the lock; the files are the owner's alone under any umask.
func TestDataDirLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	old := syscall.Umask(0o022)
	s, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm", "lock"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v", f, err, fi.Mode().Perm())
		}
	}
	_, err = sqlitestore.Open(ctx, path, sqlitestore.Options{})
	if !errors.Is(err, sqlitestore.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second open = %v, want ErrLocked naming this process", err)
	}
	shared, err := sqlitestore.Open(ctx, path, sqlitestore.Options{Shared: true})
	if err != nil {
		t.Fatalf("shared open beside the holder: %v", err)
	}
	if _, err := shared.Count(ctx); err != nil {
		t.Error(err)
	}
	shared.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlitestore.Open(ctx, path, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s.Close()
}
