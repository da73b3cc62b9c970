package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
)

// StateHarness opens stores for RunState.
type StateHarness struct {
	Harness
	// DropRecord deletes the row of record index behind the store's back,
	// as damage would, leaving a gap in the log. Nil skips the subtests
	// that need a gap.
	DropRecord func(t *testing.T, s ledger.Store, index uint64)
}

type stateTest struct {
	name string
	fn   func(*testing.T, StateHarness)
}

// RunState runs the conformance suite of what the stores keep beside the
// log, and of the ledger.Store contract's corners: every effect of
// Store.Append, pipeline.Store (and pipeline.Claimer), outbound.State,
// rules.Cooldowns, retention.Store and keys.Store. A store runs it beside
// Run; the subtests of an interface the store does not implement skip.
func RunState(t *testing.T, h StateHarness) {
	groups := []struct {
		name  string
		tests []stateTest
	}{
		{"Ledger", []stateTest{
			{"AppendUnsupportedEffectStoresNothing", testAppendUnsupportedEffect},
			{"AppendEffectsInOrder", testAppendEffectsInOrder},
			{"RecordsGap", testRecordsGap},
			{"RecordsPastTheEnd", testRecordsPastTheEnd},
			{"ReadLeavesGap", testReadLeavesGap},
			{"IntegrateSameSize", testIntegrateSameSize},
			{"IntegrateStale", testIntegrateStale},
		}},
		{"Pipeline", []stateTest{
			{"Cursor", testCursor},
			{"EnqueueDedup", testEnqueueDedup},
			{"EnqueueConcurrent", testEnqueueConcurrent},
			{"Pending", testPending},
			{"ForgetKeys", testForgetKeys},
			{"DequeueEffect", testDequeueEffect},
			{"DequeueAtomic", testDequeueAtomic},
			{"DequeueOwner", testDequeueOwner},
			{"ClaimConversations", testClaimConversations},
			{"Durable", testPipelineDurable},
		}},
		{"Outbound", []stateTest{
			{"Setting", testSetting},
			{"Consent", testConsent},
			{"ConsentInOneAppend", testConsentInOneAppend},
			{"Durable", testOutboundDurable},
		}},
		{"Cooldowns", []stateTest{
			{"Cooldown", testCooldown},
			{"ForgetCooldowns", testForgetCooldowns},
		}},
		{"Retention", []stateTest{
			{"Expired", testExpired},
			{"SetDeleteAfter", testSetDeleteAfter},
			{"DeletePayloads", testDeletePayloads},
			{"DeletePayloadsHoldAddedMeanwhile", testDeletePayloadsHoldAdded},
			{"SubjectRecords", testSubjectRecords},
			{"SubjectRecordsGap", testSubjectRecordsGap},
			{"IndexSubjectsBatch", testIndexSubjectsBatch},
			{"DestroyKeyInCommit", testDestroyKeyInCommit},
			{"DestroyKey", testDestroyKey},
			{"AddHold", testAddHold},
			{"ReleaseHold", testReleaseHold},
			{"Durable", testRetentionDurable},
		}},
		{"Keys", []stateTest{
			{"AddSubjectKeysConflict", testAddSubjectKeysConflict},
			{"AddSubjectKeysConcurrent", testAddSubjectKeysConcurrent},
			{"ListSubjectKeysPaging", testListSubjectKeysPaging},
			{"RewrapSubjectKey", testRewrapSubjectKey},
		}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tt := range g.tests {
				t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
			}
		})
	}
}

// unknownEffect is an effect no store knows.
type unknownEffect struct{}

func (unknownEffect) EffectName() string { return "an effect of no package" }

// t0 is the time the state tests start from.
var t0 = time.UnixMilli(1_700_000_000_000)

// entry returns a webhook record's entry at t0+i ms, on channel "c", of
// retention class "r".
func entry(i int) ledger.Entry {
	return ledger.Entry{Kind: ledger.KindWebhook, Time: t0.Add(time.Duration(i) * time.Millisecond), Channel: "c", Retention: "r",
		Payload: fmt.Appendf(nil, "payload %d", i)}
}

