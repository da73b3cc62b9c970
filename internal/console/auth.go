package console

import (
	"context"
	"crypto/subtle"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
)

const (
	cookieName      = "linegate_console"
	loginCookieName = "linegate_console_login"
	cookiePath      = "/console/"
	maxFormBytes    = 64 << 10
)

// secure reports whether cookies get the Secure attribute.
func (c *Console) secure(r *http.Request) bool { return c.o.SecureCookie || r.TLS != nil }

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteStrictMode})
}

// current returns the request's session, or nil.
func (c *Console) current(r *http.Request) (*session, string) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil, ""
	}
	return c.sessions.get(ck.Value, c.o.Now()), ck.Value
}

// authed admits requests of a session whose user has one of roles (any
// role when nil). A request without a session is sent to the login page
// (a POST is refused); a user of another role gets 403. A POST must pass
// the CSRF checks.
func (c *Console) authed(roles []Role, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, _ := c.current(r)
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
				return
			}
			c.errorPage(w, r, nil, http.StatusUnauthorized, "Your session has ended: log in again.")
			return
		}
		if roles != nil && !slices.Contains(roles, s.user.Role) {
			c.errorPage(w, r, s, http.StatusForbidden, "Your role may not see this page.")
			return
		}
		if r.Method == http.MethodPost {
			if !c.sameOrigin(r) {
				c.errorPage(w, r, s, http.StatusForbidden, "Refused: the request did not come from this console's pages.")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				c.errorPage(w, r, s, http.StatusBadRequest, "The form could not be read.")
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
				c.errorPage(w, r, s, http.StatusForbidden, "Refused: the form's CSRF token is missing or wrong. Reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// sameOrigin checks the headers browsers set on a request: Sec-Fetch-Site,
// when there, must be same-origin, and Origin, when it names a site, this
// one (or the configured origin). Under Referrer-Policy no-referrer a
// browser sends "Origin: null" with a form, so null says nothing either
// way. A client that sends neither (not a browser) still needs the CSRF
// token, which only the session's pages carry.
func (c *Console) sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	if c.o.Origin != "" {
		return o == c.o.Origin
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && u.Host == r.Host
}

// remoteHost is the request's remote address without its port.
func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// home sends a user to the first page of their role.
func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	s, _ := c.current(r)
	if s == nil {
		http.Redirect(w, r, "/console/login", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, homeOf(s.user.Role), http.StatusSeeOther)
}

func homeOf(role Role) string {
	switch role {
	case RoleAuditor:
		return "/console/audit"
	case RoleOperator:
		return "/console/ops"
	}
	return "/console/inbox"
}

// loginPage shows the login form, with a token that the form must send
// back with the cookie that carries it (login CSRF: no other site can log
// a browser in as someone else).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.renderLogin(w, r, http.StatusOK, "", "")
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, code int, name, msg string) {
	tok := randomToken()
	c.setCookie(w, r, loginCookieName, tok, 600)
	c.render(w, r, code, "login", &page{Title: "Log in", CSRF: tok, Error: msg, Data: map[string]string{"Name": name}})
}

// login checks a name and password. Failures are counted per user name
// and per remote address; past the limit the answer is 429 with
// Retry-After, before any password is checked. Each outcome is counted;
// a success and (within a bound) each failure are recorded in the ledger,
// with the user's name only when it is a user's (a password typed into
// the name field is never recorded).
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, r, http.StatusBadRequest, "", "The form could not be read.")
		return
	}
	ck, err := r.Cookie(loginCookieName)
	if !c.sameOrigin(r) || err != nil || !tokenEqual(ck.Value, r.PostFormValue("csrf")) {
		c.renderLogin(w, r, http.StatusForbidden, "", "Refused: reload the login page and try again.")
		return
	}
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	now := c.o.Now()
	addr, _ := c.clientAddr(r)
	u := c.users[name]
	if len(name) > 64 {
		name = name[:64]
	}
	if wait := max(c.byUser.wait("u:"+name, now), c.byAddr.wait("a:"+addr, now)); wait > 0 {
		c.logins.WithLabelValues("limited").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		c.log.Warn("console login refused: too many failures", "user", knownName(u), "remote", addr)
		c.noteLimited(r, u, now)
		c.renderLogin(w, r, http.StatusTooManyRequests, "", fmt.Sprintf("Too many failed logins: wait %d seconds.", int(math.Ceil(wait.Seconds()))))
		return
	}
	ok := c.checkPassword(r.Context(), u, password)
	if !ok {
		c.byUser.fail("u:"+name, now)
		c.byAddr.fail("a:"+addr, now)
		c.logins.WithLabelValues("failed").Inc()
		c.log.Warn("console login failed", "user", knownName(u), "unknown_user", u == nil, "remote", addr)
		if c.recorded.wait("", now) == 0 {
			c.recorded.fail("", now)
			detail := map[string]any{"user": knownName(u), "unknown_user": u == nil, "via": "console"}
			c.remote(r, detail)
			if _, err := outbound.RecordAdmin(r.Context(), c.o.Ledger, "console_login_failed", detail, nil, now); err != nil {
				c.log.Error("console: a failed login was not recorded", "err", err)
			}
		}
		c.renderLogin(w, r, http.StatusUnauthorized, "", "Wrong name or password.")
		return
	}
	id, s := c.sessions.create(u, now)
	if err := c.record(r.Context(), r, s, "console_login", map[string]any{}); err != nil {
		c.sessions.end(id)
		c.logins.WithLabelValues("error").Inc()
		c.log.Error("console: a login was not recorded: refused", "user", u.Name, "err", err)
		c.renderLogin(w, r, http.StatusServiceUnavailable, "", "The ledger is unavailable: try again in a moment.")
		return
	}
	c.logins.WithLabelValues("ok").Inc()
	c.log.Info("console login", "user", u.Name, "role", u.Role, "remote", addr)
	c.setCookie(w, r, loginCookieName, "", -1)
	c.setCookie(w, r, cookieName, id, int(c.o.MaxAge.Seconds()))
	http.Redirect(w, r, homeOf(u.Role), http.StatusSeeOther)
}

