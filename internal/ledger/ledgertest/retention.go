package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	recordbody "github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

// subjectIndexer brings a store's index of records by subject up to date.
type subjectIndexer interface {
	IndexSubjects(ctx context.Context) error
}

func indices(cs []retention.Candidate) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.Index)
	}
	return out
}

func expired(t *testing.T, rs retention.Store, nowMs int64, from uint64, limit int) []uint64 {
	t.Helper()
	cs, err := rs.Expired(context.Background(), time.UnixMilli(nowMs), from, limit)
	if err != nil {
		t.Fatalf("Expired: %v", err)
	}
	return indices(cs)
}

// setDeleteAfter returns the effect that sets the delete-after times of
// records (index, ms; 0 for none).
func setDeleteAfter(times ...[2]int64) retention.SetDeleteAfter {
	var e retention.SetDeleteAfter
	for _, x := range times {
		e.Records = append(e.Records, retention.Candidate{Index: uint64(x[0]), DeleteAfterMs: x[1]})
	}
	return e
}

// testExpired: records whose payload is there and whose delete-after time
// is at or before now, in index order, from from, up to limit.
func testExpired(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	appendN(t, s, 6)
	if got := expired(t, rs, 1<<60, 0, 100); got != nil {
		t.Errorf("Expired with no delete-after times = %v, want none", got)
	}
	appendWith(t, s, setDeleteAfter([2]int64{0, 1000}, [2]int64{1, 3000}, [2]int64{2, 2000}, [2]int64{4, 1500}, [2]int64{5, 9000}))
	for _, c := range []struct {
		nowMs int64
		from  uint64
		limit int
		want  []uint64
	}{
		{999, 0, 100, nil},
		{1000, 0, 100, []uint64{0}},
		{2000, 0, 100, []uint64{0, 2, 4}}, // index order, not time order
		{2000, 1, 100, []uint64{2, 4}},
		{2000, 3, 100, []uint64{4}},
		{2000, 0, 2, []uint64{0, 2}},
		{2000, 3, 1, []uint64{4}},
		{1 << 60, 0, 100, []uint64{0, 1, 2, 4, 5}},
	} {
		if got := expired(t, rs, c.nowMs, c.from, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("Expired(%d, from %d, limit %d) = %v, want %v", c.nowMs, c.from, c.limit, got, c.want)
		}
	}
	cs, err := rs.Expired(ctx, time.UnixMilli(2000), 2, 1)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Expired = %v, %v", cs, err)
	}
	e := entry(2)
	if c := cs[0]; c.Index != 2 || c.Channel != e.Channel || c.Class != e.Retention || c.TimeMs != e.Time.UnixMilli() || c.DeleteAfterMs != 2000 || len(c.Subjects) != 0 {
		t.Errorf("candidate = %+v, want record 2 of channel %s, class %s, time %d, delete-after 2000", c, e.Channel, e.Retention, e.Time.UnixMilli())
	}
	// Only records with a payload.
	appendWith(t, s, retention.DeletePayloads{Indices: []uint64{2, 5}})
	if got := expired(t, rs, 1<<60, 0, 100); !slices.Equal(got, []uint64{0, 1, 4}) {
		t.Errorf("Expired after deleting payloads 2 and 5 = %v, want [0 1 4]", got)
	}
}

// testSetDeleteAfter: the times of records whose payload is there are set
// or cleared (0); a deleted record keeps none.
func testSetDeleteAfter(t *testing.T, h StateHarness) {
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	appendN(t, s, 4)
	appendWith(t, s, setDeleteAfter([2]int64{0, 1000}, [2]int64{1, 1000}, [2]int64{2, 1000}))
	appendWith(t, s, setDeleteAfter([2]int64{1, 0}, [2]int64{2, 5000}, [2]int64{3, 500}))
	if got := expired(t, rs, 1000, 0, 100); !slices.Equal(got, []uint64{0, 3}) {
		t.Errorf("Expired(1000) = %v, want [0 3]: 1 cleared, 2 moved later", got)
	}
	if got := expired(t, rs, 5000, 0, 100); !slices.Equal(got, []uint64{0, 2, 3}) {
		t.Errorf("Expired(5000) = %v, want [0 2 3]", got)
	}
	// Refused with its record: nothing set.
	refused(t, s, ledger.ErrUnsupportedEffect, setDeleteAfter([2]int64{1, 10}), unknownEffect{})
	if got := expired(t, rs, 5000, 0, 100); !slices.Equal(got, []uint64{0, 2, 3}) {
		t.Errorf("Expired(5000) after a refused Append = %v, want [0 2 3]", got)
	}
	// A deleted payload is never expired, whatever time is set.
	appendWith(t, s, retention.DeletePayloads{Indices: []uint64{1}})
	appendWith(t, s, setDeleteAfter([2]int64{1, 10}))
	if got := expired(t, rs, 1<<60, 0, 2); !slices.Equal(got, []uint64{0, 2}) {
		t.Errorf("Expired = %v, want [0 2]", got)
	}
}

