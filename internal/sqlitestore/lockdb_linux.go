package sqlitestore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockDBFile: on Linux the lock is taken on the database file itself, as
// flock and SQLite's fcntl locks are independent of each other there.
const lockDBFile = true

// lockTableHolder returns the pid that holds an exclusive flock on f,
// from the kernel's lock table (/proc/locks), or 0.
func lockTableHolder(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	exact := fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
	ino := ":" + strconv.FormatUint(uint64(st.Ino), 10)
	// Lines read "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; the
	// waiters' have "->" after the number. Some file systems (btrfs,
	// overlayfs) report another device than stat does: a single lock on
	// the inode number then names the holder.
	var byIno []int
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid <= 0 {
			continue
		}
		if fields[5] == exact {
			return pid
		}
		if strings.HasSuffix(fields[5], ino) {
			byIno = append(byIno, pid)
		}
	}
	if len(byIno) == 1 {
		return byIno[0]
	}
	return 0
}