// knownName is a user's name, or "" for no user.
func knownName(u *User) string {
	if u == nil {
		return ""
	}
	return u.Name
}

// checkPassword checks a password against the user's hash, or against a
// dummy hash when there is no such user, a few at a time (each hash costs
// memory).
func (c *Console) checkPassword(ctx context.Context, u *User, password string) bool {
	select {
	case c.hashing <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-c.hashing }()
	if u == nil {
		CheckPassword(dummyHash, password)
		return false
	}
	return CheckPassword(u.Hash, password)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	_, id := c.current(r)
	if err := c.record(r.Context(), r, s, "console_logout", map[string]any{}); err != nil {
		c.log.Error("console: a logout was not recorded", "user", s.user.Name, "err", err)
	}
	c.sessions.end(id)
	c.setCookie(w, r, cookieName, "", -1)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// record records a console action of s's user in the ledger, with the
// effects that make it take effect, in one commit. detail gets who.
func (c *Console) record(ctx context.Context, r *http.Request, s *session, action string, detail map[string]any, effects ...ledger.Effect) error {
	c.who(r, s, detail)
	_, err := outbound.RecordAdmin(ctx, c.o.Ledger, action, detail, nil, c.o.Now(), effects...)
	return err
}

// who adds the acting person to an action's detail.
func (c *Console) who(r *http.Request, s *session, detail map[string]any) map[string]any {
	detail["by"], detail["role"], detail["via"] = s.user.Name, string(s.user.Role), "console"
	c.remote(r, detail)
	return detail
}

// actor is the session's user as the handoff engine names it.
func actor(s *session) Actor { return Actor{Name: s.user.Name, Role: string(s.user.Role)} }
