package line

import (
	"encoding/json"
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

// BodySubjects returns the subjects of every event of a webhook request
// body, as Event.Subjects does, reading only the fields it needs. It
// returns nil for a body that is not a webhook callback.
func BodySubjects(body []byte) []string {
	var cb struct {
		Events []struct {
			Source *Source  `json:"source"`
			Joined *Members `json:"joined"`
			Left   *Members `json:"left"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &cb) != nil {
		return nil
	}
	var out []string
	for _, e := range cb.Events {
		out = appendSubjects(out, e.Source, e.Joined, e.Left)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
