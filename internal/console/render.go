package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// page is what every template gets.
type page struct {
	Title string
	User  *User
	CSRF  string
	// Notice is a message of the last action (from a fixed list: nothing
	// of the request is echoed); Error says what went wrong.
	Notice, Error string
	// Refresh, when set, reloads the page after that many seconds (a
	// verification running).
	Refresh int
	Data    any
}

// Nav returns the links of the user's role.
func (p *page) Nav() []struct{ Href, Label string } {
	if p.User == nil {
		return nil
	}
	type link = struct{ Href, Label string }
	var l []link
	switch p.User.Role {
	case RoleAgent:
		l = append(l, link{"/console/inbox", "Inbox"})
	case RoleAuditor:
		l = append(l, link{"/console/audit", "Audit"})
	case RoleOperator:
		l = append(l, link{"/console/ops", "Operations"})
	case RoleAdmin:
		l = append(l, link{"/console/inbox", "Inbox"}, link{"/console/audit", "Audit"}, link{"/console/ops", "Operations"})
	}
	return l
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		d := time.Since(t).Round(time.Second)
		return d.String() + " ago"
	},
	"convURL": func(channel, id string) string {
		return "/console/inbox/" + url.PathEscape(channel) + "/" + url.PathEscape(id)
	},
	"onoff": func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	},
	"ms": func(ms int64) string {
		if ms == 0 {
			return "—"
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"num": func(f float64) string { return fmt.Sprintf("%.0f", f) },
}

// parsePages parses each page with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(n.Name(), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n.Name())
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes a page with status code; a template that fails is a 500
// that says nothing of why (logged).
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name string, p *page) {
	var b bytes.Buffer
	if err := c.pages[name].Execute(&b, p); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// errorPage answers with an error page.
func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, s *session, code int, msg string) {
	p := &page{Title: http.StatusText(code), Error: msg, Data: code}
	if s != nil {
		p.User, p.CSRF = s.user, s.csrf
	}
	c.render(w, r, code, "error", p)
}

// sessionPage is a page of s.
func sessionPage(r *http.Request, s *session, title string, data any) *page {
	return &page{Title: title, User: s.user, CSRF: s.csrf, Notice: notices[r.URL.Query().Get("done")], Data: data}
}

// notices are the messages shown after an action, by the key the action
// redirects with.
var notices = map[string]string{
	"takeover":       "You hold this conversation now.",
	"handback":       "Handed back to the bot.",
	"resolve":        "Resolved.",
	"reply":          "Reply sent.",
	"reply_held":     "Reply recorded but held back (kill switch, dry-run or consent): see its outcome below.",
	"kill_on":        "Kill switch on: nothing is sent.",
	"kill_off":       "Kill switch off.",
	"dryrun":         "Dry-run changed.",
	"reload":         "Rules reloaded.",
	"verify_started": "Verification started.",
}

// redirect sends the browser back to path after an action, with the
// notice key done.
func redirect(w http.ResponseWriter, r *http.Request, path, done string) {
	http.Redirect(w, r, path+"?done="+url.QueryEscape(done), http.StatusSeeOther)
}
