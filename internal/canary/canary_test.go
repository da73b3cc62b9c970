package canary

import (
	"slices"
	"strings"
	"testing"
)

func TestMarkers(t *testing.T) {
	m1, m2 := NewMarker(), NewMarker()
	if m1 == m2 || !strings.HasPrefix(m1, MarkerPrefix) || len(m1) != markerLen {
		t.Fatalf("markers %q, %q", m1, m2)
	}
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"none", "hello", nil},
		{"prefix alone", "lgcanary- is our prefix", nil},
		{"not a uuid", MarkerPrefix + strings.Repeat("z", 36), nil},
		{"cut short", m1[:markerLen-1], nil},
		{"one", "linegate canary " + m1, []string{m1}},
		{"in JSON", `{"text":"x` + m1 + `y"}`, []string{m1}},
		{"twice, and another", m1 + " " + m2 + " " + m1, []string{m1, m2}},
		{"prefix then one", MarkerPrefix + m2, []string{m2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Markers([]byte(tc.in)); !slices.Equal(got, tc.want) {
				t.Errorf("Markers(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
