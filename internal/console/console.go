// Package console is the web console on the admin listener, under
// /console/: server-rendered pages (html/template, embedded in the
// binary, a few lines of plain JavaScript) for the people around the
// gateway.
//
//   - Agents answer the conversations of their channels that were handed
//     to a person: the inbox, each conversation's history, a reply box
//     (text, a sticker, quick replies), take over, hand back, resolve.
//   - Auditors read the proof: the last verify and a button to run it, the
//     current checkpoint and the anchors, legal holds, deletion requests,
//     and an evidence bundle of a user and a period to download.
//   - Operators run the gateway: the kill switch and dry-run per channel
//     with a reason, the rules' hash and a reload, LINE's webhook endpoint
//     state and quota as the monitor last saw them, the pipeline's
//     backlog.
//   - Admins may do all of it, on every channel.
//
// Users, their roles and password hashes (argon2id or bcrypt) come from
// the config. A login starts a server-side session (a random id in an
// HttpOnly, SameSite=Strict cookie, Secure over TLS or when configured,
// with idle and absolute expiry). Every form that changes state carries
// the session's CSRF token, checked in constant time, and the request's
// Origin and Sec-Fetch-Site must be this site. Failed logins are limited
// per user and per remote address. Every action (login, logout, and each
// change) is a ledger record naming the person, committed with the
// change; the handoff engine records the inbox's actions the same way.
// Pages are never cached (Cache-Control: no-store), framed, or given a
// referrer, and run no inline script (Content-Security-Policy).
//
// The package declares what it needs of the gateway (Ledger, Switches,
// Conversations, and the functions of Options); main wires the real ones.
package console

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
	"github.com/prometheus/client_golang/prometheus"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Ledger is where the console records its actions (Commit returns once
// they are durable with their effects, or an error: nothing was applied)
// and whose latest tree head it shows. *ledger.Ledger implements it.
type Ledger interface {
	outbound.Committer
	Head() ledger.TreeHead
}

// Switches are the outbound switches; *outbound.Sender implements them.
// Each Set records its action through c with detail (who, why), in the
// commit that applies it.
type Switches interface {
	KillSwitch() bool
	DryRunStatus() map[string]bool
	SetKillSwitch(ctx context.Context, c outbound.Committer, on bool, detail map[string]any) error
	SetDryRun(ctx context.Context, c outbound.Committer, channel string, on bool, detail map[string]any) error
}

// VerifyResult is the outcome of a verification of the ledger.
type VerifyResult struct {
	OK       bool
	Records  uint64
	TreeSize uint64
	// Summary is verify's report line (OK ...), or its finding (FAIL
	// where: reason); Notes are its other lines.
	Summary string
	Notes   []string
}

// Anchor is a daily anchor as the auditor's page shows it.
type Anchor struct {
	Name string
	Size uint64
}

// Request is a deletion request or a consent withdrawal recorded in the
// ledger.
type Request struct {
	Record  uint64
	At      time.Time
	Subject string
	Kind    string
	Changed int
}

// Options configures the console. Users, Ledger and Switches are
// required; a nil function leaves its part of a page out, saying so.
type Options struct {
	Users []User
	// Channels are the configured channels (an admin's).
	Channels []string
	// SecureCookie sets the cookie's Secure attribute even when the
	// request came over plain HTTP (TLS ends in a proxy in front). A
	// request over TLS gets it anyway.
	SecureCookie bool
	// IdleTimeout and MaxAge end a session (defaults 30m, 12h).
	IdleTimeout, MaxAge time.Duration
	// Origin, if set, is the only Origin a state-changing request may
	// come from (such as https://console.example.com behind a proxy);
	// by default the request's own host.
	Origin string
	// LoginFailures within LoginWindow make a user name or a remote
	// address wait (defaults 5 a minute).
	LoginFailures int
	LoginWindow   time.Duration
	// TrustedProxies are the proxies in front of the console (TLS ends
	// there): a request whose peer is one of them is taken to come from
	// the right-most address of X-Forwarded-For that is not itself
	// trusted, for the login limits and the records' remote. Without
	// them, the header is never read.
	TrustedProxies []netip.Prefix

	Ledger        Ledger
	Switches      Switches
	Conversations Conversations

	// RulesHash is the active rule set's SHA-256; Reload loads the rule
	// files again, recording the reload with trigger (who asked).
	RulesHash func() string
	Reload    func(ctx context.Context, trigger string) (hash string, rules int, err error)
	// Verify verifies the ledger from a read-only snapshot, as linegate
	// verify does. An error is a failure to run, not a finding.
	Verify func(ctx context.Context) (VerifyResult, error)
	// Anchors reads the anchors directory; Holds the legal holds;
	// Requests the deletion requests and withdrawals.
	Anchors  func() ([]Anchor, error)
	Holds    func(ctx context.Context) ([]retention.Hold, error)
	Requests func(ctx context.Context) ([]Request, error)
	// Export writes an evidence bundle of sel into dir (which must not
	// exist), as linegate export does; TempDir is where (private: the
	// bundle holds decrypted payloads, and is removed once sent).
	Export  func(ctx context.Context, sel evidence.Selection, dir string) (*evidence.Manifest, error)
	TempDir string
	// BundleMinFree is the free space (bytes) TempDir's file system must
	// have for a bundle to start (default DefaultBundleMinFree; negative:
	// not checked). One bundle is made at a time.
	BundleMinFree int64
	// Metrics is the gateway's registry, where the operator's page reads
	// what the monitor and the pipeline last saw.
	Metrics prometheus.Gatherer
	// Go runs background work (a verification), which must end when its
	// context does; the gateway's background jobs, stopped before the
	// store closes. Default: a goroutine that nothing stops.
	Go     func(f func(ctx context.Context))
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Console is the web console's handler and state (sessions, login
// limits, the last verify).
type Console struct {
	o        Options
	log      *slog.Logger
	users    map[string]*User
	sessions *sessions
	byUser   *limiter
	byAddr   *limiter
	recorded *limiter // failed logins recorded in the ledger, in all
	limited  limitedLogins
	hashing  chan struct{}
	bundling chan struct{} // one bundle export at a time
	pages    map[string]*template.Template
	static   http.Handler
	logins   *prometheus.CounterVec

	verifyMu   sync.Mutex
	verifying  bool
	lastVerify *verifyRun
}

// verifyRun is a verification run from the console.
type verifyRun struct {
	By       string
	Started  time.Time
	Took     time.Duration
	Result   VerifyResult
	Err      string
	Finished bool
}

// dummyHash is checked against when a login names no user, so that the
// answer takes as long as for a user with a wrong password.
var dummyHash, _ = HashPassword("linegate console: no such user")

// New returns the console. The users must have passed CheckUsers.
func New(o Options) (*Console, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Go == nil {
		o.Go = func(f func(ctx context.Context)) { go f(context.Background()) }
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Minute
	}
	if o.MaxAge == 0 {
		o.MaxAge = 12 * time.Hour
	}
	if o.LoginFailures == 0 {
		o.LoginFailures = 5
	}
	if o.BundleMinFree == 0 {
		o.BundleMinFree = DefaultBundleMinFree
	}
	if o.LoginWindow == 0 {
		o.LoginWindow = time.Minute
	}
	if err := CheckUsers(o.Users, o.Channels); err != nil {
		return nil, err
	}
	c := &Console{
		o: o, log: o.Logger, users: map[string]*User{},
		sessions: newSessions(o.IdleTimeout, o.MaxAge),
		byUser:   newLimiter(o.LoginFailures, o.LoginWindow),
		byAddr:   newLimiter(o.LoginFailures, o.LoginWindow),
		recorded: newLimiter(60, time.Minute),
		hashing:  make(chan struct{}, 2),
		bundling: make(chan struct{}, 1),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linegate_console_logins_total",
			Help: "Console logins by outcome: ok, failed (wrong name or password), limited (refused with 429 before checking), error (the ledger could not record it).",
		}, []string{"outcome"}),
	}
	for _, outcome := range []string{"ok", "failed", "limited", "error"} {
		c.logins.WithLabelValues(outcome)
	}
	for i := range o.Users {
		u := o.Users[i]
		c.users[u.Name] = &u
	}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix("/console/static/", filesOnly(sub))
	return c, nil
}

