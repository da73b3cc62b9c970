package console

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// fakeLedger keeps the admin records committed to it.
type fakeLedger struct {
	mu      sync.Mutex
	records []*record.Admin
	fail    bool
}

func (l *fakeLedger) Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return 0, ledger.ErrPushback
	}
	for _, e := range entries {
		_, b, err := record.Decode(record.Kind(e.Kind), e.Payload)
		if err != nil {
			return 0, err
		}
		l.records = append(l.records, b.(*record.Admin))
	}
	return uint64(len(l.records)), nil
}

func (l *fakeLedger) Head() ledger.TreeHead {
	return ledger.TreeHead{Size: 42, Checkpoint: []byte("example.com/linegate/test\n42\nAAAA\n")}
}

// actions returns the records of action.
func (l *fakeLedger) actions(action string) []*record.Admin {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*record.Admin
	for _, r := range l.records {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// fakeSwitches are switches recorded as the sender records them.
type fakeSwitches struct {
	mu   sync.Mutex
	kill bool
	dry  map[string]bool
}

func (s *fakeSwitches) KillSwitch() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.kill }
func (s *fakeSwitches) DryRunStatus() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bool{}
	for k, v := range s.dry {
		m[k] = v
	}
	return m
}
func (s *fakeSwitches) SetKillSwitch(ctx context.Context, c outbound.Committer, on bool, detail map[string]any) error {
	detail["on"] = on
	if _, err := outbound.RecordAdmin(ctx, c, "kill_switch", detail, nil, time.Now()); err != nil {
		return err
	}
	s.mu.Lock()
	s.kill = on
	s.mu.Unlock()
	return nil
}
func (s *fakeSwitches) SetDryRun(ctx context.Context, c outbound.Committer, channel string, on bool, detail map[string]any) error {
	detail["channel"], detail["on"] = channel, on
	if _, err := outbound.RecordAdmin(ctx, c, "dry_run", detail, nil, time.Now()); err != nil {
		return err
	}
	s.mu.Lock()
	if s.dry == nil {
		s.dry = map[string]bool{}
	}
	s.dry[channel] = on
	s.mu.Unlock()
	return nil
}

// fakeConvs is a handoff engine in memory.
type fakeConvs struct {
	mu      sync.Mutex
	convs   map[string]*Conversation
	history map[string][]Message
	reads   []string // "agent channel id"
	replies [][]json.RawMessage
	typing  int
	kill    func() bool
	lineErr error // Reply's error after a recorded failed send
	lastTyp map[string]time.Time
	now     func() time.Time
}

func newFakeConvs() *fakeConvs {
	at := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	f := &fakeConvs{convs: map[string]*Conversation{}, history: map[string][]Message{}}
	add := func(ch, id string, st State, agent, reason string, waiting int, msgs ...Message) {
		f.convs[ch+" "+id] = &Conversation{Channel: ch, ID: id, State: st, Agent: agent, Reason: reason, Since: at, LastEvent: at.Add(time.Minute), Waiting: waiting}
		f.history[ch+" "+id] = msgs
	}
	add("demo", "user:U0123456789abcdef0123456789abcdef", StateHuman, "", "rule agent", 2,
		Message{Record: 10, At: at, From: "user", Type: "text", Text: "Can I talk to a person? 人間"},
		Message{Record: 12, At: at, From: "bot", Type: "text", Text: "A person will answer you shortly.", Outcome: "sent"},
		Message{Record: 14, At: at.Add(time.Minute), From: "user", Type: "text", Text: "It's about my loan contract", Held: true})
	add("demo", "user:U11111111111111111111111111111111", StateBot, "", "", 0,
		Message{Record: 3, At: at, From: "user", Type: "text", Text: "track"})
	add("other", "user:U22222222222222222222222222222222", StateHuman, "", "rule medical", 1,
		Message{Record: 5, At: at, From: "user", Type: "text", Text: "secret of the other channel"})
	return f
}

func (f *fakeConvs) get(ch, id string) (*Conversation, error) {
	c := f.convs[ch+" "+id]
	if c == nil {
		return nil, ErrNotFound
	}
	return c, nil
}