func newRecord(t *testing.T, e ledger.Entry) ledger.Record {
	t.Helper()
	rec, err := ledger.NewRecord(e)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// appendN appends n plain records and returns the first index.
func appendN(t *testing.T, s ledger.Store, n int) uint64 {
	t.Helper()
	var recs []ledger.Record
	for i := range n {
		recs = append(recs, newRecord(t, entry(i)))
	}
	first, err := s.Append(context.Background(), recs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return first
}

// appendWith appends one record with effects, and fails the test on an
// error.
func appendWith(t *testing.T, s ledger.Store, effects ...ledger.Effect) uint64 {
	t.Helper()
	first, err := s.Append(context.Background(), []ledger.Record{newRecord(t, entry(0))}, effects...)
	if err != nil {
		t.Fatalf("Append with %s: %v", effectNames(effects), err)
	}
	return first
}

// refused appends one record with effects, expects an error matching
// want (any error if want is nil), and checks that nothing was stored.
func refused(t *testing.T, s ledger.Store, want error, effects ...ledger.Effect) error {
	t.Helper()
	ctx := context.Background()
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Append(ctx, []ledger.Record{newRecord(t, entry(0))}, effects...)
	switch {
	case err == nil:
		t.Errorf("Append with %s succeeded, want an error", effectNames(effects))
	case want != nil && !errors.Is(err, want):
		t.Errorf("Append with %s: err = %v, want %v", effectNames(effects), err, want)
	}
	if m, err := s.Count(ctx); err != nil || m != n {
		t.Errorf("Count after a refused Append = %d, %v; want %d: the record was stored", m, err, n)
	}
	for r, err := range s.Records(ctx, n, n+1) {
		if err != nil || r.Leaf != nil {
			t.Errorf("record %d after a refused Append: leaf %x, %v; want a gap", n, r.Leaf, err)
		}
	}
	return err
}

func effectNames(effects []ledger.Effect) string {
	var b bytes.Buffer
	for i, e := range effects {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.EffectName())
	}
	if b.Len() == 0 {
		return "no effect"
	}
	return b.String()
}

// readRecords collects s.Records(start, end).
func readRecords(t *testing.T, s interface {
	Records(context.Context, uint64, uint64) iter.Seq2[ledger.Record, error]
}, start, end uint64) []ledger.Record {
	t.Helper()
	var out []ledger.Record
	for r, err := range s.Records(context.Background(), start, end) {
		if err != nil {
			t.Fatalf("Records(%d, %d): %v", start, end, err)
		}
		out = append(out, r)
	}
	return out
}

func outboundState(t *testing.T, s ledger.Store) outbound.State {
	st, ok := s.(outbound.State)
	if !ok {
		t.Skip("the store keeps no outbound state")
	}
	return st
}

func retentionStore(t *testing.T, s ledger.Store) retention.Store {
	rs, ok := s.(retention.Store)
	if !ok {
		t.Skip("the store keeps no retention state")
	}
	return rs
}

// cooldowns is rules.Cooldowns, and the clean-up serve runs.
type cooldowns interface {
	rules.Cooldowns
	ForgetCooldowns(ctx context.Context, before time.Time) error
}

func cooldownStore(t *testing.T, s ledger.Store) cooldowns {
	cs, ok := s.(cooldowns)
	if !ok {
		t.Skip("the store keeps no rule cooldowns")
	}
	return cs
}

// testAppendUnsupportedEffect: an Append with an effect the store does not
// know stores nothing, neither its records nor the effects before it, and
// uses up no index.
func testAppendUnsupportedEffect(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	appendN(t, s, 2)
	refused(t, s, ledger.ErrUnsupportedEffect, unknownEffect{})
	if _, err := s.Append(ctx, records(2, 3), unknownEffect{}); !errors.Is(err, ledger.ErrUnsupportedEffect) {
		t.Errorf("Append of 3 records with an unknown effect: err = %v, want ErrUnsupportedEffect", err)
	}
	if _, err := s.Append(ctx, nil, unknownEffect{}); !errors.Is(err, ledger.ErrUnsupportedEffect) {
		t.Errorf("Append of an unknown effect alone: err = %v, want ErrUnsupportedEffect", err)
	}
	if st, ok := s.(outbound.State); ok {
		refused(t, s, ledger.ErrUnsupportedEffect, outbound.SetSetting{Key: "k", Value: "v"}, unknownEffect{})
		if v, err := st.Setting(ctx, "k"); err != nil || v != "" {
			t.Errorf("Setting after a refused Append = %q, %v; want the effect before the unknown one undone", v, err)
		}
	}
	if n, err := s.Count(ctx); err != nil || n != 2 {
		t.Fatalf("Count = %d, %v; want 2", n, err)
	}
	if first, err := s.Append(ctx, records(2, 1)); err != nil || first != 2 {
		t.Errorf("Append after refused ones = %d, %v; want index 2: indices stay dense", first, err)
	}
}

// testAppendEffectsInOrder: effects apply in order, after the records.
func testAppendEffectsInOrder(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	st := outboundState(t, s)
	appendWith(t, s, outbound.SetSetting{Key: "k", Value: "1"}, outbound.SetSetting{Key: "k", Value: "2"})
	if v, err := st.Setting(ctx, "k"); err != nil || v != "2" {
		t.Errorf("Setting = %q, %v; want the last effect's value 2", v, err)
	}
	// An effect alone, without records.
	if _, err := s.Append(ctx, nil, outbound.SetSetting{Key: "k", Value: "3"}); err != nil {
		t.Fatalf("Append of an effect alone: %v", err)
	}
	if v, err := st.Setting(ctx, "k"); err != nil || v != "3" {
		t.Errorf("Setting = %q, %v; want 3", v, err)
	}
}

// testRecordsGap: a missing index is yielded as a Record with a nil Leaf,
// by the store and by a snapshot of it.
func testRecordsGap(t *testing.T, h StateHarness) {
	if h.DropRecord == nil {
		t.Skip("the harness cannot damage a store")
	}
	ctx := context.Background()
	s := open(t, h.Harness)
	want := records(0, 6)
	if _, err := s.Append(ctx, want); err != nil {
		t.Fatal(err)
	}
	h.DropRecord(t, s, 0)
	h.DropRecord(t, s, 3)
	check := func(name string, got []ledger.Record) {
		if len(got) != 8 {
			t.Fatalf("%s: Records(0, 8) yielded %d records, want 8", name, len(got))
		}
		for i, r := range got {
			if r.Index != uint64(i) {
				t.Errorf("%s: record %d has Index %d", name, i, r.Index)
			}
			missing := i == 0 || i == 3 || i >= 6
			switch {
			case missing && (r.Leaf != nil || r.Payload != nil || r.Nonce != nil):
				t.Errorf("%s: missing record %d yielded with leaf %x, payload %q", name, i, r.Leaf, r.Payload)
			case !missing && (!bytes.Equal(r.Leaf, want[i].Leaf) || !bytes.Equal(r.Payload, want[i].Payload) || !bytes.Equal(r.Nonce, want[i].Nonce)):
				t.Errorf("%s: record %d = %+v, want %+v", name, i, r, want[i])
			}
		}
	}
	check("store", readRecords(t, s, 0, 8))
	v, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	check("snapshot", readRecords(t, v, 0, 8))
	// A caller that stops at the gap.
	for r, err := range s.Records(ctx, 2, 6) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Leaf == nil {
			if r.Index != 3 {
				t.Errorf("first gap from 2 at %d, want 3", r.Index)
			}
			break
		}
	}
}