// Collectors returns the console's metrics.
func (c *Console) Collectors() []prometheus.Collector { return []prometheus.Collector{c.logins} }

// Handler returns the console's handler, for the paths under /console/.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.home)
	mux.Handle("GET /console/static/", c.static)
	mux.HandleFunc("GET /console/login", c.loginPage)
	mux.HandleFunc("POST /console/login", c.login)
	mux.HandleFunc("POST /console/logout", c.authed(nil, c.logout))

	agents := []Role{RoleAgent, RoleAdmin}
	mux.HandleFunc("GET /console/inbox", c.authed(agents, c.inbox))
	mux.HandleFunc("GET /console/inbox/open", c.authed(agents, c.openConversation))
	mux.HandleFunc("GET /console/inbox/{channel}/{id}", c.authed(agents, c.conversation))
	mux.HandleFunc("POST /console/inbox/{channel}/{id}/{action}", c.authed(agents, c.conversationAction))

	auditors := []Role{RoleAuditor, RoleAdmin}
	mux.HandleFunc("GET /console/audit", c.authed(auditors, c.audit))
	mux.HandleFunc("POST /console/audit/verify", c.authed(auditors, c.runVerify))
	mux.HandleFunc("POST /console/audit/bundle", c.authed(auditors, c.bundle))

	operators := []Role{RoleOperator, RoleAdmin}
	mux.HandleFunc("GET /console/ops", c.authed(operators, c.ops))
	mux.HandleFunc("POST /console/ops/kill-switch", c.authed(operators, c.killSwitch))
	mux.HandleFunc("POST /console/ops/dry-run", c.authed(operators, c.dryRun))
	mux.HandleFunc("POST /console/ops/reload", c.authed(operators, c.reload))
	return securityHeaders(mux)
}

// securityHeaders sets the headers of every console answer: no caching
// (pages hold decrypted messages), no framing, no referrer, no inline
// script, no content sniffing.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		next.ServeHTTP(w, r)
	})
}
