package line

import (
	"bytes"
	"slices"
	"strings"
)

// ValidSubject reports whether s names a LINE subject: "user:", "group:"
// or "room:" followed by a LINE id (1 to 64 letters and digits). The
// ledger seals records under the keys of these subjects (and its own,
// "system").
func ValidSubject(s string) bool {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || id == "" || len(id) > 64 || (kind != "user" && kind != "group" && kind != "room") {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// ParseSubject reads a subject as user:U..., group:C... or room:R..., or
// as a bare LINE id whose first letter says which (U, C or R). It reports
// false when s names none.
func ParseSubject(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, ":") {
		switch {
		case strings.HasPrefix(s, "U"):
			s = "user:" + s
		case strings.HasPrefix(s, "C"):
			s = "group:" + s
		case strings.HasPrefix(s, "R"):
			s = "room:" + s
		}
	}
	return s, ValidSubject(s)
}

// Subjects returns the subjects (ValidSubject) whose personal data
// the event holds: its source's user, group and room, and the members an
// event of joining or leaving names. Sorted, without duplicates.
func (e *Event) Subjects() []string {
	out := appendSubjects(nil, e.Source, e.Joined, e.Left)
	slices.Sort(out)
	return slices.Compact(out)
}

func appendSubjects(out []string, src *Source, members ...*Members) []string {
	out = appendSource(out, src)
	for _, m := range members {
		if m != nil {
			for i := range m.Members {
				out = appendSource(out, &m.Members[i])
			}
		}
	}
	return out
}

func appendSource(out []string, s *Source) []string {
	if s == nil {
		return out
	}
	for _, c := range []string{"user:" + s.UserID, "group:" + s.GroupID, "room:" + s.RoomID} {
		if ValidSubject(c) {
			out = append(out, c)
		}
	}
	return out
}

// BodySubjects returns the subjects whose personal data a webhook request
// body holds: every LINE id in it, wherever it is (an event's source, the
// users a message mentions, the members who joined or left, an event that
// is malformed or of a type not known yet), but the bot's own (the body's
// destination, when it is a bot's user id: not a subject wherever it
// appears). A subject is a
// JSON string value that is a LINE id anywhere (U, C or R and 32 hex
// digits: user:, group:, room:), or the value of a userId, groupId or
// roomId field (user:, group:, room:, when ValidSubject).
//
// It scans the body's bytes instead of decoding its events, so that no
// event can hide an id by being malformed, and it allocates little more
// than the subjects: it runs on every webhook before the answer. A body
// that is not JSON gives the ids in what could be read. Sorted, without
// duplicates; nil when there are none.
func BodySubjects(body []byte) []string {
	var (
		out   []string
		dest  []byte // the destination: the bot's own user id
		key   []byte // the key whose value comes next (nil: none)
		depth int    // of objects and arrays
		buf   [64]byte
	)
	for i := 0; i < len(body); {
		q := bytes.IndexByte(body[i:], '"')
		if q < 0 {
			break
		}
		// Between two strings is the structure: count the nesting, and
		// see whether the string is the value of the key before it.
		direct := true
		for _, c := range body[i : i+q] {
			switch c {
			case ' ', '\t', '\n', '\r':
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			direct = false
		}
		start := i + q + 1
		end, escaped := stringEnd(body, start)
		if end < 0 {
			break
		}
		s := body[start:end]
		i = end + 1
		for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
			i++
		}
		if i < len(body) && body[i] == ':' {
			key = s
			if escaped {
				key = nil
			}
			i++
			continue
		}
		if !direct {
			key = nil
		}
		if escaped {
			if s = unescapeID(s, &buf); s == nil {
				key = nil
				continue
			}
		}
		switch {
		case depth == 1 && string(key) == "destination":
			// The bot's own id (ValidDestination), which is not a
			// subject anywhere; a malformed one excludes nothing.
			if len(s) == 33 && s[0] == 'U' && !bytes.ContainsAny(s[1:], "ABCDEF") && isHex(s[1:]) {
				dest = s
				if escaped {
					dest = bytes.Clone(s) // buf is for the next string
				}
			}
		case string(key) == "userId":
			out = addSubject(out, "user:", s)
		case string(key) == "groupId":
			out = addSubject(out, "group:", s)
		case string(key) == "roomId":
			out = addSubject(out, "room:", s)
		case len(s) == 33 && isHex(s[1:]):
			switch s[0] {
			case 'U':
				out = addSubject(out, "user:", s)
			case 'C':
				out = addSubject(out, "group:", s)
			case 'R':
				out = addSubject(out, "room:", s)
			}
		}
		key = nil
	}
	if dest != nil {
		out = slices.DeleteFunc(out, func(s string) bool { return isSubject(s, "user:", dest) })
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return out
}

// stringEnd returns the index of the quote that ends the JSON string whose
// content starts at start, and whether the string holds an escape; -1 when
// the body ends first.
func stringEnd(body []byte, start int) (int, bool) {
	escaped := false
	for k := start; k < len(body); {
		n := bytes.IndexByte(body[k:], '"')
		if n < 0 {
			return -1, false
		}
		e := k + n
		b := 0
		for p := e - 1; p >= start && body[p] == '\\'; p-- {
			b++
		}
		if b > 0 || bytes.IndexByte(body[k:e], '\\') >= 0 {
			escaped = true
		}
		if b%2 == 0 {
			return e, escaped
		}
		k = e + 1
	}
	return -1, false
}

// unescapeID decodes into buf a JSON string's content that holds escapes,
// if it can be a LINE id: letters and digits, some of them escaped as
// \uXXXX; nil otherwise (any other escape, or too long). It allocates
// nothing.
func unescapeID(s []byte, buf *[64]byte) []byte {
	n := 0
	for k := 0; k < len(s); n++ {
		if n == len(buf) {
			return nil
		}
		c := s[k]
		if c == '\\' {
			if k+6 > len(s) || s[k+1] != 'u' || !isHex(s[k+2:k+6]) {
				return nil
			}
			if s[k+2] != '0' || s[k+3] != '0' {
				return nil // not ASCII
			}
			c = hexDigit(s[k+4])<<4 | hexDigit(s[k+5])
			k += 6
		} else {
			k++
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return nil
		}
		buf[n] = c
	}
	return buf[:n]
}

// addSubject appends kind+id to out if it is a subject that out does not
// hold yet; it allocates only what it appends.
func addSubject(out []string, kind string, id []byte) []string {
	if len(id) == 0 || len(id) > 64 {
		return out
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return out
		}
	}
	if out == nil {
		out = make([]string, 0, 4)
	}
	for _, s := range out {
		if isSubject(s, kind, id) {
			return out
		}
	}
	var b strings.Builder // one allocation: kind+string(id) makes two for an id over 32 bytes
	b.Grow(len(kind) + len(id))
	b.WriteString(kind)
	b.Write(id)
	return append(out, b.String())
}

// isSubject reports whether s is kind+id, without converting id (a string
// of an id, over 32 bytes, would be allocated).
func isSubject(s, kind string, id []byte) bool {
	if len(s) != len(kind)+len(id) || s[:len(kind)] != kind {
		return false
	}
	for i, c := range id {
		if s[len(kind)+i] != c {
			return false
		}
	}
	return true
}

// hexDigit returns the value of a hex digit.
func hexDigit(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// isHex reports whether b is hex digits only.
func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
