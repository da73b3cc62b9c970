package retention

import (
	"context"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// fakeStore holds candidates for Apply's arithmetic; the SQLite store's
// side of it is tested end to end in cmd/linegate.
type fakeStore struct {
	Store
	recs []Candidate
	set  map[uint64]int64
}

func (f *fakeStore) SubjectRecords(_ context.Context, subject string, from uint64, limit int) ([]Candidate, error) {
	var out []Candidate
	for _, c := range f.recs {
		if c.Index >= from && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}

func TestApply(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_000)
	day := int64(24 * time.Hour / time.Millisecond)
	rec := func(i uint64, class string, ageDays, deleteAfter int64) Candidate {
		return Candidate{Index: i, Class: class, TimeMs: at.UnixMilli() - ageDays*day, DeleteAfterMs: deleteAfter}
	}
	yearMs := int64(year / time.Millisecond)
	tests := []struct {
		name string
		kind RequestKind
		c    Candidate
		want int64 // 0: unchanged
	}{
		{"APPI deletion: a year after the request", DeletionRequest, rec(0, "jp-appi", 10, 0), at.UnixMilli() + yearMs},
		{"APPI deletion: an earlier time stays", DeletionRequest, rec(1, "jp-appi", 10, at.UnixMilli()+day), 0},
		{"APPI withdrawal: no rule", Withdrawal, rec(2, "jp-appi", 10, 0), 0},
		{"PDPA deletion: the statute period stays", DeletionRequest, rec(3, "th-pdpa", 10, at.UnixMilli()+9*yearMs), 0},
		{"PIPA withdrawal: not before 3 years", Withdrawal, rec(4, "tw-pipa", 10, at.UnixMilli()+4*yearMs), at.UnixMilli() - 10*day + 3*yearMs},
		{"PIPA withdrawal after 3 years: now", Withdrawal, rec(5, "tw-pipa", 4*365, at.UnixMilli()+yearMs), at.UnixMilli()},
		{"unknown class: no rule", DeletionRequest, rec(6, "other", 1, 0), 0},
	}
	for _, tt := range tests {
		f := &fakeStore{recs: []Candidate{tt.c}, set: map[uint64]int64{}}
		rep, err := Apply(context.Background(), f, Presets(), "user:U1", tt.kind, at)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for _, c := range rep.Effect.Records {
			f.set[c.Index] = c.DeleteAfterMs
		}
		got := f.set[tt.c.Index]
		if got != tt.want || (rep.Changed == 1) != (tt.want != 0) {
			t.Errorf("%s: delete-after %d (changed %d), want %d", tt.name, got, rep.Changed, tt.want)
		}
	}
	f := &fakeStore{set: map[uint64]int64{}}
	for _, bad := range []string{"system", "U1", "user:"} {
		if _, err := Apply(context.Background(), f, Presets(), bad, DeletionRequest, at); err == nil {
			t.Errorf("Apply for %q succeeded", bad)
		}
	}
}

func TestHoldCovers(t *testing.T) {
	c := Candidate{Channel: "a", TimeMs: 100, Subjects: []string{"group:C1", "user:U1"}}
	tests := []struct {
		h    Hold
		want bool
	}{
		{Hold{}, true},
		{Hold{Subject: "user:U1"}, true},
		{Hold{Subject: "user:U2"}, false},
		{Hold{Subject: "group:C1", Channel: "a"}, true},
		{Hold{Subject: "user:U1", Channel: "b"}, false},
		{Hold{Subject: "user:U1", FromMs: 101}, false},
		{Hold{Subject: "user:U1", ToMs: 101}, true},
		{Hold{Subject: "user:U1", ReleasedMs: 5}, false},
	}
	for _, tt := range tests {
		if got := tt.h.Covers(c); got != tt.want {
			t.Errorf("%+v covers = %v, want %v", tt.h, got, tt.want)
		}
	}
	if ledger.ValidSubject("user:U 1") {
		t.Error("a subject with a space is valid")
	}
}
