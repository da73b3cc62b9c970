package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// configError is a mistake in a config file: the file, the line, the key
// (its path from the top: log.checkpoint_interval, channels[0].secret) and
// what is wrong, with the expected form.
type configError struct {
	File string
	Line int    // 0 when unknown
	Key  string // "" for the file as a whole
	Msg  string
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString("config ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// configSite is where a config was read: its file and the line of each
// key. Parts of the config (a channel, an audience) hold it with their
// own path, so that what they find wrong later (a secret file that cannot
// be read) names the file, line and key too.
type configSite struct {
	file  string
	lines map[string]int // key path -> line
}

// errorf returns an error about the key at path.
func (s *configSite) errorf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s == nil {
		if path == "" {
			return fmt.Errorf("config: %s", msg)
		}
		return fmt.Errorf("config: %s: %s", path, msg)
	}
	return &configError{File: s.file, Line: s.line(path), Key: path, Msg: msg}
}

// line returns the line of path, or of its nearest ancestor given.
func (s *configSite) line(path string) int {
	for {
		if l, ok := s.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// parentPath returns the path of the key that holds path:
// "channels[0].secret" -> "channels[0]" -> "channels" -> "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// keyError is an error about one key, relative to the part of the config
// that found it (a secret's "secret_env" in a channel).
type keyError struct{ key, msg string }

func (e *keyError) Error() string { return e.key + ": " + e.msg }

// locate places an error of a part of the config at path: a keyError
// becomes a configError for path.key; others are named by path.
func (s *configSite) locate(path string, err error) error {
	if err == nil {
		return nil
	}
	var ce *configError
	if errors.As(err, &ce) {
		return err
	}
	var ke *keyError
	if errors.As(err, &ke) {
		return s.errorf(joinPath(path, ke.key), "%s", ke.msg)
	}
	return s.errorf(path, "%v", err)
}

// configParser checks a config's YAML against the Config type before it is
// decoded, so that every mistake is reported with its file, line and key,
// the nearest known key, and the form a value should take; the YAML
// decoder's own errors name Go types instead.
type configParser struct {
	configSite
	errs []error
}

func (p *configParser) add(line int, path, format string, args ...any) {
	p.errs = append(p.errs, &configError{File: p.file, Line: line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

// fail records an error about the key at path, at its line.
func (p *configParser) fail(path, format string, args ...any) {
	p.add(p.line(path), path, format, args...)
}

// err returns the errors found, one a line, or nil.
func (p *configParser) err() error {
	const most = 20
	if len(p.errs) > most {
		n := len(p.errs) - most
		p.errs = append(p.errs[:most], fmt.Errorf("config %s: and %d more", p.file, n))
	}
	return errors.Join(p.errs...)
}

// decodeYAML parses a config file's YAML into its one document, and
// checks it against the type of v, recording each mistake; it returns the
// document's root node, nil if the file has none.
func (p *configParser) decodeYAML(data []byte, t reflect.Type) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(0, "", "the file is empty: a config needs at least log.origin and channels (start from examples/linegate.yaml)")
		} else {
			p.yamlError(err)
		}
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		p.add(next.Line, "", "a second YAML document (after ---): give one document")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.add(0, "", "the file is empty: a config needs at least log.origin and channels (start from examples/linegate.yaml)")
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		p.add(0, "", "the file holds no keys: a config needs at least log.origin and channels (start from examples/linegate.yaml)")
		return nil
	}
	p.walk(root, t, "")
	return root
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError records an error of the YAML parser or decoder, with its line.
func (p *configParser) yamlError(err error) {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, m := range msgs {
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			p.add(line, "", "%s", strings.TrimPrefix(sm[2], "yaml: "))
			continue
		}
		p.add(0, "", "%s", strings.TrimPrefix(m, "yaml: "))
	}
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	policyType   = reflect.TypeFor[PolicyConfig]()
)

// walk checks node n against type t at path: keys that t does not have,
// keys given twice, and values of the wrong form.
func (p *configParser) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // nothing given: the default
	}
	if t == policyType {
		if n.Kind == yaml.ScalarNode {
			p.scalar(n, durationType, path)
			return
		}
		t = reflect.TypeFor[policyFields]()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.add(n.Line, path, "want a mapping of keys (%s), not %s", strings.Join(sortedKeys(yamlFields(t)), ", "), nodeKind(n))
			return
		}
		fields := yamlFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue // a merge key: the decoder checks what it merges
			}
			kp := joinPath(path, k.Value)
			if first, ok := seen[k.Value]; ok {
				p.add(k.Line, kp, "given twice (first at line %d): give each key once", first)
				continue
			}
			seen[k.Value] = k.Line
			p.lines[kp] = k.Line
			ft, ok := fields[k.Value]
			if !ok {
				p.add(k.Line, kp, "%s", unknownKey(k.Value, path, fields))
				continue
			}
			p.walk(v, ft, kp)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			p.add(n.Line, path, "want a mapping (name: value, one a line), not %s", nodeKind(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := joinPath(path, k.Value)
			if first, ok := seen[k.Value]; ok {
				p.add(k.Line, kp, "given twice (first at line %d): give each key once", first)
				continue
			}
			seen[k.Value] = k.Line
			p.lines[kp] = k.Line
			p.walk(v, t.Elem(), kp)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.add(n.Line, path, "want a list, such as [a, b] or one item a line starting with \"- \", not %s", nodeKind(n))
			return
		}
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.lines[ip] = item.Line
			p.walk(item, t.Elem(), ip)
		}
	case reflect.Interface:
		// Free-form (message objects): the rules check them.
	default:
		p.scalar(n, t, path)
	}
}

