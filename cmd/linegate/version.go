package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// runVersion prints what this binary is: the module version (a tag when
// installed with go install ...@version, "(devel)" for a local build), the
// VCS commit and its time when the build recorded them, and the Go version.
func runVersion(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	version, settings, goVersion := "unknown", map[string]string{}, runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		if version == "" {
			version = "(devel)"
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	fmt.Fprintf(e.stdout, "linegate %s\n", version)
	if rev := settings["vcs.revision"]; rev != "" {
		line := "commit " + rev
		if settings["vcs.modified"] == "true" {
			line += " (with uncommitted changes)"
		}
		if t, err := time.Parse(time.RFC3339, settings["vcs.time"]); err == nil {
			line += ", of " + bothTimes(t)
		}
		fmt.Fprintln(e.stdout, line)
	} else {
		fmt.Fprintln(e.stdout, "commit unknown (built without version control information)")
	}
	fmt.Fprintf(e.stdout, "%s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
