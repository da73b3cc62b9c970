package retention

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestNewHold(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	tests := []struct {
		name                               string
		channel, subject, from, to, reason string
		want                               Hold
		bad                                string
	}{
		{name: "all", reason: "case 1", want: Hold{Reason: "case 1", CreatedMs: now.UnixMilli()}},
		{name: "range", channel: "c", subject: "user:U1", from: "2026-11-26", to: "2026-11-27T09:00:00+09:00", reason: "case 2",
			want: Hold{Channel: "c", Subject: "user:U1", FromMs: 1795651200000, ToMs: 1795737600000, Reason: "case 2", CreatedMs: now.UnixMilli()}},
		{name: "no reason", subject: "user:U1", bad: "a hold needs a reason (a case number)"},
		{name: "system", subject: "system", reason: "r", bad: "subject: want user:, group: or room: and a LINE id"},
		{name: "bare id", subject: " U1", reason: "r", want: Hold{Subject: "user:U1", Reason: "r", CreatedMs: now.UnixMilli()}},
		{name: "bare group", subject: "Cabc", reason: "r", want: Hold{Subject: "group:Cabc", Reason: "r", CreatedMs: now.UnixMilli()}},
		{name: "not an id", subject: "X1", reason: "r", bad: "subject: want user:, group: or room: and a LINE id"},
		{name: "empty range", from: "2026-11-27", to: "2026-11-26", reason: "r", bad: "from is not before to: the range is empty"},
		{name: "bad time", from: "yesterday", reason: "r", bad: "from, to: want 2026-11-26 or an RFC 3339 time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHold(tt.channel, tt.subject, tt.from, tt.to, tt.reason, now)
			if tt.bad != "" {
				if !errors.Is(err, ErrBadHold) || err.Error() != tt.bad {
					t.Errorf("NewHold = %v, want %q (ErrBadHold)", err, tt.bad)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(h, tt.want) {
				t.Errorf("NewHold = %+v, %v; want %+v", h, err, tt.want)
			}
		})
	}
	h := Hold{Channel: "c", Subject: "user:U1", Reason: "r"}
	if got := h.Subjects(); !reflect.DeepEqual(got, []string{"user:U1"}) {
		t.Errorf("Subjects = %v", got)
	}
	if got := (Hold{}).Subjects(); got != nil {
		t.Errorf("Subjects of a hold of every subject = %v, want none", got)
	}
}

// TestBadRequests: requests that name no subject, or no kind, are told
// apart from a store that fails.
func TestBadRequests(t *testing.T) {
	ctx := context.Background()
	s := &fakeStore{}
	for _, tt := range []struct {
		subject string
		kind    RequestKind
		want    error
	}{
		{"system", DeletionRequest, ErrNotSubject},
		{"user:", DeletionRequest, ErrNotSubject},
		{"user:U1", "forget", ErrUnknownRequest},
	} {
		if _, err := Apply(ctx, s, Presets(), tt.subject, tt.kind, time.Now()); !errors.Is(err, tt.want) {
			t.Errorf("Apply(%q, %q) = %v, want %v", tt.subject, tt.kind, err, tt.want)
		}
	}
	if _, err := Shred(ctx, s, nil, nil, "system", nil, time.Now()); !errors.Is(err, ErrNotSubject) {
		t.Errorf("Shred(system) = %v, want ErrNotSubject", err)
	}
}