// scalar checks that n decodes as a value of type t.
func (p *configParser) scalar(n *yaml.Node, t reflect.Type, path string) {
	what, want := valueForm(t)
	if n.Kind != yaml.ScalarNode {
		p.add(n.Line, path, "want %s, not %s: %s", what, nodeKind(n), want)
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		p.add(n.Line, path, "%q is not %s: want %s", n.Value, what, want)
	}
}

// valueForm names the form of a value of type t, and gives an example.
func valueForm(t reflect.Type) (what, want string) {
	switch {
	case t == durationType:
		return "a duration", "a duration such as 500ms, 30s, 5m, 1h or 168h (units ns, us, ms, s, m, h; 0s for none)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean", "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number", "a whole number such as 16"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number", "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number", "a number such as 5 or 2.5"
	case reflect.String:
		return "a string", "a string (in quotes if it starts with one of * & ! | > % @ ` { [ or holds \": \" or \" #\")"
	}
	return "a value", "a value of type " + t.String()
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "that"
}

// yamlFields returns the YAML keys of a struct type and their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unknownKey says that key is not a key of the mapping at parent, and
// what was likely meant: the nearest key there, or the same key in
// another place of the config.
func unknownKey(key, parent string, fields map[string]reflect.Type) string {
	where := "at the top level"
	if parent != "" {
		where = "in " + parent
	}
	names := sortedKeys(fields)
	if s := nearest(key, names); s != "" {
		return fmt.Sprintf("unknown key %s; did you mean %s?", where, s)
	}
	var elsewhere []string
	for _, kp := range configKeyPaths() {
		if kp == key || strings.HasSuffix(kp, "."+key) {
			elsewhere = append(elsewhere, kp)
		}
	}
	if len(elsewhere) > 0 && len(elsewhere) <= 3 {
		return fmt.Sprintf("unknown key %s; did you mean %s?", where, strings.Join(elsewhere, " or "))
	}
	return fmt.Sprintf("unknown key %s; the keys there are %s", where, strings.Join(names, ", "))
}

// configKeyPaths lists the paths of every key of Config: "log.origin",
// "channels[].secret".
func configKeyPaths() []string {
	var out []string
	var visit func(t reflect.Type, path string, depth int)
	visit = func(t reflect.Type, path string, depth int) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				path += "[]"
			}
			t = t.Elem()
		}
		if t == policyType {
			t = reflect.TypeFor[policyFields]()
			path += ".NAME"
		}
		if t.Kind() == reflect.Map && t.Elem().Kind() != reflect.Interface {
			visit(t.Elem(), path+".NAME", depth)
			return
		}
		if t.Kind() != reflect.Struct || t == durationType || depth > 6 {
			return
		}
		for name, ft := range yamlFields(t) {
			kp := joinPath(path, name)
			out = append(out, kp)
			visit(ft, kp, depth+1)
		}
	}
	visit(reflect.TypeFor[Config](), "", 0)
	slices.Sort(out)
	return out
}

// nearest returns the candidate closest to s by edit distance (a
// transposition counts as one edit), if it is close enough to be what was
// meant; "" otherwise.
func nearest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	limit := min(3, max(1, utf8.RuneCountInString(s)/3))
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > limit {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// runes.
func editDistance(a, b string) int {
	x, y := []rune(a), []rune(b)
	d := make([][]int, len(x)+1)
	for i := range d {
		d[i] = make([]int, len(y)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(x); i++ {
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && x[i-1] == y[j-2] && x[i-2] == y[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(x)][len(y)]
}