// testRecordsPastTheEnd: indices not appended yet are gaps too.
func testRecordsPastTheEnd(t *testing.T, h StateHarness) {
	s := open(t, h.Harness)
	appendN(t, s, 2)
	got := readRecords(t, s, 1, 4)
	if len(got) != 3 || got[0].Leaf == nil || got[1].Leaf != nil || got[2].Leaf != nil || got[1].Index != 2 || got[2].Index != 3 {
		t.Errorf("Records(1, 4) of 2 records = %+v; want record 1, then gaps at 2 and 3", got)
	}
	if got := readRecords(t, s, 5, 5); len(got) != 0 {
		t.Errorf("Records(5, 5) yielded %d records", len(got))
	}
}

// testReadLeavesGap: ReadLeaves fails with ErrNotFound if any record of
// the range is missing, and reads the ranges around the gap.
func testReadLeavesGap(t *testing.T, h StateHarness) {
	if h.DropRecord == nil {
		t.Skip("the harness cannot damage a store")
	}
	ctx := context.Background()
	s := open(t, h.Harness)
	want := records(0, 6)
	if _, err := s.Append(ctx, want); err != nil {
		t.Fatal(err)
	}
	h.DropRecord(t, s, 0)
	h.DropRecord(t, s, 3)
	for _, r := range [][2]uint64{{0, 1}, {0, 6}, {2, 4}, {3, 4}, {1, 6}} {
		if leaves, err := s.ReadLeaves(ctx, r[0], r[1]); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("ReadLeaves(%d, %d) over a gap = %d leaves, %v; want ErrNotFound", r[0], r[1], len(leaves), err)
		}
	}
	for _, r := range [][2]uint64{{1, 3}, {4, 6}, {2, 3}} {
		leaves, err := s.ReadLeaves(ctx, r[0], r[1])
		if err != nil || uint64(len(leaves)) != r[1]-r[0] {
			t.Errorf("ReadLeaves(%d, %d) beside the gaps = %d leaves, %v", r[0], r[1], len(leaves), err)
			continue
		}
		for i, l := range leaves {
			if !bytes.Equal(l, want[r[0]+uint64(i)].Leaf) {
				t.Errorf("ReadLeaves(%d, %d): leaf %d differs", r[0], r[1], r[0]+uint64(i))
			}
		}
	}
}

