package line_test

import (
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
// are the union of its events'.
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
		var union []string
		for _, raw := range cb.Events {
			union = append(union, line.DecodeEvent(raw).Subjects()...)
		}
		slices.Sort(union)
		union = slices.Compact(union)
		if got := line.BodySubjects(body); !slices.Equal(got, union) {
			t.Errorf("%s: body %v, events %v", filepath.Base(f), got, union)
		}
	}
}