// testDeletePayloads: the payloads and nonces of the records are deleted
// (Records reports them nil), their leaves kept.
func testDeletePayloads(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	retentionStore(t, s)
	want := records(0, 4)
	if _, err := s.Append(ctx, want); err != nil {
		t.Fatal(err)
	}
	refused(t, s, ledger.ErrUnsupportedEffect, retention.DeletePayloads{Indices: []uint64{0, 2}}, unknownEffect{})
	for _, r := range readRecords(t, s, 0, 4) {
		if r.Payload == nil || r.Nonce == nil {
			t.Errorf("record %d lost its payload in a refused Append", r.Index)
		}
	}
	del := appendWith(t, s, retention.DeletePayloads{Indices: []uint64{0, 2}})
	got := readRecords(t, s, 0, del+1)
	for i, r := range got {
		deleted := i == 0 || i == 2
		if !bytes.Equal(r.Leaf, leafOf(t, s, uint64(i))) || r.Leaf == nil {
			t.Errorf("record %d: leaf %x", i, r.Leaf)
		}
		if deleted && (r.Payload != nil || r.Nonce != nil || r.Keys != nil) {
			t.Errorf("deleted record %d: payload %q, nonce %x, keys %v; want nil", i, r.Payload, r.Nonce, r.Keys)
		}
		if !deleted && (r.Payload == nil || r.Nonce == nil) {
			t.Errorf("record %d lost its payload", i)
		}
		if i < 4 && !bytes.Equal(r.Leaf, want[i].Leaf) {
			t.Errorf("record %d: leaf changed", i)
		}
	}
	v, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, r := range readRecords(t, v, 0, 4) {
		if (r.Index == 0 || r.Index == 2) != (r.Payload == nil) {
			t.Errorf("snapshot: record %d payload %q", r.Index, r.Payload)
		}
	}
}

func leafOf(t *testing.T, s ledger.Store, i uint64) []byte {
	t.Helper()
	leaves, err := s.ReadLeaves(context.Background(), i, i+1)
	if err != nil {
		t.Fatalf("ReadLeaves(%d): %v", i, err)
	}
	return leaves[0]
}

// sealedStore appends records sealed with a ring over s's data keys.
type sealedStore struct {
	t    *testing.T
	s    ledger.Store
	ks   keys.Store
	ring *keys.Ring
}

func newSealedStore(t *testing.T, s ledger.Store) *sealedStore {
	ks := keyStore(t, s)
	return &sealedStore{t: t, s: s, ks: ks, ring: keys.NewRing(ks, testKEK(t))}
}

func (ss *sealedStore) record(i int, subjects ...string) ledger.Record {
	ss.t.Helper()
	e := entry(i)
	e.Subjects = subjects
	rec, err := ledger.SealRecord(context.Background(), ss.ring, e)
	if err != nil {
		ss.t.Fatal(err)
	}
	return rec
}

// append appends a record sealed for subjects, and returns its index.
func (ss *sealedStore) append(subjects ...string) uint64 {
	ss.t.Helper()
	first, err := ss.s.Append(context.Background(), []ledger.Record{ss.record(0, subjects...)})
	if err != nil {
		ss.t.Fatalf("Append sealed for %v: %v", subjects, err)
	}
	return first
}

func subjectRecords(t *testing.T, rs retention.Store, subject string, from uint64, limit int) []retention.Candidate {
	t.Helper()
	cs, err := rs.SubjectRecords(context.Background(), subject, from, limit)
	if err != nil {
		t.Fatalf("SubjectRecords(%s): %v", subject, err)
	}
	return cs
}