// testIntegrateSameSize: the compare-and-swap is on the exact previous
// head (see ledger.Store.Integrate): from the stored head, a head of the
// same size replaces it (as the Ledger's first signature of the empty
// tree does), but from a head of the stored size with another hash, the
// swap is a conflict.
func testIntegrateSameSize(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	empty := ledger.TreeHead{Size: 0, Hash: [32]byte{0xe3}, Checkpoint: []byte("cp0\n")}
	if err := s.Integrate(ctx, ledger.TreeHead{}, empty, nil); err != nil {
		t.Fatalf("Integrate of the empty tree from the new store's head: %v", err)
	}
	head1 := ledger.TreeHead{Size: 2, Hash: [32]byte{1}, Checkpoint: []byte("cp1\n")}
	tile1 := bytes.Repeat([]byte{1}, 64)
	if err := s.Integrate(ctx, empty, head1, []ledger.Tile{{Level: 0, Index: 0, Data: tile1}}); err != nil {
		t.Fatal(err)
	}
	other := ledger.TreeHead{Size: 2, Hash: [32]byte{2}, Checkpoint: []byte("cp1-other\n")}
	otherTile := bytes.Repeat([]byte{2}, 64)
	fork := ledger.TreeHead{Size: 2, Hash: [32]byte{7}}
	if err := s.Integrate(ctx, fork, other, []ledger.Tile{{Level: 0, Index: 0, Data: otherTile}}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("Integrate from the stored size with another hash: %v, want ErrConflict", err)
	}
	if got, err := s.TreeHead(ctx); err != nil || got.Hash != head1.Hash {
		t.Fatalf("TreeHead after a conflict = %+v, %v; want it unchanged", got, err)
	}
	if d, err := s.ReadTile(ctx, 0, 0); err != nil || !bytes.Equal(d, tile1) {
		t.Errorf("tile after a conflict = %x, %v; want it unchanged", d, err)
	}
	if err := s.Integrate(ctx, head1, other, []ledger.Tile{{Level: 0, Index: 0, Data: otherTile}}); err != nil {
		t.Fatalf("Integrate from the stored head to another head of size 2: %v; the store leaves that judgement to the sequencer", err)
	}
	got, err := s.TreeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 2 || got.Hash != other.Hash || !bytes.Equal(got.Checkpoint, other.Checkpoint) {
		t.Errorf("TreeHead = %+v, want %+v", got, other)
	}
	var cps []string
	for cp, err := range s.Checkpoints(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, string(cp))
	}
	if want := []string{"cp0\n", "cp1\n", "cp1-other\n"}; fmt.Sprint(cps) != fmt.Sprint(want) {
		t.Errorf("Checkpoints = %q, want %q", cps, want)
	}
}

