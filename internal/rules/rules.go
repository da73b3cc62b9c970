// Package rules is linegate's auto-reply engine: keyword and event rules
// written in YAML, matched in priority order against each event, whose
// actions reply with messages (templated with event fields), look data up
// in the team's own services, or forward the event to the team's own bot.
package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/text/unicode/norm"
)

// File is a rules file.
type File struct {
	Rules   []*Rule `yaml:"rules"`
	Consent Consent `yaml:"consent"`
}

// Consent configures the built-in consent keywords.
type Consent struct {
	// OptOut keywords record an opt-out when a user sends one of them
	// (compared after NFKC normalisation, case-insensitively).
	OptOut []string `yaml:"opt_out_keywords"`
	// OptIn keywords record an opt-in.
	OptIn []string `yaml:"opt_in_keywords"`
}

// Rule is one rule.
type Rule struct {
	Name     string `yaml:"name"`
	Priority int    `yaml:"priority"` // higher first; ties in file order
	When     When   `yaml:"when"`
	// Continue lets the next matching rule run too.
	Continue bool `yaml:"continue"`
	// Cooldown, per user: the rule does not fire again for the same user
	// within it.
	Cooldown time.Duration `yaml:"cooldown"`
	// Class is transactional (default) or promotional.
	Class string `yaml:"class"`
	// Push sends by push even when the reply token is still valid.
	Push bool `yaml:"push"`
	// Reply is up to 5 Messaging API message objects, in YAML; string
	// values are templates (text/template) over the event.
	Reply []map[string]any `yaml:"reply"`
	// ReplyFile is a JSON file holding the messages array instead.
	ReplyFile string `yaml:"reply_file"`
	// Lookup fetches JSON from a service before replying; its result is
	// .Lookup in the templates.
	Lookup *Lookup `yaml:"lookup"`
	// Forward sends the event to the team's own bot.
	Forward *Forward `yaml:"forward"`
	// Handoff hands the conversation to a person (internal/handoff): its
	// message is replied to the user, and from then on no rule answers
	// the conversation until a person hands it back, resolves it, or it
	// is idle for the channel's handoff idle time.
	Handoff *Handoff `yaml:"handoff"`

	re       *regexp.Regexp
	messages []map[string]any
	hours    *hours
}

// When says which events a rule matches; every condition given must hold.
type When struct {
	Event    []string `yaml:"event"`  // event types; default: any
	Source   []string `yaml:"source"` // user, group, room
	Channel  []string `yaml:"channel"`
	Text     *Text    `yaml:"text"`     // message text
	Postback *Text    `yaml:"postback"` // postback data
	Hours    *Hours   `yaml:"hours"`
}

// Text matches a string after NFKC normalisation, case-insensitively
// (full-width "ｔｒａｃｋ" matches "track"). Give one of the four.
type Text struct {
	Exact    string `yaml:"exact"`
	Prefix   string `yaml:"prefix"`
	Contains string `yaml:"contains"`
	Regex    string `yaml:"regex"`
}

// Hours is a time window: days of the week and a time of day, in a zone.
type Hours struct {
	TZ   string   `yaml:"tz"`   // IANA zone, e.g. Asia/Tokyo
	Days []string `yaml:"days"` // mon..sun; default every day
	From string   `yaml:"from"` // "09:00"
	To   string   `yaml:"to"`   // "18:00"; before From wraps past midnight
	// Outside inverts the window (for "closed now" replies).
	Outside bool `yaml:"outside"`
}

// Lookup is an HTTP call to a data service.
type Lookup struct {
	// URL is a template whose values are escaped for where they land
	// (path segment escaping in the path, query escaping in the query);
	// {{raw .X}} prints a value as it is. Its scheme and host are
	// literal, and must be in lookup_hosts.
	URL     string         `yaml:"url"`
	Method  string         `yaml:"method"` // GET (default) or POST
	Body    map[string]any `yaml:"body"`   // for POST: JSON, templated
	Timeout time.Duration  `yaml:"timeout"`
	// Fallback is replied when the lookup fails or is too slow.
	Fallback []map[string]any `yaml:"fallback"`
	// Loading, if set (5 to 60 seconds, a multiple of 5), shows LINE's
	// loading animation in the user's chat while the lookup runs (one-on-
	// one chats only; recorded like a send, held back like one).
	Loading int `yaml:"loading_seconds"`
}

