package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"text/template/parse"
	"time"
)

// The fences of outbound calls. A lookup calls only a host and port of
// lookup_hosts, a forward only the host and port of its URL; neither
// follows a redirect, and the address each dials is checked again when
// it is dialled (after any DNS lookup), so that nothing but the URL that
// passed the check is ever reached. Values put into a lookup URL are
// escaped for the part of the URL they land in.

// errOutsideFence is the error of a dial to an address that is not the
// request's.
var errOutsideFence = errors.New("outside the fence")

// hostEntry is an allow-list entry: a host and a port, "" meaning the
// scheme's default port (443 for https, 80 for http).
type hostEntry struct{ host, port string }

// parseHostEntry reads "host", "host:port", "[v6]", "[v6]:port" or a bare
// IPv6 address.
func parseHostEntry(s string) (hostEntry, error) {
	bad := func(why string) (hostEntry, error) {
		return hostEntry{}, fmt.Errorf("lookup_hosts entry %q: %s: want host or host:port", s, why)
	}
	if s == "" || strings.ContainsAny(s, "/@?# \t") {
		return bad("not a host")
	}
	var e hostEntry
	switch {
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		e.host = s[1 : len(s)-1]
	case strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1:
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return bad("not host:port")
		}
		e.host, e.port = h, p
	case strings.Count(s, ":") > 1:
		e.host = s
	default:
		e.host = s
	}
	if e.port != "" {
		if n, err := strconv.Atoi(e.port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != e.port {
			return bad("the port is not a number from 1 to 65535")
		}
	}
	if e.host == "" {
		return bad("no host")
	}
	if strings.Contains(e.host, ":") {
		if _, err := netip.ParseAddr(e.host); err != nil {
			return bad("not an IPv6 address")
		}
	}
	e.host = canonHost(e.host)
	return e, nil
}

// CheckLookupHosts reports the first lookup_hosts entry that is not a host
// or host:port.
func CheckLookupHosts(hosts []string) error {
	for _, h := range hosts {
		if _, err := parseHostEntry(h); err != nil {
			return err
		}
	}
	return nil
}

// canonHost is how hosts are compared: IP addresses in their canonical
// form, names in lower case without a trailing dot.
func canonHost(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String()
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// defaultPort is the port of a URL that names none.
func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// effectiveAddr is the host and the port a URL is dialled at.
func effectiveAddr(u *url.URL) (host, port string) {
	port = u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	return canonHost(u.Hostname()), port
}

// allowedHost reports whether the allow-list has the URL's host and
// effective port: an entry without a port allows the scheme's default
// port only.
func allowedHost(list []hostEntry, u *url.URL) bool {
	host, port := effectiveAddr(u)
	for _, e := range list {
		p := e.port
		if p == "" {
			p = defaultPort(u.Scheme)
		}
		if e.host == host && p == port {
			return true
		}
	}
	return false
}

// fence is the one address a request may dial.
type fence struct {
	host, port string
	loopback   bool // the resolved address must be a loopback address too
}

type fenceKey struct{}

// withFence returns ctx carrying the fence of a request to u.
func withFence(ctx context.Context, u *url.URL, loopback bool) context.Context {
	host, port := effectiveAddr(u)
	return context.WithValue(ctx, fenceKey{}, &fence{host: host, port: port, loopback: loopback})
}

// checkDial is checked before a dial: addr is the host:port the transport
// dials (the URL's, with its default port).
func (f *fence) checkDial(addr string) error {
	h, p, err := net.SplitHostPort(addr)
	if err != nil || canonHost(h) != f.host || p != f.port {
		return fmt.Errorf("%w: dial %s", errOutsideFence, addr)
	}
	return nil
}

// checkResolved is checked as the socket connects, with the address DNS
// resolved to: the port is the fence's; an IP literal in the URL is the
// address itself; a name (other than localhost) never resolves to a
// loopback, link-local (cloud metadata), multicast or unspecified
// address, so that a rebinding DNS answer cannot reach the gateway's own
// listeners or the metadata service; a loopback fence stays on loopback.
// Other addresses a name resolves to are trusted: list IP addresses where
// DNS is not.
func (f *fence) checkResolved(address string) error {
	h, p, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: connect %s", errOutsideFence, address)
	}
	ip, err := netip.ParseAddr(h)
	if err != nil || p != f.port {
		return fmt.Errorf("%w: connect %s", errOutsideFence, address)
	}
	ip = ip.Unmap()
	if want, err := netip.ParseAddr(f.host); err == nil {
		if want.Unmap() != ip {
			return fmt.Errorf("%w: connect %s", errOutsideFence, address)
		}
	} else if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
		ip.IsLoopback() && f.host != "localhost" {
		return fmt.Errorf("%w: %s resolved to %s", errOutsideFence, f.host, ip)
	}
	if f.loopback && !ip.IsLoopback() {
		return fmt.Errorf("%w: connect %s: not a loopback address", errOutsideFence, address)
	}
	return nil
}

