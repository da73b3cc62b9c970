package main

import (
	"strings"
	"testing"
)

// TestHealthCommand: `linegate health` exits 0 against a ready gateway's
// admin listener, 1 when nothing answers, 2 on a bad flag.
func TestHealthCommand(t *testing.T) {
	g := startGateway(t, t.TempDir(), gwConfig{})
	if code, out := runCLI(t, "health", "-url", g.admin+"/readyz"); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("health against a ready gateway: exit %d: %s", code, out)
	}
	if code, out := runCLI(t, "health", "-url", g.webhook+"/healthz"); code != 0 {
		t.Errorf("health against /healthz: exit %d: %s", code, out)
	}
	if code, out := runCLI(t, "health", "-url", "http://"+closedPort(t)+"/readyz"); code != 1 || !strings.Contains(out, "not healthy") {
		t.Errorf("health against a closed port: exit %d: %s", code, out)
	}
	if code, out := runCLI(t, "health", "-url", g.admin+"/nosuch"); code != 1 || !strings.Contains(out, "404") {
		t.Errorf("health against a 404: exit %d: %s", code, out)
	}
	if code, out := runCLI(t, "health", "-url", "ftp://x"); code != 2 {
		t.Errorf("health -url ftp://x: exit %d: %s", code, out)
	}
}