// Forward sends the event to an upstream bot in a webhook body signed as
// LINE signs one, but with the upstream's own secret: a bot never holds
// the channel secret, so it cannot make webhooks the gateway would take
// for LINE's.
type Forward struct {
	// URL is https://, or http:// to a loopback IP address (127.0.0.1,
	// ::1) with allow_http. Redirects are not followed.
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
	// The upstream's signing secret: exactly one of secret, secret_env
	// (an environment variable) and secret_file (a file, relative to the
	// rules file).
	Secret     string `yaml:"secret" json:"-"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	// SecretID names the secret in the ledger's forward records (default:
	// where it comes from, secret_env:NAME, secret_file:PATH or
	// secret:RULE); never the secret itself.
	SecretID string `yaml:"secret_id"`
	// AllowHTTP lets the URL be http:// when its host is a loopback IP
	// address: a bot beside the gateway.
	AllowHTTP bool `yaml:"allow_http"`

	secret   []byte
	loopback bool // plain HTTP: the connection must stay on loopback
}

// Handoff is a rule's handoff action.
type Handoff struct {
	// Message is up to 5 message objects replied to the user as the
	// conversation is handed off (templates, as in reply); none: nothing
	// is said.
	Message []map[string]any `yaml:"message"`
}

type hours struct {
	loc      *time.Location
	days     map[time.Weekday]bool
	from, to int // minutes of the day
	outside  bool
}

// Set is a loaded, checked rule set.
type Set struct {
	Rules   []*Rule
	Consent Consent
	// Hash is the SHA-256 of the rule set's canonical JSON: what the ledger
	// records when it changes.
	Hash string
}

// Sources is where Load reads files and environment variables.
type Sources struct {
	// ReadFile reads rule, reply and secret files (os.ReadFile when nil).
	ReadFile func(string) ([]byte, error)
	// Getenv reads the environment variables of secret_env (none are set
	// when nil).
	Getenv func(string) string
}

// Load reads rule files (YAML) from src (nil: the file system, no
// environment), resolving reply_file and secret_file paths relative to
// each file, adds the inline rules, and checks every rule.
func Load(paths []string, inline *File, src *Sources) (*Set, error) {
	readFile, getenv := os.ReadFile, func(string) string { return "" }
	if src != nil && src.ReadFile != nil {
		readFile = src.ReadFile
	}
	if src != nil && src.Getenv != nil {
		getenv = src.Getenv
	}
	set := &Set{}
	add := func(f *File, dir string, lines []int) error {
		for i, r := range f.Rules {
			if err := r.compile(dir, readFile, getenv); err != nil {
				if i < len(lines) {
					return fmt.Errorf("line %d: rule %q: %w", lines[i], r.Name, err)
				}
				return fmt.Errorf("rule %q: %w", r.Name, err)
			}
			set.Rules = append(set.Rules, r)
		}
		set.Consent.OptOut = append(set.Consent.OptOut, f.Consent.OptOut...)
		set.Consent.OptIn = append(set.Consent.OptIn, f.Consent.OptIn...)
		return nil
	}
	if inline != nil {
		if err := add(inline, ".", nil); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		b, err := readFile(p)
		if err != nil {
			return nil, err
		}
		var f File
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if err := add(&f, filepath.Dir(p), ruleLines(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	names := map[string]bool{}
	for _, r := range set.Rules {
		if names[r.Name] {
			return nil, fmt.Errorf("rule %q is defined twice", r.Name)
		}
		names[r.Name] = true
	}
	slices.SortStableFunc(set.Rules, func(a, b *Rule) int { return b.Priority - a.Priority })
	canon, _ := json.Marshal(struct {
		Rules   []canonRule
		Consent Consent
	}{canonRules(set.Rules), set.Consent})
	sum := sha256.Sum256(canon)
	set.Hash = hex.EncodeToString(sum[:])
	return set, nil
}

type canonRule struct {
	Rule     *Rule
	Messages []map[string]any
}

func canonRules(rs []*Rule) []canonRule {
	var out []canonRule
	for _, r := range rs {
		out = append(out, canonRule{r, r.messages})
	}
	return out
}

func (r *Rule) compile(dir string, readFile func(string) ([]byte, error), getenv func(string) string) error {
	if r.Name == "" {
		return fmt.Errorf("a rule needs a name")
	}
	switch r.Class {
	case "", "transactional", "promotional":
	default:
		return fmt.Errorf("class %q: want transactional or promotional", r.Class)
	}
	for _, t := range []*Text{r.When.Text, r.When.Postback} {
		if t == nil {
			continue
		}
		n := 0
		for _, s := range []string{t.Exact, t.Prefix, t.Contains, t.Regex} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("a text or postback match needs exactly one of exact, prefix, contains, regex")
		}
		if t.Regex != "" {
			re, err := regexp.Compile("(?i)" + t.Regex)
			if err != nil {
				return fmt.Errorf("regex: %w", err)
			}
			r.re = re
		}
	}
	if h := r.When.Hours; h != nil {
		hs, err := compileHours(h)
		if err != nil {
			return err
		}
		r.hours = hs
	}
	r.messages = r.Reply
	if r.ReplyFile != "" {
		if r.Reply != nil {
			return fmt.Errorf("give reply or reply_file, not both")
		}
		p := r.ReplyFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := readFile(p)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &r.messages); err != nil {
			return fmt.Errorf("%s: want a JSON array of message objects: %w", p, err)
		}
	}
	if r.Handoff != nil {
		if len(r.messages) > 0 || r.Lookup != nil || r.Forward != nil {
			return fmt.Errorf("handoff: give its message in handoff.message, without reply, reply_file, lookup or forward")
		}
		r.messages = r.Handoff.Message
	}
	if len(r.messages) > 5 {
		return fmt.Errorf("%d messages: a reply takes at most 5", len(r.messages))
	}
	if r.Lookup != nil && len(r.Lookup.Fallback) > 5 {
		return fmt.Errorf("lookup fallback: at most 5 messages")
	}
	if len(r.messages) == 0 && r.Forward == nil && r.Lookup == nil && r.Handoff == nil {
		return fmt.Errorf("a rule needs reply, reply_file, lookup, forward or handoff")
	}
	if r.Lookup != nil {
		if r.Lookup.URL == "" {
			return fmt.Errorf("lookup needs a url")
		}
		if l := r.Lookup.Loading; l != 0 && (l < 5 || l > 60 || l%5 != 0) {
			return fmt.Errorf("lookup loading_seconds %d: want 5 to 60, a multiple of 5", l)
		}
		if _, err := parseURLTemplate(r.Lookup.URL); err != nil {
			return fmt.Errorf("lookup: %w", err)
		}
	}
	if r.Forward != nil {
		if err := r.Forward.compile(r.Name, dir, readFile, getenv); err != nil {
			return fmt.Errorf("forward: %w", err)
		}
	}
	// Check the templates now, not at the first event.
	if _, err := renderMessages(r.messages, &Data{}); err != nil && !isMissingKey(err) {
		return err
	}
	return nil
}

// ruleLines returns the line of each rule of a rule file, in order, so
// that an error names where the rule is.
func ruleLines(b []byte) []int {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "rules" && m.Content[i+1].Kind == yaml.SequenceNode {
			var lines []int
			for _, r := range m.Content[i+1].Content {
				lines = append(lines, r.Line)
			}
			return lines
		}
	}
	return nil
}

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// weekday reads a day of the week: its three-letter abbreviation or its
// English name, in any ASCII case. Anything else, including letters that
// only fold to ASCII (the Kelvin sign), is not a day.
func weekday(d string) (time.Weekday, bool) {
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			return 0, false
		}
	}
	d = strings.ToLower(d)
	if len(d) < 3 {
		return 0, false
	}
	wd, ok := dayNames[d[:3]]
	if !ok || len(d) > 3 && d != strings.ToLower(wd.String()) {
		return 0, false
	}
	return wd, true
}

func compileHours(h *Hours) (*hours, error) {
	loc, err := time.LoadLocation(h.TZ)
	if h.TZ == "" || err != nil {
		return nil, fmt.Errorf("hours.tz %q: want an IANA time zone such as Asia/Tokyo", h.TZ)
	}
	hs := &hours{loc: loc, days: map[time.Weekday]bool{}, outside: h.Outside}
	for _, d := range h.Days {
		wd, ok := weekday(d)
		if !ok {
			return nil, fmt.Errorf("hours.days: %q is not a day: want mon, tue, wed, thu, fri, sat or sun (or the day's English name)", d)
		}
		hs.days[wd] = true
	}
	parse := func(s string) (int, error) {
		t, err := time.Parse("15:04", s)
		if err != nil {
			return 0, fmt.Errorf("hours: %q: want HH:MM", s)
		}
		return t.Hour()*60 + t.Minute(), nil
	}
	if hs.from, err = parse(h.From); err != nil {
		return nil, err
	}
	if hs.to, err = parse(h.To); err != nil {
		return nil, err
	}
	return hs, nil
}

func (h *hours) contains(t time.Time) bool {
	t = t.In(h.loc)
	m := t.Hour()*60 + t.Minute()
	in := false
	if len(h.days) == 0 || h.days[t.Weekday()] {
		if h.from <= h.to {
			in = m >= h.from && m < h.to
		} else {
			in = m >= h.from || m < h.to
		}
	}
	return in != h.outside
}

// Normalize is how texts and keywords are compared: NFKC, lower case,
// trimmed.
func Normalize(s string) string {
	return strings.ToLower(strings.TrimSpace(norm.NFKC.String(s)))
}

func (t *Text) match(s string, re *regexp.Regexp) bool {
	n := Normalize(s)
	switch {
	case t.Exact != "":
		return n == Normalize(t.Exact)
	case t.Prefix != "":
		return strings.HasPrefix(n, Normalize(t.Prefix))
	case t.Contains != "":
		return strings.Contains(n, Normalize(t.Contains))
	case re != nil:
		return re.MatchString(norm.NFKC.String(s))
	}
	return false
}

// Input is what a rule is matched against.
type Input struct {
	Channel    string
	Type       string
	SourceType string
	Text       string // message text, "" for other events
	HasText    bool
	Postback   string
	HasPost    bool
	Time       time.Time
}

// Matches reports whether the rule's conditions hold for in.
func (r *Rule) Matches(in Input) bool {
	w := r.When
	if len(w.Event) > 0 && !slices.Contains(w.Event, in.Type) {
		return false
	}
	if len(w.Source) > 0 && !slices.Contains(w.Source, in.SourceType) {
		return false
	}
	if len(w.Channel) > 0 && !slices.Contains(w.Channel, in.Channel) {
		return false
	}
	if w.Text != nil && (!in.HasText || !w.Text.match(in.Text, r.re)) {
		return false
	}
	if w.Postback != nil && (!in.HasPost || !w.Postback.match(in.Postback, r.re)) {
		return false
	}
	if r.hours != nil && !r.hours.contains(in.Time) {
		return false
	}
	return true
}

// Match returns the rules that fire for in, in order: the first match,
// and the ones after it as long as each says continue.
func (s *Set) Match(in Input) []*Rule {
	var out []*Rule
	for _, r := range s.Rules {
		if !r.Matches(in) {
			continue
		}
		out = append(out, r)
		if !r.Continue {
			break
		}
	}
	return out
}
