package ledgertest

import (
	"context"
	"errors"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
)

// testAppendGroups: several callers' groups in one transaction; a refused
// group leaves no record and no effect behind, the others commit, with
// dense indices in the order of the groups.
func testAppendGroups(t *testing.T, h Harness) {
	s := open(t, h)
	settings, ok := s.(interface {
		Setting(ctx context.Context, key string) (string, error)
	})
	if !ok {
		t.Skip("the store keeps no settings")
	}
	ctx := context.Background()
	a, b, c, d := records(0, 2), records(2, 1), records(3, 1), records(4, 3)
	firsts, errs, err := s.AppendGroups(ctx, []ledger.Group{
		{Records: a},
		{Records: b, Effects: []ledger.Effect{outbound.SetSetting{Key: "refused", Value: "on"}, unknownEffect{}}},
		{Records: c, Effects: []ledger.Effect{outbound.SetSetting{Key: "kept", Value: "on"}}},
		{Records: d},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("errors %v; want only the second group's", errs)
	}
	if !errors.Is(errs[1], ledger.ErrUnsupportedEffect) {
		t.Errorf("second group: %v, want ErrUnsupportedEffect", errs[1])
	}
	if firsts[0] != 0 || firsts[2] != 2 || firsts[3] != 3 {
		t.Errorf("first indices %v, want 0, -, 2, 3", firsts)
	}
	want := append(append(append([]ledger.Record{}, a...), c...), d...)
	var got []ledger.Record
	for rec, err := range s.Records(ctx, 0, 7) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rec)
	}
	if n, err := s.Count(ctx); err != nil || n != uint64(len(want)) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(want))
	}
	for i, rec := range got[:len(want)] {
		if string(rec.Payload) != string(want[i].Payload) {
			t.Errorf("record %d: payload %q, want %q", i, rec.Payload, want[i].Payload)
		}
	}
	if v, err := settings.Setting(ctx, "kept"); err != nil || v != "on" {
		t.Errorf("the committed group's setting = %q, %v", v, err)
	}
	if v, err := settings.Setting(ctx, "refused"); err != nil || v != "" {
		t.Errorf("the refused group's setting = %q, %v; want unset", v, err)
	}
}
