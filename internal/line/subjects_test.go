package line_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/line"
)

func TestBodySubjects(t *testing.T) {
	dir := corpus.Webhooks(t)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := map[string][]string{
		"member-joined.json": {"group:C91dc9896d9b5fced2730b33ac7616614",
			"user:U60c177587bb889eab163878915edab76", "user:U6e20008fba502d462b45e3d94285a28c"},
		// The bot itself is mentioned: its id (the destination) is not a
		// subject.
		"message-text-mention.json": {"group:C91dc9896d9b5fced2730b33ac7616614", "user:U02641a6f0bd20116df2cf4287b1237c2"},
		"bot-suspended.json":        nil,
	}
	for name, want := range tests {
		if got := line.BodySubjects(read(name)); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	t.Run("testdata", func(t *testing.T) { checkSubjectUnion(t, dir) })
	t.Run("sdk-java", func(t *testing.T) {
		sdk := corpus.Shared(t, corpus.SDKJava)
		for name, want := range map[string][]string{
			"member_joined.json": {"group:C1234567890", "user:U111111"},
			"text-group.json":    {"group:u206d25c2ea6bd87c17655609a1c37cb8"},
			"text-mention.json":  {"user:U12345678901234567890123456780", "user:u206d25c2ea6bd87c17655609a1c37cb8"},
		} {
			b, err := os.ReadFile(filepath.Join(sdk, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := line.BodySubjects(b); !slices.Equal(got, want) {
				t.Errorf("%s: %v, want %v", name, got, want)
			}
		}
		checkSubjectUnion(t, sdk)
	})
	for _, bad := range []string{``, `[]`, `{"events":[{"source":{"type":"user","userId":"U 1"}}]}`} {
		if got := line.BodySubjects([]byte(bad)); len(got) != 0 {
			t.Errorf("%q: %v", bad, got)
		}
	}
}

// checkSubjectUnion checks that, for every body in dir, the body's subjects
// are the union of its events' and of the users their messages mention
// (but the bot itself), and the same as the subjects of the body decoded
// whole (unmarshalBodySubjects, as BodySubjects did before it scanned the
// bytes) plus those mentioned users.
func checkSubjectUnion(t *testing.T, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bodies in %s: %v", dir, err)
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cb, err := line.ParseCallback(body)
		if err != nil {
			continue
		}
		var union, mentioned []string
		for _, raw := range cb.Events {
			e := line.DecodeEvent(raw)
			union = append(union, e.Subjects()...)
			if e.Message != nil && e.Message.Mention != nil {
				for _, m := range e.Message.Mention.Mentionees {
					if s := "user:" + m.UserID; line.ValidSubject(s) && !m.IsSelf {
						mentioned = append(mentioned, s)
					}
				}
			}
		}
		union = sortedSet(append(union, mentioned...))
		got := line.BodySubjects(body)
		if !slices.Equal(got, union) {
			t.Errorf("%s: body %v, events %v", filepath.Base(f), got, union)
		}
		if before := sortedSet(append(unmarshalBodySubjects(body), mentioned...)); !slices.Equal(got, before) {
			t.Errorf("%s: body %v, decoded whole %v", filepath.Base(f), got, before)
		}
	}
}

func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// unmarshalBodySubjects is BodySubjects as it was: the body decoded whole,
// the subjects read from each event's source and joined or left members.
// One malformed event made it return nil; it did not read mentions.
func unmarshalBodySubjects(body []byte) []string {
	var cb struct {
		Events []struct {
			Source *line.Source  `json:"source"`
			Joined *line.Members `json:"joined"`
			Left   *line.Members `json:"left"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &cb) != nil {
		return nil
	}
	var out []string
	add := func(s *line.Source) {
		if s == nil {
			return
		}
		for _, c := range []string{"user:" + s.UserID, "group:" + s.GroupID, "room:" + s.RoomID} {
			if line.ValidSubject(c) {
				out = append(out, c)
			}
		}
	}
	for _, e := range cb.Events {
		add(e.Source)
		for _, m := range []*line.Members{e.Joined, e.Left} {
			if m != nil {
				for i := range m.Members {
					add(&m.Members[i])
				}
			}
		}
	}
	return sortedSet(out)
}

// TestBodySubjectsRobust: every LINE id of a body is a subject, wherever it
// is: beside a malformed event, as a mentioned user, in a member list of
// an event that is malformed itself, in a field of an event type not known
// yet, escaped; the bot's own id (the destination) is not, even mentioned.
func TestBodySubjectsRobust(t *testing.T) {
	const (
		bot   = "Ub7f3e1a9c2d4405f8e6a1b2c3d4e5f60"
		u1    = "U1f0e2d3c4b5a69788796a5b4c3d2e1f0"
		u2    = "U2a3b4c5d6e7f80918273645546372819"
		u3    = "U3c4d5e6f708192a3b4c5d6e7f8091a2b"
		group = "C91dc9896d9b5fced2730b33ac7616614"
		room  = "Rb0a1c2d3e4f5061728394a5b6c7d8e9f"
	)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"a malformed event beside a valid one",
			`{"destination":"` + bot + `","events":[{"type":"message","source":{"type":"user","userId":"` + u1 + `"},"message":{"type":"text","id":"1","text":"secret"}},{"type":"message","source":"oops"}]}`,
			[]string{"user:" + u1}},
		{"a mentioned user, and the bot mentioned",
			`{"destination":"` + bot + `","events":[{"type":"message","source":{"type":"group","groupId":"` + group + `","userId":"` + u1 + `"},"message":{"type":"text","text":"@you @me @U9","mention":{"mentionees":[{"index":0,"length":4,"type":"user","userId":"` + u2 + `"},{"index":5,"length":3,"type":"user","userId":"` + bot + `","isSelf":true},{"index":9,"length":3,"type":"user","userId":"U9"}]}}}]}`,
			[]string{"group:" + group, "user:" + u1, "user:" + u2, "user:U9"}},
		{"members of a malformed event",
			`{"destination":"` + bot + `","events":[{"type":"memberJoined","source":7,"joined":{"members":[{"type":"user","userId":"` + u3 + `"}]}}]}`,
			[]string{"user:" + u3}},
		{"an event type not known yet, and a room",
			`{"destination":"` + bot + `","events":[{"type":"somethingNew","source":{"type":"room","roomId":"` + room + `"},"things":[{"owner":"` + u1 + `"}, "` + u2 + `"]}]}`,
			[]string{"room:" + room, "user:" + u1, "user:" + u2}},
		{"escaped, with white space",
			"{ \"destination\" : \"" + bot + "\" ,\n \"events\" : [ { \"source\" : { \"userId\" :\t\"\\u0055" + u1[1:] + "\" , \"groupId\": \"C\\u00391\" } } ] }",
			[]string{"group:C91", "user:" + u1}},
		{"a destination that is not a bot's id excludes nothing",
			`{"destination":"U1","events":[{"source":{"type":"user","userId":"U1"}}]}`,
			[]string{"user:U1"}},
		{"a body that is not JSON: what is there is read",
			`{"events":[{"source":{"userId":"` + u1 + `"}},{"source":`,
			[]string{"user:" + u1}},
		{"neither keys, nor ids in longer strings, nor other 33-character strings",
			`{"events":[{"` + u1 + `":1,"text":"hi ` + u2 + `","id":"X2a3b4c5d6e7f80918273645546372819","t2":"U2a3b4c5d6e7f8091827364554637281z"}]}`,
			nil},
		{"a quote escaped in a string does not end it",
			`{"events":[{"text":"say \"` + u1 + `\" and \\","userId":"` + u2 + `"}]}`,
			[]string{"user:" + u2}},
	}
	for _, tt := range tests {
		if got := line.BodySubjects([]byte(tt.body)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	// Decoded whole, the first body had no subject at all.
	if got := unmarshalBodySubjects([]byte(tests[0].body)); got != nil {
		t.Errorf("decoded whole: %v", got)
	}
}

// TestBodySubjectsAllocs: reading the subjects allocates the subjects and
// the slice that holds them, little more: it runs on every webhook before
// the answer.
func TestBodySubjectsAllocs(t *testing.T) {
	body, err := os.ReadFile(filepath.Join(corpus.Webhooks(t), "batch-group.json"))
	if err != nil {
		t.Fatal(err)
	}
	n := len(line.BodySubjects(body))
	if n < 2 {
		t.Fatalf("%d subjects", n)
	}
	if a := testing.AllocsPerRun(50, func() { line.BodySubjects(body) }); a > float64(n+1) {
		t.Errorf("%.0f allocations for %d subjects", a, n)
	}
}

func benchmarkSubjects(b *testing.B, fn func([]byte) []string) {
	dir := corpus.Webhooks(b)
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		b.Fatalf("no bodies in %s: %v", dir, err)
	}
	var bodies [][]byte
	size := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, body)
		size += len(body)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		for _, body := range bodies {
			fn(body)
		}
	}
}

// BenchmarkBodySubjects reads the subjects of the module's webhook bodies
// by scanning their bytes; BenchmarkBodySubjectsUnmarshal, by decoding
// them whole, as before.
func BenchmarkBodySubjects(b *testing.B)          { benchmarkSubjects(b, line.BodySubjects) }
func BenchmarkBodySubjectsUnmarshal(b *testing.B) { benchmarkSubjects(b, unmarshalBodySubjects) }

func TestParseSubject(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"user:U1", "user:U1", true},
		{" U4af4980629 ", "user:U4af4980629", true},
		{"Cabc", "group:Cabc", true},
		{"R9", "room:R9", true},
		{"system", "system", false},
		{"X1", "X1", false},
		{"user:", "user:", false},
		{"", "", false},
	} {
		if got, ok := line.ParseSubject(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("ParseSubject(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
