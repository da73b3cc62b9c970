package ledger

import (
	"testing"
	"time"
)

// TestNextAnchor names each period's anchor: daily ones by their date in
// the anchor time zone, shorter ones by their start in UTC.
func TestNextAnchor(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no time zone data:", err)
	}
	now := time.Date(2026, 11, 26, 20, 30, 0, 0, time.UTC) // 05:30 on the 27th in Tokyo
	tests := []struct {
		name  string
		loc   *time.Location
		every time.Duration
		next  time.Time
		want  string
	}{
		{"daily UTC", time.UTC, 24 * time.Hour, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), "2026-11-26"},
		{"daily Tokyo", tokyo, 24 * time.Hour, time.Date(2026, 11, 28, 0, 0, 0, 0, tokyo), "2026-11-27"},
		{"hourly", tokyo, time.Hour, time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC), "2026-11-26T200000Z"},
		{"every second", time.UTC, time.Second, now.Add(time.Second), "2026-11-26T203000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, name := nextAnchor(now, tt.loc, tt.every)
			if !next.Equal(tt.next) || name != tt.want {
				t.Errorf("nextAnchor = %v, %q; want %v, %q", next, name, tt.next, tt.want)
			}
		})
	}
}
