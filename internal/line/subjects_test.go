package line_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/linegate/linegate/internal/line"
)

func TestBodySubjects(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(fixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := map[string][]string{
		"member_joined.json": {"group:C1234567890", "user:U111111"},
		"text-group.json":    {"group:u206d25c2ea6bd87c17655609a1c37cb8"},
	}
	for name, want := range tests {
		if got := line.BodySubjects(read(name)); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	// For every fixture, the body's subjects are the union of its events'.
	files, _ := filepath.Glob(filepath.Join(fixtures, "*.json"))
	for _, f := range files {
		body, _ := os.ReadFile(f)
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
	for _, bad := range []string{``, `[]`, `{"events":[{"source":{"type":"user","userId":"U 1"}}]}`} {
		if got := line.BodySubjects([]byte(bad)); len(got) != 0 {
			t.Errorf("%q: %v", bad, got)
		}
	}
}
