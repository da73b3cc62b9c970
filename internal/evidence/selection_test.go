package evidence

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSelectionJSON: manifest.json says "open" for an end of the range not
// given (never the year 1), and reads the manifests of older bundles.
func TestSelectionJSON(t *testing.T) {
	from := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		sel  Selection
		want string
	}{
		{"open", Selection{}, `{"from":"open","to":"open"}`},
		{"from", Selection{From: from, User: "U1"}, `{"from":"2026-11-26T00:00:00Z","to":"open","user":"U1"}`},
		{"both", Selection{From: from, To: from.Add(24 * time.Hour), Channel: "shop", MessageID: "42"},
			`{"from":"2026-11-26T00:00:00Z","to":"2026-11-27T00:00:00Z","channel":"shop","message_id":"42"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got %s, want %s", b, tc.want)
			}
			if strings.Contains(string(b), "0001") {
				t.Errorf("year 1 in %s", b)
			}
			var back Selection
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !back.From.Equal(tc.sel.From) || !back.To.Equal(tc.sel.To) || back.Channel != tc.sel.Channel ||
				back.User != tc.sel.User || back.MessageID != tc.sel.MessageID {
				t.Errorf("read back %+v, want %+v", back, tc.sel)
			}
		})
	}
	t.Run("older bundle", func(t *testing.T) {
		var s Selection
		old := `{"From":"0001-01-01T00:00:00Z","To":"2026-11-27T00:00:00Z","Channel":"","User":"U1","MessageID":""}`
		if err := json.Unmarshal([]byte(old), &s); err != nil {
			t.Fatal(err)
		}
		if !s.From.IsZero() || s.To.IsZero() || s.User != "U1" {
			t.Errorf("read %+v", s)
		}
	})
}