// testIntegrateStale: an Integrate from any size but the stored one
// fails with ErrConflict and writes nothing, whether it would grow the
// tree, keep its size, or go back.
func testIntegrateStale(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	head := ledger.TreeHead{Size: 4, Hash: [32]byte{4}, Checkpoint: []byte("cp4\n")}
	tile := bytes.Repeat([]byte{4}, 4*32)
	if err := s.Integrate(ctx, ledger.TreeHead{}, head, []ledger.Tile{{Level: 0, Index: 0, Data: tile}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		old  ledger.TreeHead
		head ledger.TreeHead
	}{
		{"grow from an older size", ledger.TreeHead{Size: 2}, ledger.TreeHead{Size: 6, Hash: [32]byte{6}, Checkpoint: []byte("cp6\n")}},
		{"same size from an older size", ledger.TreeHead{Size: 2}, ledger.TreeHead{Size: 4, Hash: [32]byte{5}, Checkpoint: []byte("cp4-other\n")}},
		{"from a size never stored", ledger.TreeHead{Size: 5}, ledger.TreeHead{Size: 6, Hash: [32]byte{6}, Checkpoint: []byte("cp6\n")}},
		{"from the stored size with another hash", ledger.TreeHead{Size: 4, Hash: [32]byte{8}}, ledger.TreeHead{Size: 6, Hash: [32]byte{6}, Checkpoint: []byte("cp6\n")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.Integrate(ctx, c.old, c.head, []ledger.Tile{{Level: 0, Index: 0, Data: bytes.Repeat([]byte{9}, int(c.head.Size)*32)}})
			if !errors.Is(err, ledger.ErrConflict) {
				t.Errorf("Integrate(%d, size %d) over size 4: err = %v, want ErrConflict", c.old.Size, c.head.Size, err)
			}
			if got, err := s.TreeHead(ctx); err != nil || got.Size != 4 || got.Hash != head.Hash {
				t.Errorf("TreeHead = %+v, %v; want it unchanged", got, err)
			}
			if d, err := s.ReadTile(ctx, 0, 0); err != nil || !bytes.Equal(d, tile) {
				t.Errorf("tile after a conflicting Integrate = %x, %v; want it unchanged", d, err)
			}
		})
	}
	n := 0
	for _, err := range s.Checkpoints(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d checkpoints after conflicting Integrates, want 1", n)
	}
}

// testSetting: SetSetting stores a setting with its record; an unset one
// reads "".
func testSetting(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	st := outboundState(t, s)
	if v, err := st.Setting(ctx, "kill_switch"); err != nil || v != "" {
		t.Errorf("unset Setting = %q, %v; want \"\"", v, err)
	}
	appendWith(t, s, outbound.SetSetting{Key: "kill_switch", Value: "on"})
	appendWith(t, s, outbound.SetSetting{Key: "dry_run:c", Value: "on"})
	appendWith(t, s, outbound.SetSetting{Key: "kill_switch", Value: "off"})
	for k, want := range map[string]string{"kill_switch": "off", "dry_run:c": "on", "dry_run:d": ""} {
		if v, err := st.Setting(ctx, k); err != nil || v != want {
			t.Errorf("Setting(%q) = %q, %v; want %q", k, v, err, want)
		}
	}
}

// testConsent: the latest consent by its time At wins, whatever the order
// the records are appended in; one of the same time replaces it.
func testConsent(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	st := outboundState(t, s)
	optedIn := func(channel, user string, want bool) {
		t.Helper()
		if in, err := st.OptedIn(ctx, channel, user); err != nil || in != want {
			t.Errorf("OptedIn(%s, %s) = %v, %v; want %v", channel, user, in, err, want)
		}
	}
	optedIn("c", "U1", false)
	consent := func(in bool, at time.Duration) outbound.SetConsent {
		return outbound.SetConsent{Channel: "c", User: "U1", OptIn: in, At: t0.Add(at), Source: "keyword"}
	}
	appendWith(t, s, consent(true, 2*time.Second))
	optedIn("c", "U1", true)
	appendWith(t, s, consent(false, time.Second)) // older: does not replace
	optedIn("c", "U1", true)
	appendWith(t, s, consent(false, 2*time.Second)) // same time: not later, replaces
	optedIn("c", "U1", false)
	appendWith(t, s, consent(true, 3*time.Second))
	optedIn("c", "U1", true)
	appendWith(t, s, consent(false, 2500*time.Millisecond))
	optedIn("c", "U1", true)
	// Another channel, another user: their own consent.
	optedIn("d", "U1", false)
	optedIn("c", "U2", false)
	appendWith(t, s, outbound.SetConsent{Channel: "d", User: "U1", OptIn: true, At: t0, Source: "api"})
	optedIn("d", "U1", true)
	optedIn("c", "U2", false)
}

// testConsentInOneAppend: several consent effects of one Append apply in
// order, each against the one before.
func testConsentInOneAppend(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	st := outboundState(t, s)
	appendWith(t, s,
		outbound.SetConsent{Channel: "c", User: "U3", OptIn: true, At: t0.Add(5 * time.Second)},
		outbound.SetConsent{Channel: "c", User: "U3", OptIn: false, At: t0.Add(4 * time.Second)},
		outbound.SetConsent{Channel: "c", User: "U4", OptIn: false, At: t0.Add(4 * time.Second)},
		outbound.SetConsent{Channel: "c", User: "U4", OptIn: true, At: t0.Add(5 * time.Second)})
	for user, want := range map[string]bool{"U3": true, "U4": true} {
		if in, err := st.OptedIn(ctx, "c", user); err != nil || in != want {
			t.Errorf("OptedIn(c, %s) = %v, %v; want %v", user, in, err, want)
		}
	}
}

// testOutboundDurable: settings and consent survive a reopen.
func testOutboundDurable(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := h.New(t)
	outboundState(t, s)
	appendWith(t, s, outbound.SetSetting{Key: "kill_switch", Value: "on"},
		outbound.SetConsent{Channel: "c", User: "U1", OptIn: true, At: t0})
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	st := outboundState(t, s)
	if v, err := st.Setting(ctx, "kill_switch"); err != nil || v != "on" {
		t.Errorf("Setting after reopen = %q, %v", v, err)
	}
	if in, err := st.OptedIn(ctx, "c", "U1"); err != nil || !in {
		t.Errorf("OptedIn after reopen = %v, %v", in, err)
	}
}

// testCooldown: a key is held until its until by the event that took it;
// that event (a retry of it) may fire again meanwhile, another may not.
func testCooldown(t *testing.T, h StateHarness) {
	ctx := context.Background()
	cs := cooldownStore(t, open(t, h.Harness))
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		name       string
		key, event string
		now, until time.Duration
		want       bool
	}{
		{"first fire", "k", "e1", 0, time.Minute, true},
		{"another event while held", "k", "e2", 30 * time.Second, 90 * time.Second, false},
		{"the same event again (a retry)", "k", "e1", 30 * time.Second, 90 * time.Second, true},
		{"another event before the retry's until", "k", "e2", 60 * time.Second, 2 * time.Minute, false},
		{"another key", "k2", "e2", 60 * time.Second, 2 * time.Minute, true},
		{"another event at until", "k", "e2", 90 * time.Second, 3 * time.Minute, true},
		{"the first event, after another took the key", "k", "e1", 100 * time.Second, 3 * time.Minute, false},
		{"after until", "k", "e3", 4 * time.Minute, 5 * time.Minute, true},
	}
	for _, st := range steps {
		ok, err := cs.Cooldown(ctx, st.key, st.event, at(st.now), at(st.until))
		if err != nil || ok != st.want {
			t.Errorf("%s: Cooldown(%s, %s, +%v, +%v) = %v, %v; want %v", st.name, st.key, st.event, st.now, st.until, ok, err, st.want)
		}
	}
}

