package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxJSONDepth bounds how deeply a request body's JSON nests. A Flex
// carousel in a push is 9 levels deep with one box in its bubble
// (request, messages, message, carousel, bubbles, bubble, box, contents,
// component), and each box inside a box adds two: 64 leaves room for 28
// boxes nested in one another (TestBodyDepth).
const MaxJSONDepth = 64

// readFields are the fields of LINE's message send requests, which the
// proxy reads with encoding/json, which matches keys without regard to
// case while LINE reads them exactly. A key that matches one of them only
// without regard to case would be read by the proxy and not by LINE.
var readFields = []string{
	"to", "messages", "replyToken", "notificationDisabled", "customAggregationUnits",
	"recipient", "filter", "limit",
}

// errJSONSyntax marks a body that is not JSON at all (not a refusal of
// its shape).
var errJSONSyntax = errors.New("not JSON")

// scanJSON reads a JSON body's tokens and refuses what would make the
// proxy read other values than LINE: a key twice in one object (at any
// level), a key of the top object that equals a field the proxy reads only without regard to
// case, nesting deeper than MaxJSONDepth, and text that is not UTF-8. A
// body that passes is read alike by encoding/json and by LINE.
func scanJSON(body []byte) error {
	if !utf8.Valid(body) {
		return errors.New("the request body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// One frame per open object or array: the keys seen in an object.
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // an object's next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) != 0 {
				return errJSONSyntax
			}
			return nil
		}
		if err != nil {
			return errJSONSyntax
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			key, ok := tok.(string)
			if !ok {
				return errJSONSyntax
			}
			if top.keys[key] {
				return fmt.Errorf("the key %q appears twice in one object", clip(key))
			}
			top.keys[key] = true
			for _, f := range readFields {
				if len(stack) != 1 {
					break // the proxy reads the top object's fields only
				}
				if key != f && strings.EqualFold(key, f) {
					return fmt.Errorf("the key %q is not %q: LINE's keys are case-sensitive", clip(key), f)
				}
			}
			top.expect = false
			continue
		}
		if top != nil && top.object {
			top.expect = true // a value: the next token is a key or '}'
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) >= MaxJSONDepth {
					return fmt.Errorf("the request body nests deeper than %d levels", MaxJSONDepth)
				}
				stack = append(stack, &frame{object: d == '{', keys: map[string]bool{}, expect: d == '{'})
			case ']':
				stack = stack[:len(stack)-1]
			}
		}
		if len(stack) == 0 && dec.More() {
			return errJSONSyntax
		}
	}
}

// clip shortens a key for an error message.
func clip(s string) string {
	if len(s) > 40 {
		for i := 40; i > 0; i-- {
			if utf8.RuneStart(s[i]) {
				return s[:i] + "…"
			}
		}
	}
	return s
}