// testSubjectRecords: a subject's records with a payload, in index order,
// from from, up to limit, whether the index had caught up with them or
// not.
func testSubjectRecords(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	ss := newSealedStore(t, s)
	ss.append("user:U1")             // 0
	ss.append("group:C1", "user:U1") // 1
	ss.append("user:U2")             // 2
	ss.append()                      // 3: the system's
	if ix, ok := s.(subjectIndexer); ok {
		if err := ix.IndexSubjects(ctx); err != nil {
			t.Fatalf("IndexSubjects: %v", err)
		}
	}
	ss.append("user:U1") // 4: appended after the index caught up
	for _, c := range []struct {
		subject string
		from    uint64
		limit   int
		want    []uint64
	}{
		{"user:U1", 0, 100, []uint64{0, 1, 4}},
		{"user:U1", 1, 100, []uint64{1, 4}},
		{"user:U1", 2, 100, []uint64{4}},
		{"user:U1", 0, 2, []uint64{0, 1}},
		{"group:C1", 0, 100, []uint64{1}},
		{"user:U2", 0, 100, []uint64{2}},
		{"user:U9", 0, 100, nil},
	} {
		if got := indices(subjectRecords(t, rs, c.subject, c.from, c.limit)); !slices.Equal(got, c.want) {
			t.Errorf("SubjectRecords(%s, from %d, limit %d) = %v, want %v", c.subject, c.from, c.limit, got, c.want)
		}
	}
	cs := subjectRecords(t, rs, "group:C1", 0, 1)
	if len(cs) != 1 || !slices.Equal(slices.Sorted(slices.Values(cs[0].Subjects)), []string{"group:C1", "user:U1"}) || cs[0].Channel != "c" || cs[0].Class != "r" {
		t.Errorf("candidate of group:C1 = %+v, want record 1 of both subjects", cs)
	}
	// Only records with a payload.
	appendWith(t, s, retention.DeletePayloads{Indices: []uint64{1}})
	if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{0, 4}) {
		t.Errorf("SubjectRecords(user:U1) after deleting 1 = %v, want [0 4]", got)
	}
	if got := indices(subjectRecords(t, rs, "group:C1", 0, 100)); got != nil {
		t.Errorf("SubjectRecords(group:C1) after deleting 1 = %v, want none", got)
	}
	// The delete-after time is the stored one.
	appendWith(t, s, setDeleteAfter([2]int64{4, 777}))
	if cs := subjectRecords(t, rs, "user:U1", 4, 1); len(cs) != 1 || cs[0].DeleteAfterMs != 777 {
		t.Errorf("candidate 4 = %+v, want delete-after 777", cs)
	}
}

// batchIndexer indexes records by subject in batches, behind the
// appends, as serve runs it.
type batchIndexer interface {
	IndexSubjectsBatch(ctx context.Context, limit int) (more bool, err error)
}

// testIndexSubjectsBatch: each batch indexes up to limit index rows (a
// record's subjects, a record whole, at least one) and reports whether
// more wait.
func testIndexSubjectsBatch(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	ix, ok := s.(batchIndexer)
	if !ok {
		t.Skip("the store indexes no records by subject in batches")
	}
	if more, err := ix.IndexSubjectsBatch(ctx, 2); err != nil || more {
		t.Errorf("IndexSubjectsBatch of an empty store = %v, %v; want no more", more, err)
	}
	ss := newSealedStore(t, s)
	for range 5 {
		ss.append("user:U1")
	}
	for i, want := range []bool{true, true, false, false} {
		if more, err := ix.IndexSubjectsBatch(ctx, 2); err != nil || more != want {
			t.Errorf("IndexSubjectsBatch %d of 5 records by 2 = %v, %v; want %v", i, more, err, want)
		}
	}
	ss.append("user:U1")
	if more, err := ix.IndexSubjectsBatch(ctx, 2); err != nil || more {
		t.Errorf("IndexSubjectsBatch of a new record = %v, %v; want no more", more, err)
	}
	if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{0, 1, 2, 3, 4, 5}) {
		t.Errorf("SubjectRecords(user:U1) = %v, want [0 1 2 3 4 5]", got)
	}
	// Records of several subjects (a delivery of several users' events):
	// by 5 rows, the records of 3, 3, 1, 6 (more than the bound: alone
	// but for the system's after it), the system's (none) and 2 subjects
	// go in batches of 3, 3+1, 6+0 and 2.
	users := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("user:U%d", i+1))
		}
		return out
	}
	for _, n := range []int{3, 3, 1, 6, 0, 2} {
		ss.append(users(n)...) // 6 to 11
	}
	for i, want := range []bool{true, true, true, false} {
		if more, err := ix.IndexSubjectsBatch(ctx, 5); err != nil || more != want {
			t.Errorf("IndexSubjectsBatch %d by 5 rows = %v, %v; want %v", i, more, err, want)
		}
	}
	if got := indices(subjectRecords(t, rs, "user:U2", 0, 100)); !slices.Equal(got, []uint64{6, 7, 9, 11}) {
		t.Errorf("SubjectRecords(user:U2) = %v, want [6 7 9 11]", got)
	}
}

