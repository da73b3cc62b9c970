package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kelvinRules is a rule file whose second rule names a day with the
// Kelvin sign (U+212A), which lower-cases to an ASCII "k" of another
// length.
const kelvinRules = "rules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n  - name: office\n    when:\n      hours: {tz: Asia/Tokyo, days: [\"\u212Aon\"], from: \"09:00\", to: \"18:00\"}\n    reply: [{type: text, text: open}]\n"

// TestBadRuleFileNeverCrashes: a rule file with a non-ASCII day name is an
// error naming its file and line, at start (exit 1), on the admin reload
// (400, the connection answered) and on SIGHUP (logged; serve keeps
// running with the rules it had).
func TestBadRuleFileNeverCrashes(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(kelvinRules), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gwConfig{extra: fmt.Sprintf("rules_files: [%q]\n", rulesFile)}
	writeConfig(t, dir, cfg)
	code, out := runCLI(t, "serve", "-config", filepath.Join(dir, "linegate.yaml"))
	if code != 1 || !strings.Contains(out, rulesFile+": line 4: rule \"office\"") || strings.Contains(out, "panic") {
		t.Fatalf("serve with a bad rule file = %d:\n%s", code, out)
	}

	good := strings.Replace(kelvinRules, "\u212Aon", "mon", 1)
	if err := os.WriteFile(rulesFile, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, dir, cfg)
	if err := os.WriteFile(rulesFile, []byte(kelvinRules), 0o600); err != nil {
		t.Fatal(err)
	}
	code, b := adminDo(t, g, "/admin/rules/reload", "")
	if code != http.StatusBadRequest || !strings.Contains(string(b), "line 4") {
		t.Errorf("reload of a bad rule file = %d %s, want 400 naming line 4", code, b)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.Logs(), "rules not reloaded") {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP with a bad rule file logged nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := g.get(t, g.admin+"/healthz"); code != 200 {
		t.Errorf("healthz after SIGHUP = %d", code)
	}
	select {
	case <-g.done:
		t.Fatalf("serve died on SIGHUP:\n%s", g.Logs())
	default:
	}
	g.stop()
}
