//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sqlitestore

import "os"

// BUG: on systems without flock (Windows among them) the data directory's
// lock is not taken: nothing stops a second gateway on one directory.

func tryLock(*os.File) (bool, error) { return false, nil }

func unlock(*os.File) {}