// testSubjectRecordsGap: a gap in the log (damage) hides no record of a
// subject after it, and does not stall the lookup.
func testSubjectRecordsGap(t *testing.T, h StateHarness) {
	if h.DropRecord == nil {
		t.Skip("the harness cannot damage a store")
	}
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	ss := newSealedStore(t, s)
	for range 5 {
		ss.append("user:U1")
	}
	h.DropRecord(t, s, 1)
	h.DropRecord(t, s, 4) // the last one too
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := rs.SubjectRecords(ctx, "user:U1", 0, 100)
	if err != nil {
		t.Fatalf("SubjectRecords over a gap: %v", err)
	}
	if got := indices(cs); !slices.Equal(got, []uint64{0, 2, 3}) {
		t.Errorf("SubjectRecords over gaps at 1 and 4 = %v, want [0 2 3]", got)
	}
}

// testDestroyKey: DeletePayloads destroys a subject's data key with the
// payloads sealed with it, and fails, writing nothing, while a record
// still refers to the key; a record sealed with a destroyed key is
// refused (ledger.ErrKeyDestroyed).
func testDestroyKey(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	ss := newSealedStore(t, s)
	ss.append("user:U1")             // 0
	ss.append("group:C1", "user:U1") // 1
	ss.append("user:U2")             // 2
	ss.append("user:U1")             // 3
	keyOf := func(subject string) []keys.Wrapped {
		t.Helper()
		ws, err := ss.ks.SubjectKeys(ctx, []string{subject})
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	u1 := keyOf("user:U1")
	if len(u1) != 1 {
		t.Fatalf("user:U1 has %d keys", len(u1))
	}
	// State that names the subjects: consent, and holds (one released).
	st, hasConsent := s.(outbound.State)
	if hasConsent {
		appendWith(t, s, outbound.SetConsent{Channel: "c", User: "U1", OptIn: true, At: t0},
			outbound.SetConsent{Channel: "d", User: "U1", OptIn: true, At: t0},
			outbound.SetConsent{Channel: "c", User: "U2", OptIn: true, At: t0})
	}
	released := appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "c", Subject: "user:U1", Reason: "case of U1 (user:U1)", CreatedMs: 1}})
	appendWith(t, s, retention.ReleaseHold{ID: int64(released), At: t0})
	active := appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "c", Subject: "user:U2", Reason: "U2, who wrote to U1", CreatedMs: 1}})
	t.Run("a record still refers to the key", func(t *testing.T) {
		// Record 3 is not deleted: user:U1's key must stay.
		refused(t, s, nil, retention.DeletePayloads{Indices: []uint64{0, 1}, Destroy: []string{"user:U1"}, HoldsKnown: active})
		if ws := keyOf("user:U1"); len(ws) != 1 || !bytes.Equal(ws[0].ID, u1[0].ID) {
			t.Errorf("user:U1's key after a refused destruction: %v", ws)
		}
		for _, r := range readRecords(t, s, 0, 2) {
			if r.Payload == nil {
				t.Errorf("record %d lost its payload in a refused Append", r.Index)
			}
		}
		if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{0, 1, 3}) {
			t.Errorf("SubjectRecords(user:U1) = %v, want [0 1 3]", got)
		}
	})
	t.Run("every record deleted", func(t *testing.T) {
		appendWith(t, s, retention.DeletePayloads{Indices: []uint64{0, 1, 3}, Destroy: []string{"user:U1"}, HoldsKnown: active})
		if ws := keyOf("user:U1"); len(ws) != 0 {
			t.Errorf("user:U1's key after its destruction: %v", ws)
		}
		for _, subj := range []string{"group:C1", "user:U2"} {
			if ws := keyOf(subj); len(ws) != 1 {
				t.Errorf("%s's key: %v; want it kept", subj, ws)
			}
		}
		for _, r := range readRecords(t, s, 0, 4) {
			if deleted := r.Index != 2; deleted != (r.Payload == nil && r.Nonce == nil) {
				t.Errorf("record %d: payload %d bytes, nonce %x", r.Index, len(r.Payload), r.Nonce)
			}
		}
		if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); got != nil {
			t.Errorf("SubjectRecords(user:U1) = %v, want none", got)
		}
		if got := indices(subjectRecords(t, rs, "user:U2", 0, 100)); !slices.Equal(got, []uint64{2}) {
			t.Errorf("SubjectRecords(user:U2) = %v, want [2]", got)
		}
	})
	t.Run("the subject's state forgotten", func(t *testing.T) {
		if hasConsent {
			for _, c := range []struct {
				channel, user string
				want          bool
			}{{"c", "U1", false}, {"d", "U1", false}, {"c", "U2", true}} {
				if in, err := st.OptedIn(ctx, c.channel, c.user); err != nil || in != c.want {
					t.Errorf("OptedIn(%s, %s) after user:U1's key was destroyed = %v, %v; want %v", c.channel, c.user, in, err, c.want)
				}
			}
		}
		hs, err := rs.Holds(ctx)
		if err != nil || len(hs) != 2 {
			t.Fatalf("Holds = %v, %v", hs, err)
		}
		if hs[0].ID != int64(released) || hs[0].Subject != recordbody.Pseudonym("user:U1") {
			t.Errorf("released hold of user:U1 = %+v; want its subject %s", hs[0], recordbody.Pseudonym("user:U1"))
		}
		if hs[1].ID != int64(active) || hs[1].Subject != "user:U2" {
			t.Errorf("active hold of user:U2 = %+v; want it unchanged", hs[1])
		}
		// The reasons that named user:U1, whole or bare, name its
		// pseudonym instead.
		p := recordbody.Pseudonym("user:U1")
		if want := "case of " + p + " (" + p + ")"; hs[0].Reason != want {
			t.Errorf("released hold's reason = %q, want %q", hs[0].Reason, want)
		}
		if want := "U2, who wrote to " + p; hs[1].Reason != want {
			t.Errorf("active hold's reason = %q, want %q", hs[1].Reason, want)
		}
	})
	t.Run("sealed with the destroyed key", func(t *testing.T) {
		// The ring still caches the destroyed key, as another process's
		// would.
		rec := ss.record(9, "user:U1")
		if !slices.ContainsFunc(rec.Keys, func(k ledger.SubjectKey) bool { return bytes.Equal(k.ID, u1[0].ID) }) {
			t.Skip("the ring did not seal with the cached key")
		}
		n, _ := s.Count(ctx)
		if _, err := s.Append(ctx, []ledger.Record{rec}); !errors.Is(err, ledger.ErrKeyDestroyed) {
			t.Errorf("Append of a record sealed with a destroyed key: err = %v, want ErrKeyDestroyed", err)
		}
		if m, _ := s.Count(ctx); m != n {
			t.Errorf("Count = %d, want %d", m, n)
		}
		ss.ring.Reset()
		i := ss.append("user:U1") // a new key
		if ws := keyOf("user:U1"); len(ws) != 1 || bytes.Equal(ws[0].ID, u1[0].ID) {
			t.Errorf("user:U1's key after a new record: %v; want a new one", ws)
		}
		if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{i}) {
			t.Errorf("SubjectRecords(user:U1) = %v, want [%d]", got, i)
		}
	})
}

