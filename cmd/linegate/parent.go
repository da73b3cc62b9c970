package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/linegate/linegate/internal/periodic"
)

// errParentExited ends serve when the process that started it exits.
var errParentExited = errors.New("the parent process exited")

// exitWithParent returns a context that ends, so that serve drains and
// stops, when the process that started serve exits: `go run` killed with
// SIGKILL (or a terminal closed) would otherwise leave the gateway running
// orphaned, holding its ports and its data directory. It polls the parent
// process id once a second (a process orphaned is given another parent);
// the parent-death signal of Linux is not used, since it follows the
// parent's thread, not its process, and a Go parent ends threads.
//
// It watches nothing under nohup (SIGHUP ignored: the caller asked for the
// process to outlive it) or when the parent is init (systemd, a
// container's runtime): those never leave it orphaned.
func exitWithParent(ctx context.Context, log *slog.Logger) (context.Context, func()) {
	ppid := os.Getppid()
	if ppid <= 1 || signal.Ignored(syscall.SIGHUP) {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Every(ctx, time.Second, func(context.Context) {
			if os.Getppid() != ppid {
				log.Warn("the process that started serve exited: shutting down (run serve with -exit-with-parent=false, or under nohup, to keep it running)",
					"parent_pid", ppid)
				cancel(errParentExited) // and Every returns
			}
		})
	}()
	return ctx, func() { cancel(nil); <-done }
}