// fencedClient returns an HTTP client that dials only the address in its
// request's fence (withFence), through no proxy, and follows no
// redirect: a 3xx is the answer.
func fencedClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a proxy would be dialled instead of the fenced host
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		f, _ := ctx.Value(fenceKey{}).(*fence)
		if f == nil {
			return nil, fmt.Errorf("%w: dial %s: no fence", errOutsideFence, addr)
		}
		if err := f.checkDial(addr); err != nil {
			return nil, err
		}
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
			Control: func(_, address string, _ syscall.RawConn) error { return f.checkResolved(address) }}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// URL templates. Each value an action prints is escaped for the part of
// the URL where the template's own text puts it: path segment escaping in
// the path, query escaping in the query. `raw` as the last command of an
// action prints its value as it is.

// urlPart is where in a URL the template's text has got to.
type urlPart int

const (
	inScheme urlPart = iota
	inSchemeColon
	inSchemeSlash
	inAuthority
	inPath
	inQuery
	inFragment
)

func (p urlPart) String() string {
	switch p {
	case inPath:
		return "path"
	case inQuery:
		return "query"
	case inFragment:
		return "fragment"
	}
	return "scheme and host"
}

// advance returns where text leaves a URL that was at p.
func (p urlPart) advance(text string) urlPart {
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch p {
		case inScheme:
			if c == ':' {
				p = inSchemeColon
			}
		case inSchemeColon:
			p = inScheme
			if c == '/' {
				p = inSchemeSlash
			}
		case inSchemeSlash:
			p = inScheme
			if c == '/' {
				p = inAuthority
			}
		case inAuthority:
			switch c {
			case '/':
				p = inPath
			case '?':
				p = inQuery
			case '#':
				p = inFragment
			}
		case inPath:
			switch c {
			case '?':
				p = inQuery
			case '#':
				p = inFragment
			}
		case inQuery:
			if c == '#' {
				p = inFragment
			}
		}
	}
	return p
}

var escapers = map[urlPart]string{inPath: "_lg_pathescape", inQuery: "_lg_queryescape", inFragment: "_lg_pathescape"}

var urlFuncs = template.FuncMap{
	"raw":             func(v any) any { return v },
	"_lg_pathescape":  func(v any) string { return escapePathValue(printed(v)) },
	"_lg_queryescape": func(v any) string { return url.QueryEscape(printed(v)) },
}

func init() {
	for k, v := range funcs {
		urlFuncs[k] = v
	}
}

// printed is a value as a template would print it.
func printed(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// escapePathValue escapes a value for a path segment; a value of dots
// alone is escaped too, so that it cannot be a dot segment.
func escapePathValue(s string) string {
	if s != "" && strings.Trim(s, ".") == "" {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

var urlCache sync.Map // template text -> *template.Template

// parseURLTemplate parses a lookup URL template and makes each of its
// actions escape what it prints.
func parseURLTemplate(s string) (*template.Template, error) {
	if v, ok := urlCache.Load(s); ok {
		return v.(*template.Template), nil
	}
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
		return nil, fmt.Errorf("url %q: want http:// or https://", s)
	}
	t, err := template.New("url").Funcs(urlFuncs).Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, fmt.Errorf("url template %q: %w", s, err)
	}
	if len(t.Templates()) > 1 {
		return nil, fmt.Errorf("url template %q: defines templates", s)
	}
	if t.Tree != nil {
		if _, err := escapeList(t.Tree.Root, inScheme); err != nil {
			return nil, fmt.Errorf("url template %q: %w", s, err)
		}
	}
	urlCache.Store(s, t)
	return t, nil
}

// renderURL executes a lookup URL template.
func renderURL(s string, d *Data) (string, error) {
	t, err := parseURLTemplate(s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("url template: %w", err)
	}
	return b.String(), nil
}

// escapeList adds the escapers to the actions of a list that starts at p,
// and returns where the list leaves the URL.
func escapeList(l *parse.ListNode, p urlPart) (urlPart, error) {
	if l == nil {
		return p, nil
	}
	for _, n := range l.Nodes {
		var err error
		if p, err = escapeNode(n, p); err != nil {
			return p, err
		}
	}
	return p, nil
}

func escapeNode(n parse.Node, p urlPart) (urlPart, error) {
	switch n := n.(type) {
	case *parse.TextNode:
		return p.advance(string(n.Text)), nil
	case *parse.CommentNode, *parse.BreakNode, *parse.ContinueNode:
		return p, nil
	case *parse.ActionNode:
		if len(n.Pipe.Decl) > 0 { // an assignment prints nothing
			return p, checkNoRaw(n.Pipe.Cmds)
		}
		if p < inPath {
			return p, fmt.Errorf("%s: a value in the URL's scheme or host; write them out", n)
		}
		cmds := n.Pipe.Cmds
		if last := cmds[len(cmds)-1]; isRaw(last) {
			if err := checkNoRaw(cmds[:len(cmds)-1]); err != nil {
				return p, err
			}
			return p, checkNoRawArgs(last.Args[1:])
		}
		if err := checkNoRaw(cmds); err != nil {
			return p, err
		}
		n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: n.Pos,
			Args: []parse.Node{parse.NewIdentifier(escapers[p]).SetPos(n.Pos)}})
		return p, nil
	case *parse.IfNode:
		return escapeBranch(&n.BranchNode, p, false)
	case *parse.WithNode:
		return escapeBranch(&n.BranchNode, p, false)
	case *parse.RangeNode:
		return escapeBranch(&n.BranchNode, p, true)
	}
	return p, fmt.Errorf("%s: not allowed in a URL template", n)
}