// testDestroyKeyInCommit: a key is never destroyed while a record of the
// same commit is sealed with it: a group whose records a later group's
// shred would leave unreadable keeps them, and the shred is refused alone.
func testDestroyKeyInCommit(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	ss := newSealedStore(t, s)
	ss.append("user:U1") // 0
	if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{0}) {
		t.Fatalf("SubjectRecords(user:U1) = %v, want [0]", got)
	}
	key, err := ss.ks.SubjectKeys(ctx, []string{"user:U1"})
	if err != nil || len(key) != 1 {
		t.Fatalf("user:U1's keys = %v, %v", key, err)
	}
	rec := ss.record(1, "user:U1")
	_, errs, err := s.AppendGroups(ctx, []ledger.Group{
		{Records: []ledger.Record{rec}, Effects: []ledger.Effect{outbound.SetSetting{Key: "checked", Value: "1"}}},
		{Effects: []ledger.Effect{retention.DeletePayloads{Indices: []uint64{0}, Destroy: []string{"user:U1"}}}},
	})
	if err != nil || len(errs) != 2 || errs[0] != nil || errs[1] == nil {
		t.Fatalf("AppendGroups of a record and a shred of its key = %v, %v; want the record kept and the shred refused", errs, err)
	}
	if got := indices(subjectRecords(t, rs, "user:U1", 0, 100)); !slices.Equal(got, []uint64{0, 1}) {
		t.Errorf("SubjectRecords(user:U1) = %v, want [0 1]", got)
	}
	if ws, err := ss.ks.SubjectKeys(ctx, []string{"user:U1"}); err != nil || len(ws) != 1 || !bytes.Equal(ws[0].ID, key[0].ID) {
		t.Errorf("user:U1's keys after the refused shred: %v, %v; want %v", ws, err, key)
	}
}

