package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
)

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{badRequest("want {}"), 400},
		{fmt.Errorf("%w: line 4", errBadRules), 400},
		{fmt.Errorf("hold: %w", retention.ErrBadHold), 400},
		{fmt.Errorf("%w (user:...)", retention.ErrNotSubject), 400},
		{fmt.Errorf("%w %q", retention.ErrUnknownRequest, "forget"), 400},
		{fmt.Errorf("release hold 7: %w", ledger.ErrNotFound), 404},
		{fmt.Errorf("%w (hold 3)", retention.ErrHeld), 409},
		{tooLarge("over 1 MiB"), 413},
		{ledger.ErrPushback, 503},
		{ledger.ErrClosed, 503},
		{errors.New("sqlitestore: disk I/O error"), 503},
		{fmt.Errorf("commit: %w", context.Canceled), 0},
	}
	for _, tt := range tests {
		if got := statusOf(tt.err); got != tt.want {
			t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// fakeLedger counts commits, or fails them with err.
type fakeLedger struct {
	err     error
	commits int
}

func (l *fakeLedger) Commit(context.Context, []ledger.Entry, ...ledger.Effect) (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	l.commits++
	return uint64(l.commits), nil
}
func (l *fakeLedger) Head() ledger.TreeHead {
	return ledger.TreeHead{Size: 3, Checkpoint: []byte("cp")}
}
func (l *fakeLedger) Sequencing() bool            { return true }
func (l *fakeLedger) Ready(context.Context) error { return l.err }
func (l *fakeLedger) Handler() http.Handler       { return http.NotFoundHandler() }

type fakeKeys struct{ ledger.Sealer }

func (fakeKeys) Reset()                                         {}
func (fakeKeys) Current() string                                { return "kek1" }
func (fakeKeys) Reconfigure(context.Context, keys.Config) error { return nil }

// fakeStore holds one record of user:U1 and the holds.
type fakeStore struct {
	retention.Store // what the calls tested do not read
	err             error
	holds           []retention.Hold
}

func (s *fakeStore) TreeHead(context.Context) (ledger.TreeHead, error) {
	return ledger.TreeHead{}, s.err
}
func (s *fakeStore) Expired(context.Context, time.Time, uint64, int) ([]retention.Candidate, error) {
	return nil, s.err
}
func (s *fakeStore) SubjectRecords(_ context.Context, subject string, from uint64, _ int) ([]retention.Candidate, error) {
	if s.err != nil || from > 0 || subject != "user:U1" {
		return nil, s.err
	}
	return []retention.Candidate{{Index: 0, Channel: "c", TimeMs: 1, Class: "jp-appi", Subjects: []string{"user:U1"}}}, nil
}
func (s *fakeStore) Holds(context.Context) ([]retention.Hold, error) { return s.holds, s.err }
func (s *fakeStore) Count(context.Context) (uint64, error)           { return 5, s.err }
func (s *fakeStore) Setting(context.Context, string) (string, error) { return "", s.err }
func (s *fakeStore) Idle(context.Context) (bool, error)              { return true, s.err }

type fakeSwitches struct{ kill bool }

func (f *fakeSwitches) KillSwitch() bool              { return f.kill }
func (f *fakeSwitches) DryRunStatus() map[string]bool { return map[string]bool{"c": false} }
func (f *fakeSwitches) SetKillSwitch(ctx context.Context, c outbound.Committer, on bool, detail map[string]any) error {
	detail["on"] = on
	if _, err := c.Commit(ctx, nil); err != nil {
		return err
	}
	f.kill = on
	return nil
}
func (f *fakeSwitches) SetDryRun(ctx context.Context, c outbound.Committer, channel string, on bool, detail map[string]any) error {
	_, err := c.Commit(ctx, nil)
	return err
}

type fakeRules struct{ set *rules.Set }

func (f *fakeRules) Rules() *rules.Set              { return f.set }
func (f *fakeRules) Swap(set *rules.Set) *rules.Set { old := f.set; f.set = set; return old }

type fixture struct {
	led   *fakeLedger
	store *fakeStore
	h     http.Handler
	load  func() (*rules.Set, error)
}

func newFixture() *fixture {
	f := &fixture{led: &fakeLedger{}, store: &fakeStore{}}
	f.load = func() (*rules.Set, error) { return &rules.Set{Hash: "new"}, nil }
	f.h = New(Options{Ledger: f.led, Store: f.store, Pipeline: f.store, Switches: &fakeSwitches{},
		Rules: &fakeRules{&rules.Set{Hash: "old"}}, Keys: fakeKeys{},
		LoadRules: func() (*rules.Set, error) { return f.load() },
		Policies:  retention.Presets(), Origin: "example.com/log", Replica: "r1", Token: []byte("t0ken")}).Handler()
	return f
}

func (f *fixture) do(t *testing.T, method, path, body, auth string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	b, err := io.ReadAll(w.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return w.Code, string(b)
}

func TestBearer(t *testing.T) {
	f := newFixture()
	for _, tt := range []struct {
		auth string
		want int
	}{
		{"", 401},
		{"Bearer wrong", 401},
		{"Basic t0ken", 401},
		{"Bearer t0ken", 200},
		{"bEARER t0ken", 200},
	} {
		if code, _ := f.do(t, "GET", "/admin/status", "", tt.auth); code != tt.want {
			t.Errorf("status with %q = %d, want %d", tt.auth, code, tt.want)
		}
	}
	if code, _ := f.do(t, "GET", "/debug/pprof/", "", ""); code != 401 {
		t.Errorf("pprof without the token = %d, want 401", code)
	}
	if code, _ := f.do(t, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("healthz = %d, want 200", code)
	}
	noToken := New(Options{Ledger: f.led, Store: f.store}).Handler()
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/admin/status", nil)
	r.Header.Set("Authorization", "Bearer ")
	noToken.ServeHTTP(w, r)
	if w.Code != 401 {
		t.Errorf("status with no token configured = %d, want 401", w.Code)
	}
}

// TestAnswers checks each kind of failure's status and body, and that a
// failed action commits nothing.
func TestAnswers(t *testing.T) {
	const auth = "Bearer t0ken"
	tests := []struct {
		name       string
		setup      func(*fixture)
		path, body string
		want       int
		wantBody   string
		commits    int
	}{
		{"status", nil, "/admin/status", "", 200, `"sequencer":true`, 0},
		{"status, store down", func(f *fixture) { f.store.err = errors.New("down") }, "/admin/status", "", 503, "store unavailable", 0},
		{"kill switch", nil, "/admin/kill-switch", `{"on":true,"reason":"r"}`, 200, `"on":true`, 1},
		{"kill switch, bad body", nil, "/admin/kill-switch", `{"reason":"r"}`, 400, `want {"on": true|false`, 0},
		{"kill switch, pushback", func(f *fixture) { f.led.err = ledger.ErrPushback }, "/admin/kill-switch", `{"on":true}`, 503, "kill_switch: the ledger is unavailable: neither applied nor recorded", 0},
		{"consent, no user", nil, "/admin/consent", `{"channel":"c","opt_in":true}`, 400, "want {", 0},
		{"rules, bad file", func(f *fixture) { f.load = func() (*rules.Set, error) { return nil, errors.New("line 4: bad") } }, "/admin/rules/reload", "", 400, "line 4", 0},
		{"rules, panic", func(f *fixture) { f.load = func() (*rules.Set, error) { panic("boom") } }, "/admin/rules/reload", "", 400, "boom", 0},
		{"rules", nil, "/admin/rules/reload", "", 200, `"sha256":"new"`, 1},
		{"hold, no reason", nil, "/admin/holds", `{"subject":"user:U1"}`, 400, "a hold needs a reason", 0},
		{"hold", nil, "/admin/holds", `{"subject":"user:U1","reason":"case 1"}`, 200, `"id":1`, 1},
		{"release, bad id", nil, "/admin/holds/x/release", "", 400, "bad id", 0},
		{"release, unknown", func(f *fixture) { f.led.err = fmt.Errorf("release: %w", ledger.ErrNotFound) }, "/admin/holds/9/release", "", 404, "legal_hold_released: not found: neither applied nor recorded", 0},
		{"request, bad kind", nil, "/admin/subjects/user:U1/requests", `{"kind":"forget"}`, 400, "unknown request kind", 0},
		{"request, not a subject", nil, "/admin/subjects/system/requests", `{"kind":"deletion"}`, 400, "not a subject", 0},
		{"request, store down", func(f *fixture) { f.store.err = errors.New("down") }, "/admin/subjects/user:U1/requests", `{"kind":"deletion"}`, 503, "neither applied nor recorded", 0},
		{"request", nil, "/admin/subjects/user:U1/requests", `{"kind":"deletion"}`, 200, `"records":1`, 1},
		{"shred, held", func(f *fixture) { f.store.holds = []retention.Hold{{ID: 3, Subject: "user:U1"}} }, "/admin/subjects/user:U1/shred", "", 409, "hold 3", 0},
		{"shred, not a subject", nil, "/admin/subjects/bogus/shred", "", 400, "not a subject", 0},
		{"shred, pushback", func(f *fixture) { f.led.err = ledger.ErrPushback }, "/admin/subjects/user:U1/shred", "", 503, "shred failed", 0},
		{"purge, store down", func(f *fixture) { f.store.err = errors.New("down") }, "/admin/purge", "", 503, "purge failed", 0},
		{"purge", nil, "/admin/purge", `{"dry_run":true}`, 200, `"dry_run":true`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			if tt.setup != nil {
				tt.setup(f)
			}
			method := "POST"
			if slices.Contains([]string{"/admin/status", "/admin/holds"}, tt.path) && tt.body == "" {
				method = "GET"
			}
			code, body := f.do(t, method, tt.path, tt.body, auth)
			if code != tt.want || !strings.Contains(body, tt.wantBody) {
				t.Errorf("%s %s = %d %q, want %d %q", method, tt.path, code, body, tt.want, tt.wantBody)
			}
			if f.led.commits != tt.commits {
				t.Errorf("%d commits, want %d", f.led.commits, tt.commits)
			}
			if code == 200 && !json.Valid([]byte(body)) {
				t.Errorf("answer is not JSON: %s", body)
			}
		})
	}
}
