package sqlitestore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestLockOnDatabaseFile: the lock is held on the database file itself.
// Renaming (or deleting) the lock file does not let a second Open in, in
// this process or another, and the refusal still names the holder; the
// opens that take no lock (Shared, OpenReadOnly) keep working beside it.
func TestLockOnDatabaseFile(t *testing.T) {
	ctx := context.Background()
	t.Run("this process", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ledger.db")
		s, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "lock"), filepath.Join(dir, "lock.moved")); err != nil {
			t.Fatal(err)
		}
		if s2, err := sqlitestore.Open(ctx, path, sqlitestore.Options{}); !errors.Is(err, sqlitestore.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
			if err == nil {
				s2.Close()
			}
			t.Fatalf("open after the lock file was renamed = %v, want ErrLocked naming this process", err)
		}
		shared, err := sqlitestore.Open(ctx, path, sqlitestore.Options{Shared: true})
		if err != nil {
			t.Fatalf("shared open beside the holder: %v", err)
		}
		if _, err := shared.Count(ctx); err != nil {
			t.Error(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// The holder's Close leaves the shared store working.
		if _, err := shared.Count(ctx); err != nil {
			t.Error(err)
		}
		shared.Close()
		s, err = sqlitestore.Open(ctx, path, sqlitestore.Options{})
		if err != nil {
			t.Fatalf("open after close: %v", err)
		}
		s.Close()
	})
	t.Run("another process", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "ledger.db")
		s, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderProcess$")
		cmd.Env = append(os.Environ(), "LINEGATE_TEST_HOLD_DB="+path)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer stdin.Close()
		ready := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "holding") || strings.HasPrefix(sc.Text(), "error") {
					ready <- sc.Text()
					break
				}
			}
			io.Copy(io.Discard, stdout)
			close(ready)
		}()
		select {
		case line := <-ready:
			if line != "holding" {
				t.Fatalf("holder process: %q", line)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("the holder process did not open the database")
		}
		holder := fmt.Sprintf("pid %d", cmd.Process.Pid)
		if _, err := sqlitestore.Open(ctx, path, sqlitestore.Options{}); !errors.Is(err, sqlitestore.ErrLocked) || !strings.Contains(err.Error(), holder) {
			t.Fatalf("open beside another process = %v, want ErrLocked naming %s", err, holder)
		}
		if err := os.Rename(filepath.Join(dir, "lock"), filepath.Join(dir, "lock.moved")); err != nil {
			t.Fatal(err)
		}
		s2, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
		if err == nil {
			s2.Close()
		}
		if !errors.Is(err, sqlitestore.ErrLocked) || !strings.Contains(err.Error(), holder) {
			t.Fatalf("open after the lock file was renamed = %v, want ErrLocked naming %s", err, holder)
		}
		t.Logf("refused: %v", err)
		// The opens without the lock work beside the holder.
		shared, err := sqlitestore.Open(ctx, path, sqlitestore.Options{Shared: true})
		if err != nil {
			t.Fatalf("shared open beside the holder: %v", err)
		}
		if _, err := shared.Count(ctx); err != nil {
			t.Error(err)
		}
		shared.Close()
		ro, err := sqlitestore.OpenReadOnly(ctx, path)
		if err != nil {
			t.Fatalf("read-only open beside the holder: %v", err)
		}
		ro.Close()
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("holder process: %v", err)
		}
		s, err = sqlitestore.Open(ctx, path, sqlitestore.Options{})
		if err != nil {
			t.Fatalf("open after the holder ended: %v", err)
		}
		s.Close()
	})
}

// TestLockHolderProcess is the process of TestLockOnDatabaseFile that
// holds the database, until its standard input closes.
func TestLockHolderProcess(t *testing.T) {
	path := os.Getenv("LINEGATE_TEST_HOLD_DB")
	if path == "" {
		t.Skip("the holder process of TestLockOnDatabaseFile")
	}
	s, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
