package fanout

import (
	"bytes"
	"encoding/json"
	"iter"
)

// withoutMembers returns obj, a valid JSON object, without the members at
// its top level whose key drop takes (the key as a JSON reader reads it,
// escapes decoded), the others as they are, byte for byte and in their
// order; obj itself when none goes.
//
// Written by hand: encoding/json rewrites an object only by decoding it
// whole (into a map, which reorders its members and re-encodes every
// value) or token by token (an allocation a token); this scans the
// object's top level once and copies the members that stay.
func withoutMembers(obj []byte, drop func(key []byte) bool) []byte {
	goes := false
	for key := range members(obj) {
		goes = goes || drop(memberKey(obj[key[0]:key[1]]))
	}
	if !goes {
		return obj
	}
	out := append(make([]byte, 0, len(obj)), '{')
	n := 0
	for key, end := range members(obj) {
		if drop(memberKey(obj[key[0]:key[1]])) {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, obj[key[0]:end]...)
		n++
	}
	return append(out, '}')
}

// members yields the members at the top level of obj, a valid JSON
// object: the offsets of each one's quoted key, and the offset just past
// its value.
func members(obj []byte) iter.Seq2[[2]int, int] {
	return func(yield func([2]int, int) bool) {
		i := skipSpace(obj, 0) + 1 // past '{'
		for {
			i = skipSpace(obj, i)
			switch obj[i] {
			case '}':
				return
			case ',':
				i++
				continue
			}
			key := [2]int{i, skipString(obj, i)}
			i = skipSpace(obj, key[1]) + 1 // past ':'
			i = skipValue(obj, skipSpace(obj, i))
			if !yield(key, i) {
				return
			}
		}
	}
}

// memberKey returns a quoted key as a JSON reader reads it: its bytes
// between the quotes, or decoded when it holds an escape.
func memberKey(quoted []byte) []byte {
	raw := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return raw
	}
	return []byte(s)
}

// skipSpace returns the offset of the first byte at or after i that is
// not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset just past the string that begins at i.
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// skipValue returns the offset just past the value that begins at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	// A number, true, false or null.
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}