// testAddHold: a hold's id is the index of the record appended with it.
func testAddHold(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	if hs, err := rs.Holds(ctx); err != nil || len(hs) != 0 {
		t.Errorf("Holds of a new store = %v, %v", hs, err)
	}
	appendN(t, s, 3)
	h1 := retention.Hold{ID: 99, Channel: "c", Subject: "user:U1", FromMs: 1000, ToMs: 2000, Reason: "litigation", CreatedMs: 5}
	first, err := s.Append(ctx, records(3, 2), retention.AddHold{Hold: h1})
	if err != nil {
		t.Fatal(err)
	}
	h2 := retention.Hold{Channel: "", Reason: "audit", CreatedMs: 6}
	second := appendWith(t, s, retention.AddHold{Hold: h2})
	refused(t, s, ledger.ErrUnsupportedEffect, retention.AddHold{Hold: h2}, unknownEffect{})
	hs, err := rs.Holds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1.ID, h2.ID = int64(first), int64(second)
	if want := []retention.Hold{h1, h2}; !slices.Equal(hs, want) {
		t.Errorf("Holds = %+v, want %+v", hs, want)
	}
}

// testReleaseHold: a release sets the hold's release time; releasing a
// hold that does not exist, or no longer holds, fails with an error
// wrapping ledger.ErrNotFound and stores nothing, its record included.
func testReleaseHold(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := open(t, h.Harness)
	rs := retentionStore(t, s)
	id := int64(appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "c", Reason: "r", CreatedMs: 1}}))
	other := int64(appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "d", Reason: "r", CreatedMs: 1}}))
	at := t0.Add(time.Hour)
	appendWith(t, s, retention.ReleaseHold{ID: id, At: at})
	hs, err := rs.Holds(ctx)
	if err != nil || len(hs) != 2 {
		t.Fatalf("Holds = %v, %v", hs, err)
	}
	if hs[0].ID != id || hs[0].ReleasedMs != at.UnixMilli() || hs[1].ID != other || hs[1].ReleasedMs != 0 {
		t.Errorf("Holds = %+v; want %d released at %d, %d active", hs, id, at.UnixMilli(), other)
	}
	for name, rid := range map[string]int64{"already released": id, "unknown": 12345} {
		t.Run(name, func(t *testing.T) {
			effects := []ledger.Effect{retention.ReleaseHold{ID: rid, At: at.Add(time.Hour)}}
			if _, ok := s.(outbound.State); ok {
				effects = append([]ledger.Effect{outbound.SetSetting{Key: "k", Value: name}}, effects...)
			}
			refused(t, s, ledger.ErrNotFound, effects...)
			if st, ok := s.(outbound.State); ok {
				if v, _ := st.Setting(ctx, "k"); v != "" {
					t.Errorf("an effect before the refused release was applied: setting %q", v)
				}
			}
			if hs2, err := rs.Holds(ctx); err != nil || !slices.Equal(hs2, hs) {
				t.Errorf("Holds after a refused release = %+v, %v; want %+v", hs2, err, hs)
			}
		})
	}
}

// testRetentionDurable: delete-after times, deletions and holds survive a
// reopen.
func testRetentionDurable(t *testing.T, h StateHarness) {
	ctx := context.Background()
	s := h.New(t)
	retentionStore(t, s)
	appendN(t, s, 3)
	appendWith(t, s, setDeleteAfter([2]int64{0, 1000}, [2]int64{1, 1000}))
	appendWith(t, s, retention.DeletePayloads{Indices: []uint64{1}})
	id := appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "c", Reason: "r"}})
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	rs := retentionStore(t, s)
	if got := expired(t, rs, 1000, 0, 100); !slices.Equal(got, []uint64{0}) {
		t.Errorf("Expired after reopen = %v, want [0]", got)
	}
	if r := readRecords(t, s, 1, 2); len(r) != 1 || r[0].Payload != nil {
		t.Errorf("deleted record 1 after reopen: %+v", r)
	}
	if hs, err := rs.Holds(ctx); err != nil || len(hs) != 1 || hs[0].ID != int64(id) {
		t.Errorf("Holds after reopen = %v, %v", hs, err)
	}
}