func (f *fakeConvs) List(ctx context.Context, channels []string, states ...State) ([]Conversation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Conversation
	for _, c := range f.convs {
		if slices.Contains(channels, c.Channel) && (len(states) == 0 || slices.Contains(states, c.State)) {
			out = append(out, *c)
		}
	}
	slices.SortFunc(out, func(a, b Conversation) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
func (f *fakeConvs) Get(ctx context.Context, ch, id string) (Conversation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(ch, id)
	if err != nil {
		return Conversation{}, err
	}
	return *c, nil
}
func (f *fakeConvs) History(ctx context.Context, ch, id string, limit int) ([]Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.get(ch, id); err != nil {
		return nil, err
	}
	return slices.Clone(f.history[ch+" "+id]), nil
}
func (f *fakeConvs) set(ch, id string, a Actor, st State, agent string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(ch, id)
	if err != nil {
		return err
	}
	c.State, c.Agent = st, agent
	return nil
}
func (f *fakeConvs) TakeOver(ctx context.Context, a Actor, ch, id, reason string) error {
	return f.set(ch, id, a, StateHuman, a.Name)
}

// release mirrors the engine: another's conversation only for an admin.
func (f *fakeConvs) release(a Actor, ch, id string, to State) error {
	f.mu.Lock()
	c, err := f.get(ch, id)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if c.State != StateHuman {
		return ErrNotHeld
	}
	if c.Agent != "" && c.Agent != a.Name && a.Role != "admin" {
		return ErrNotYours
	}
	return f.set(ch, id, a, to, "")
}
func (f *fakeConvs) HandBack(ctx context.Context, a Actor, ch, id string) error {
	return f.release(a, ch, id, StateBot)
}
func (f *fakeConvs) Resolve(ctx context.Context, a Actor, ch, id string) error {
	return f.release(a, ch, id, StateResolved)
}
func (f *fakeConvs) MarkRead(ctx context.Context, a Actor, ch, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, a.Name+" "+ch+" "+id)
	f.history[ch+" "+id] = append(f.history[ch+" "+id], Message{Record: 15, At: time.Now(), From: "agent:" + a.Name, Type: "markAsRead", Text: "[marked read]", Outcome: "sent"})
	return nil
}
func (f *fakeConvs) Typing(ctx context.Context, a Actor, ch, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(ch, id)
	if err != nil {
		return err
	}
	switch {
	case c.State != StateHuman || c.Agent == "":
		return ErrNotHeld
	case c.Agent != a.Name:
		return ErrNotYours
	}
	if f.lastTyp == nil {
		f.lastTyp = map[string]time.Time{}
	}
	if t, ok := f.lastTyp[ch+" "+id]; ok && f.now().Sub(t) < 20*time.Second {
		return ErrTypingTooSoon
	}
	f.lastTyp[ch+" "+id] = f.now()
	f.typing++
	return nil
}
func (f *fakeConvs) Reply(ctx context.Context, a Actor, ch, id string, msgs []json.RawMessage) (ReplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(ch, id)
	if err != nil {
		return ReplyResult{}, err
	}
	if c.State != StateHuman {
		return ReplyResult{}, ErrNotHeld
	}
	if c.Agent != a.Name {
		if c.Agent != "" {
			return ReplyResult{}, ErrNotYours
		}
		return ReplyResult{}, ErrNotHeld
	}
	if f.lineErr != nil {
		return ReplyResult{Outcome: "failed", Record: 21, Via: "push"}, f.lineErr
	}
	f.replies = append(f.replies, msgs)
	outcome := "sent"
	if f.kill != nil && f.kill() {
		outcome = "held"
	}
	for _, m := range msgs {
		var v struct{ Type, Text string }
		json.Unmarshal(m, &v)
		f.history[ch+" "+id] = append(f.history[ch+" "+id], Message{Record: 20, At: time.Now(), From: "agent:" + a.Name, Type: v.Type, Text: v.Text, JSON: m, Outcome: outcome})
	}
	return ReplyResult{Outcome: outcome, Record: 20, Via: "reply"}, nil
}

// clock is a test's settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{now: time.Now()} }
func (c *clock) set(t time.Time)     { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// hashes are the test users' hashes, made once.
var hashes sync.Map

func userHash(t testing.TB, p string) string {
	if h, ok := hashes.Load(p); ok {
		return h.(string)
	}
	h := mustHash(t, p)
	hashes.Store(p, h)
	return h
}

func mustHash(t testing.TB, p string) string {
	t.Helper()
	h, err := HashPassword(p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// world is a console over fakes, served on a test server.
type world struct {
	c     *Console
	srv   *httptest.Server
	led   *fakeLedger
	sw    *fakeSwitches
	convs *fakeConvs
	clock *clock
}

// passwords of the test users.
var passwords = map[string]string{"alice": "alice-pw-7Qe", "bob": "bob-pw-3Zr", "carol": "carol-pw-9Xk", "dave": "dave-pw-1Mn", "erin": "erin-pw-5Tb"}

func newWorld(t testing.TB, mod func(*Options)) *world {
	w := &world{led: &fakeLedger{}, sw: &fakeSwitches{}, convs: newFakeConvs(), clock: newClock()}
	w.convs.kill = w.sw.KillSwitch
	w.convs.now = w.clock.Now
	o := Options{
		Users: []User{
			{Name: "alice", Role: RoleAgent, Hash: userHash(t, passwords["alice"]), Channels: []string{"demo"}},
			{Name: "bob", Role: RoleAuditor, Hash: userHash(t, passwords["bob"])},
			{Name: "carol", Role: RoleOperator, Hash: userHash(t, passwords["carol"])},
			{Name: "dave", Role: RoleAdmin, Hash: userHash(t, passwords["dave"])},
			{Name: "erin", Role: RoleAgent, Hash: userHash(t, passwords["erin"]), Channels: []string{"other"}},
		},
		Channels: []string{"demo", "other"},
		Ledger:   w.led, Switches: w.sw, Conversations: w.convs,
		RulesHash: func() string { return "abc123" },
		Now:       w.clock.Now,
		TempDir:   t.TempDir(),
	}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	w.c = c
	w.srv = httptest.NewServer(c.Handler())
	t.Cleanup(w.srv.Close)
	return w
}

// client is a browser-like HTTP client: a cookie jar, no redirects
// followed.
type client struct {
	t    testing.TB
	base string
	hc   *http.Client
}

func (w *world) client(t testing.TB) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: w.srv.URL, hc: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) get(path string) (int, string, http.Header) {
	c.t.Helper()
	resp, err := c.hc.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// csrf returns the CSRF token of a page.
func (c *client) csrf(path string) string {
	c.t.Helper()
	_, body, _ := c.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on %s", path)
	}
	return m[1]
}

func (c *client) post(path string, form url.Values, header ...string) (int, string, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// login logs in, and returns the status.
func (c *client) login(name, password string) (int, http.Header) {
	c.t.Helper()
	tok := c.csrf("/console/login")
	code, _, h := c.post("/console/login", url.Values{"csrf": {tok}, "name": {name}, "password": {password}})
	return code, h
}

func (c *client) mustLogin(name string) {
	c.t.Helper()
	if code, _ := c.login(name, passwords[name]); code != http.StatusSeeOther {
		c.t.Fatalf("login %s: %d", name, code)
	}
}
