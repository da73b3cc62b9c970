//go:build !linux

package console

// freeBytes is unknown off Linux: the margin is not checked.
func freeBytes(dir string) (free uint64, known bool, err error) { return 0, false, nil }
