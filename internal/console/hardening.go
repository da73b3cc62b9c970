package console

import (
	"crypto/subtle"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/outbound"
)

// tokenLen is the length of a token randomToken makes.
var tokenLen = len(randomToken())

// tokenEqual reports whether a form's token is the cookie's: both the
// length of a token this console makes (never empty), compared in
// constant time.
func tokenEqual(cookie, form string) bool {
	if len(cookie) != tokenLen || len(form) != tokenLen {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(cookie), []byte(form)) == 1
}

// filesOnly serves the files of fsys, and 404 for a directory (no
// listing) or anything else.
func filesOnly(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		st, err := fs.Stat(fsys, name)
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// limitedEvery is how often at most the logins refused by the limits
// (429) are recorded: one record per period summarises them.
const limitedEvery = time.Minute

// limitedLogins counts the logins refused with 429 since the last record
// of them.
type limitedLogins struct {
	mu    sync.Mutex
	last  time.Time // the last record
	since time.Time // the first refusal counted
	count int
	users map[string]bool // the known users named, at most a few
	addrs map[string]bool // the remote addresses, at most a few
}

// maxSummaryNames bounds the names and addresses a summary lists.
const maxSummaryNames = 20

// noteLimited counts a login refused by the limits, and records a summary
// of the refusals counted (how many, since when, which known users and
// which addresses, each list bounded) in the ledger when none was
// recorded in the last limitedEvery: the first refusal at once, the
// following ones with the next refusal a period later. A name that is no
// user's is never recorded (it may be a password typed in the wrong
// field).
func (c *Console) noteLimited(r *http.Request, u *User, now time.Time) {
	l := &c.limited
	addr, _ := c.clientAddr(r)
	l.mu.Lock()
	if l.count == 0 {
		l.since, l.users, l.addrs = now, map[string]bool{}, map[string]bool{}
	}
	l.count++
	if u != nil && len(l.users) < maxSummaryNames {
		l.users[u.Name] = true
	}
	if len(l.addrs) < maxSummaryNames {
		l.addrs[addr] = true
	}
	if !l.last.IsZero() && now.Sub(l.last) < limitedEvery {
		l.mu.Unlock()
		return
	}
	detail := map[string]any{"refused": l.count, "since": l.since.UTC().Format(time.RFC3339), "users": keys(l.users),
		"remotes": keys(l.addrs), "via": "console"}
	l.count, l.last = 0, now
	l.mu.Unlock()
	if _, err := outbound.RecordAdmin(r.Context(), c.o.Ledger, "console_login_limited", detail, nil, now); err != nil {
		c.log.Error("console: logins refused by the limits were not recorded", "err", err)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
