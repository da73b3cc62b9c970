package rules

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"text/template"
	"time"
)

// Data is what templates see.
type Data struct {
	Channel  string
	Type     string
	UserID   string
	GroupID  string
	RoomID   string
	Text     string
	Postback string
	// Event is the event as generic JSON, for any field.
	Event map[string]any
	// Lookup is the JSON a lookup returned.
	Lookup any
	Now    time.Time
}

var funcs = template.FuncMap{
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"default": func(def string, v any) any {
		if v == nil || v == "" {
			return def
		}
		return v
	},
}

var cache sync.Map // template text -> *template.Template

func render(s string, d *Data) (string, error) {
	if !strings.Contains(s, "{{") {
		return s, nil
	}
	var t *template.Template
	if v, ok := cache.Load(s); ok {
		t = v.(*template.Template)
	} else {
		var err error
		t, err = template.New("").Funcs(funcs).Option("missingkey=error").Parse(s)
		if err != nil {
			return "", fmt.Errorf("template %q: %w", s, err)
		}
		cache.Store(s, t)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	return b.String(), nil
}

// isMissingKey reports a template that failed only for want of data: a
// rule checked at load time, before any event, fails so.
//
// BUG: it matches the text of text/template's errors, which has no type for
// a missing key or a nil value (only *template.ExecError around them all).
func isMissingKey(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "map has no entry") || strings.Contains(err.Error(), "nil pointer") ||
		strings.Contains(err.Error(), "nil data"))
}

// renderMessages executes every string of the message trees as a template
// and returns the messages as JSON. Values stay where they are, so a
// template's output is always a JSON string, whatever it contains.
func renderMessages(msgs []map[string]any, d *Data) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		v, err := renderValue(m, d)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func renderValue(v any, d *Data) (any, error) {
	switch v := v.(type) {
	case string:
		return render(v, d)
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			r, err := renderValue(x, d)
			if err != nil {
				return nil, err
			}
			m[k] = r
		}
		return m, nil
	case []any:
		a := make([]any, len(v))
		for i, x := range v {
			r, err := renderValue(x, d)
			if err != nil {
				return nil, err
			}
			a[i] = r
		}
		return a, nil
	}
	return v, nil
}
