//go:build !linux

package sqlitestore

import "os"

// BUG: elsewhere than on Linux, flock and fcntl locks may conflict (the
// BSDs), so the database file itself is not locked, only the lock file
// beside it: moving that file lets a second gateway open the database.

const lockDBFile = false

func lockTableHolder(*os.File) int { return 0 }
