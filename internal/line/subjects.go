package line

import (
	"encoding/json"
	"slices"

	"github.com/linegate/linegate/internal/ledger"
)

// Subjects returns the subjects (ledger.ValidSubject) whose personal data
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
		if ledger.ValidSubject(c) {
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