// testForgetCooldowns: cooldowns that ended before t are deleted, others
// kept.
func testForgetCooldowns(t *testing.T, h StateHarness) {
	ctx := context.Background()
	cs := cooldownStore(t, open(t, h.Harness))
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for key, until := range map[string]time.Duration{"short": time.Minute, "long": time.Hour} {
		if ok, err := cs.Cooldown(ctx, key, "e1", t0, at(until)); err != nil || !ok {
			t.Fatalf("Cooldown(%s) = %v, %v", key, ok, err)
		}
	}
	if err := cs.ForgetCooldowns(ctx, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Asked as of an earlier time, a kept cooldown still holds; a
	// forgotten one is free.
	if ok, err := cs.Cooldown(ctx, "short", "e2", at(time.Second), at(2*time.Second)); err != nil || ok {
		t.Errorf("a cooldown ending at t was forgotten by ForgetCooldowns(t): Cooldown = %v, %v", ok, err)
	}
	if err := cs.ForgetCooldowns(ctx, at(time.Minute+time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if ok, err := cs.Cooldown(ctx, "short", "e2", at(time.Second), at(2*time.Second)); err != nil || !ok {
		t.Errorf("a cooldown that ended before t is still held: Cooldown = %v, %v", ok, err)
	}
	if ok, err := cs.Cooldown(ctx, "long", "e2", at(time.Second), at(2*time.Second)); err != nil || ok {
		t.Errorf("a cooldown ending after t was forgotten: Cooldown = %v, %v", ok, err)
	}
}
