package oplog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/oplog"
)

// sink collects JSON log lines; safe for concurrent use.
type sink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *sink) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for l := range strings.Lines(s.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func newSink() (*sink, *slog.Logger) {
	s := &sink{}
	return s, slog.New(slog.NewJSONHandler(s, nil))
}

// TestLimiter: a flood of one class and channel makes one line, then one
// summary line with the count when the interval ends; other classes and
// channels have lines of their own; nothing is lost.
func TestLimiter(t *testing.T) {
	s, log := newSink()
	l := oplog.NewLimiter(log, 200*time.Millisecond)
	for range 1000 {
		l.Log(slog.LevelWarn, oplog.Key{Class: "bad_signature", Channel: "a"}, "webhook rejected", "remote", "192.0.2.1")
	}
	l.Log(slog.LevelWarn, oplog.Key{Class: "bad_signature", Channel: "b"}, "webhook rejected")
	l.Log(slog.LevelError, oplog.Key{Class: "api_unreachable", Channel: "a"}, "send failed")
	if n := len(s.lines(t)); n != 3 {
		t.Fatalf("%d lines at once, want 3", n)
	}
	time.Sleep(400 * time.Millisecond)
	lines := s.lines(t)
	if len(lines) != 4 {
		t.Fatalf("%d lines after the interval, want 4: %v", len(lines), lines)
	}
	sum := lines[3]
	if sum["class"] != "bad_signature" || sum["channel"] != "a" || sum["suppressed"] != float64(999) || sum["summary"] != true ||
		sum["level"] != "WARN" || sum["msg"] != "webhook rejected" {
		t.Errorf("summary line = %v", sum)
	}
	if lines[0]["suppressed"] != float64(0) || lines[0]["remote"] != "192.0.2.1" {
		t.Errorf("first line = %v", lines[0])
	}
	// The next failure after the summary's interval is logged at once.
	time.Sleep(250 * time.Millisecond)
	l.Log(slog.LevelWarn, oplog.Key{Class: "bad_signature", Channel: "a"}, "webhook rejected")
	if lines := s.lines(t); len(lines) != 5 || lines[4]["suppressed"] != float64(0) {
		t.Errorf("lines = %v", lines)
	}
}

// TestLimiterFlush: Flush writes the counts at once (at shutdown), and no
// summary follows.
func TestLimiterFlush(t *testing.T) {
	s, log := newSink()
	l := oplog.NewLimiter(log, time.Hour)
	for range 10 {
		l.Log(slog.LevelWarn, oplog.Key{Class: "too_large", Channel: "a"}, "webhook rejected")
	}
	l.Flush()
	lines := s.lines(t)
	if len(lines) != 2 || lines[1]["suppressed"] != float64(9) {
		t.Fatalf("lines = %v", lines)
	}
	l.Flush()
	if n := len(s.lines(t)); n != 2 {
		t.Errorf("a second flush wrote %d lines", n-2)
	}
}

// TestLimiterKeysBounded: attacker-chosen keys share one key past the
// bound, so the lines stay bounded.
func TestLimiterKeysBounded(t *testing.T) {
	s, log := newSink()
	l := oplog.NewLimiter(log, time.Hour)
	for i := range 5000 {
		l.Log(slog.LevelWarn, oplog.Key{Class: "x", Channel: fmt.Sprint(i)}, "m")
	}
	if n := len(s.lines(t)); n > 1100 {
		t.Errorf("%d lines for 5000 keys", n)
	}
	l.Flush()
}

// TestAdmin: the action, who asked and what changed, without the
// identities of LINE users.
func TestAdmin(t *testing.T) {
	s, log := newSink()
	oplog.Admin(log, "consent", "127.0.0.1:5555", map[string]any{
		"channel": "shop", "user": "U4af4980629", "opt_in": false, "remote": "127.0.0.1:5555",
		"source": strings.Repeat("s", 1000), "records": make([]uint64, 500),
	})
	oplog.AdminFailed(log, "kill_switch", "127.0.0.1:5555", errors.New("database is locked"))
	lines := s.lines(t)
	if len(lines) != 2 {
		t.Fatalf("lines = %v", lines)
	}
	a := lines[0]
	ch, _ := a["changed"].(map[string]any)
	if a["msg"] != "admin action" || a["action"] != "consent" || a["remote"] != "127.0.0.1:5555" ||
		ch["channel"] != "shop" || ch["opt_in"] != false || ch["records"] != "(500 values)" {
		t.Errorf("admin line = %v", a)
	}
	if src, _ := ch["source"].(string); len(src) > 210 {
		t.Errorf("source not cut: %d bytes", len(src))
	}
	if _, ok := ch["remote"]; ok {
		t.Errorf("remote twice: %v", a)
	}
	raw, _ := json.Marshal(lines)
	if bytes.Contains(raw, []byte("U4af4980629")) {
		t.Errorf("a user id reached the log: %s", raw)
	}
	if f := lines[1]; f["level"] != "ERROR" || f["action"] != "kill_switch" || f["err"] != "database is locked" {
		t.Errorf("failure line = %v", f)
	}
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"日本語", 4, "日…"},
	} {
		if got := oplog.Truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