// wrapped returns a data key as a keys.Store holds it.
func wrapped(subject string, id byte, kek string) keys.Wrapped {
	return keys.Wrapped{Subject: subject, ID: []byte{id, 0xd, 0xe, 0xc}, KEK: kek, Key: []byte{id, 0xff}, CreatedMs: int64(id)}
}

func sortedKeys(ws []keys.Wrapped) []keys.Wrapped {
	return slices.SortedFunc(slices.Values(ws), func(a, b keys.Wrapped) int { return bytes.Compare([]byte(a.Subject), []byte(b.Subject)) })
}

func sameKeys(a, b []keys.Wrapped) bool {
	a, b = sortedKeys(a), sortedKeys(b)
	return slices.EqualFunc(a, b, func(x, y keys.Wrapped) bool {
		return x.Subject == y.Subject && bytes.Equal(x.ID, y.ID) && x.KEK == y.KEK && bytes.Equal(x.Key, y.Key) && x.CreatedMs == y.CreatedMs
	})
}

// testAddSubjectKeysConflict: AddSubjectKeys keeps the key stored first
// for a subject, and returns the stored key of every subject given.
func testAddSubjectKeysConflict(t *testing.T, h StateHarness) {
	ctx := context.Background()
	ks := keyStore(t, open(t, h.Harness))
	if got, err := ks.SubjectKeys(ctx, []string{"user:A"}); err != nil || len(got) != 0 {
		t.Errorf("SubjectKeys of a new store = %v, %v", got, err)
	}
	a1, b1 := wrapped("user:A", 1, "k1"), wrapped("user:B", 2, "k1")
	if got, err := ks.AddSubjectKeys(ctx, []keys.Wrapped{a1}); err != nil || !sameKeys(got, []keys.Wrapped{a1}) {
		t.Fatalf("AddSubjectKeys(A) = %v, %v", got, err)
	}
	got, err := ks.AddSubjectKeys(ctx, []keys.Wrapped{wrapped("user:A", 3, "k2"), b1})
	if err != nil || !sameKeys(got, []keys.Wrapped{a1, b1}) {
		t.Errorf("AddSubjectKeys(A again, B) = %v, %v; want A's first key and B's", got, err)
	}
	got, err = ks.SubjectKeys(ctx, []string{"user:B", "user:A", "user:Z"})
	if err != nil || !sameKeys(got, []keys.Wrapped{a1, b1}) {
		t.Errorf("SubjectKeys = %v, %v; want A's first key and B's", got, err)
	}
	if got, err := ks.SubjectKeys(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("SubjectKeys(none) = %v, %v", got, err)
	}
}

// testAddSubjectKeysConcurrent: processes creating a subject's key at once
// all get the one stored.
func testAddSubjectKeysConcurrent(t *testing.T, h StateHarness) {
	ctx := context.Background()
	ks := keyStore(t, open(t, h.Harness))
	const n = 8
	got := make([][]keys.Wrapped, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ws, err := ks.AddSubjectKeys(ctx, []keys.Wrapped{wrapped("user:A", byte(i+1), "k1"), wrapped(fmt.Sprintf("user:P%d", i), byte(100+i), "k1")})
			if err != nil {
				t.Errorf("AddSubjectKeys: %v", err)
			}
			got[i] = ws
		})
	}
	wg.Wait()
	stored, err := ks.SubjectKeys(ctx, []string{"user:A"})
	if err != nil || len(stored) != 1 {
		t.Fatalf("SubjectKeys(A) = %v, %v", stored, err)
	}
	for i, ws := range got {
		for _, w := range ws {
			if w.Subject == "user:A" && !bytes.Equal(w.ID, stored[0].ID) {
				t.Errorf("AddSubjectKeys %d returned key %x for user:A, the store holds %x", i, w.ID, stored[0].ID)
			}
		}
		if len(ws) != 2 {
			t.Errorf("AddSubjectKeys %d returned %d keys, want 2", i, len(ws))
		}
	}
}