// escapeBranch escapes both arms of an if, with or range (loop), which
// must leave the URL in the same part (and, for a range, where it
// started).
func escapeBranch(b *parse.BranchNode, p urlPart, loop bool) (urlPart, error) {
	if err := checkNoRaw(b.Pipe.Cmds); err != nil {
		return p, err
	}
	a, err := escapeList(b.List, p)
	if err != nil {
		return p, err
	}
	e, err := escapeList(b.ElseList, p)
	if err != nil {
		return p, err
	}
	if a != e || loop && a != p {
		return p, fmt.Errorf("%s: its branches leave the URL in different parts (%s, %s)", b, a, e)
	}
	return a, nil
}

func isRaw(c *parse.CommandNode) bool {
	id, ok := c.Args[0].(*parse.IdentifierNode)
	return ok && id.Ident == "raw"
}

// checkNoRaw refuses raw anywhere in commands: it is only allowed as the
// last command of an action that prints.
func checkNoRaw(cmds []*parse.CommandNode) error {
	for _, c := range cmds {
		if err := checkNoRawArgs(c.Args); err != nil {
			return err
		}
	}
	return nil
}

func checkNoRawArgs(args []parse.Node) error {
	for _, a := range args {
		switch a := a.(type) {
		case *parse.IdentifierNode:
			if a.Ident == "raw" {
				return errors.New("raw must be the last command of an action that prints")
			}
		case *parse.PipeNode:
			if err := checkNoRaw(a.Cmds); err != nil {
				return err
			}
		}
	}
	return nil
}

// compile checks a forward's URL and resolves its secret. Errors name the
// key, never the secret.
func (f *Forward) compile(rule, dir string, readFile func(string) ([]byte, error), getenv func(string) string) error {
	u, err := url.Parse(f.URL)
	if f.URL == "" || err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("url %q: want https://host/path", f.URL)
	}
	if u.User != nil {
		return fmt.Errorf("url: no user or password in the URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		ip, err := netip.ParseAddr(u.Hostname())
		if !f.AllowHTTP || err != nil || !ip.Unmap().IsLoopback() {
			return fmt.Errorf("url %s: http:// only to a loopback IP address (127.0.0.1, ::1) with allow_http: true; use https://", f.URL)
		}
		f.loopback = true
	default:
		return fmt.Errorf("url %s: want https://", f.URL)
	}
	n := 0
	for _, v := range []string{f.Secret, f.SecretEnv, f.SecretFile} {
		if v != "" {
			n++
		}
	}
	id := f.SecretID
	switch {
	case n != 1:
		return fmt.Errorf("give exactly one of secret, secret_env, secret_file: the upstream's own signing secret, not the channel's")
	case f.Secret != "":
		f.secret = []byte(f.Secret)
		if id == "" {
			id = "secret:" + rule
		}
	case f.SecretEnv != "":
		v := getenv(f.SecretEnv)
		if v == "" {
			return fmt.Errorf("secret_env: environment variable %s is not set", f.SecretEnv)
		}
		f.secret = []byte(v)
		if id == "" {
			id = "secret_env:" + f.SecretEnv
		}
	default:
		p := f.SecretFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := readFile(p)
		if err != nil {
			return fmt.Errorf("secret_file: %w", err)
		}
		if b = bytes.TrimRight(b, "\r\n"); len(b) == 0 {
			return fmt.Errorf("secret_file: %s is empty", p)
		}
		f.secret = b
		if id == "" {
			id = "secret_file:" + f.SecretFile
		}
	}
	f.SecretID = id
	return nil
}