// testListSubjectKeysPaging: pages of keys in the byte order of subjects,
// each after the last of the one before.
func testListSubjectKeysPaging(t *testing.T, h StateHarness) {
	ctx := context.Background()
	ks := keyStore(t, open(t, h.Harness))
	// Byte order: upper case before lower case.
	subjects := []string{"user:Ua", "group:C1", "user:UB", "room:R1", "user:Ub", "system"}
	var ws []keys.Wrapped
	for i, subj := range subjects {
		ws = append(ws, wrapped(subj, byte(i+1), "k1"))
	}
	if _, err := ks.AddSubjectKeys(ctx, ws); err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(subjects))
	var got []string
	after := ""
	for page := 0; ; page++ {
		list, err := ks.ListSubjectKeys(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 2 {
			t.Fatalf("page of %d keys, limit 2", len(list))
		}
		if len(list) == 0 {
			break
		}
		for _, w := range list {
			got = append(got, w.Subject)
		}
		after = list[len(list)-1].Subject
		if page > len(subjects) {
			t.Fatal("paging does not end")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("subjects listed = %q, want %q", got, want)
	}
	if list, err := ks.ListSubjectKeys(ctx, "user:UB", 10); err != nil || len(list) != 2 || list[0].Subject != "user:Ua" || list[1].Subject != "user:Ub" {
		t.Errorf("ListSubjectKeys after user:UB = %v, %v; want user:Ua, user:Ub", list, err)
	}
}

// testRewrapSubjectKey: a re-wrap is a compare-and-swap on the subject, id
// and KEK; it keeps the key's id and creation time.
func testRewrapSubjectKey(t *testing.T, h StateHarness) {
	ctx := context.Background()
	ks := keyStore(t, open(t, h.Harness))
	a := wrapped("user:A", 1, "k1")
	if _, err := ks.AddSubjectKeys(ctx, []keys.Wrapped{a}); err != nil {
		t.Fatal(err)
	}
	rewrapped := a
	rewrapped.KEK, rewrapped.Key = "k2", []byte("rewrapped")
	otherID := rewrapped
	otherID.ID = []byte{9, 9}
	unknown := rewrapped
	unknown.Subject = "user:Z"
	for _, c := range []struct {
		name   string
		oldKEK string
		w      keys.Wrapped
	}{
		{"from another KEK", "k0", rewrapped},
		{"another id", "k1", otherID},
		{"an unknown subject", "k1", unknown},
	} {
		if ok, err := ks.RewrapSubjectKey(ctx, c.oldKEK, c.w); ok || err != nil {
			t.Errorf("RewrapSubjectKey %s = %v, %v; want false", c.name, ok, err)
		}
	}
	if got, _ := ks.SubjectKeys(ctx, []string{"user:A"}); !sameKeys(got, []keys.Wrapped{a}) {
		t.Errorf("key after refused re-wraps = %v, want %v", got, a)
	}
	if ok, err := ks.RewrapSubjectKey(ctx, "k1", rewrapped); !ok || err != nil {
		t.Errorf("RewrapSubjectKey = %v, %v; want true", ok, err)
	}
	if ok, err := ks.RewrapSubjectKey(ctx, "k1", rewrapped); ok || err != nil {
		t.Errorf("a second RewrapSubjectKey from k1 = %v, %v; want false", ok, err)
	}
	if got, _ := ks.SubjectKeys(ctx, []string{"user:A"}); !sameKeys(got, []keys.Wrapped{rewrapped}) {
		t.Errorf("key after the re-wrap = %v, want %v", got, rewrapped)
	}
}

// testDeletePayloadsHoldAdded: a deletion that took into account the holds
// up to HoldsKnown is refused (ErrHoldsChanged, nothing written) once an
// active hold with a larger id exists; a released one, or one it knew,
// does not stop it.
func testDeletePayloadsHoldAdded(t *testing.T, h StateHarness) {
	s := open(t, h.Harness)
	rec := appendWith(t, s)
	known := appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "other", Reason: "known", CreatedMs: 1}})
	added := appendWith(t, s, retention.AddHold{Hold: retention.Hold{Channel: "c", Reason: "added meanwhile", CreatedMs: 1}})
	refused(t, s, retention.ErrHoldsChanged, retention.DeletePayloads{Indices: []uint64{rec}, HoldsKnown: known})
	appendWith(t, s, retention.ReleaseHold{ID: int64(added), At: time.UnixMilli(2)})
	appendWith(t, s, retention.DeletePayloads{Indices: []uint64{rec}, HoldsKnown: known})
}
