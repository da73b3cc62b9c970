package retention

import (
	"context"
	"iter"
	"slices"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// logStore is a Store over records in memory: the candidates a purge sees
// and the log where it looks for requests (payloads in the clear: no
// Sealer).
type logStore struct {
	Store
	cands    []Candidate
	recs     []ledger.Record
	reads    int    // records read one by one
	unsigned uint64 // the first record not signed (0: all are)
}

func (s *logStore) Expired(_ context.Context, _ time.Time, from uint64, limit int) ([]Candidate, error) {
	var out []Candidate
	for _, c := range s.cands {
		if c.Index >= from && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}
func (s *logStore) Holds(context.Context) ([]Hold, error) { return nil, nil }
func (s *logStore) Count(context.Context) (uint64, error) { return uint64(len(s.recs)), nil }

// TreeHead: every record in s.recs is signed, unless unsigned says from
// where none is.
func (s *logStore) TreeHead(context.Context) (ledger.TreeHead, error) {
	if s.unsigned > 0 {
		return ledger.TreeHead{Size: s.unsigned}, nil
	}
	return ledger.TreeHead{Size: uint64(len(s.recs))}, nil
}
func (s *logStore) ReadLeaves(_ context.Context, start, end uint64) ([][]byte, error) {
	var out [][]byte
	for _, r := range s.recs[start:end] {
		out = append(out, r.Leaf)
	}
	return out, nil
}
func (s *logStore) Records(_ context.Context, start, end uint64) iter.Seq2[ledger.Record, error] {
	s.reads += int(end - start)
	return func(yield func(ledger.Record, error) bool) {
		for _, r := range s.recs[start:end] {
			if !yield(r, nil) {
				return
			}
		}
	}
}

type deletions struct{ deleted []record.Deletion }

func (d *deletions) Commit(_ context.Context, es []ledger.Entry, _ ...ledger.Effect) (uint64, error) {
	for _, e := range es {
		_, b, err := record.Decode(e.Kind, e.Payload)
		if err != nil {
			return 0, err
		}
		d.deleted = append(d.deleted, *b.(*record.Deletion))
	}
	return 0, nil
}

// TestPurgeNeedsRequest: before its keep period is over, a payload is
// deleted only on a deletion request recorded in the ledger after it, whose
// time has come and is not earlier than the class's MinKeep; a stored
// delete-after time alone (written into the database) is refused. Only
// admin records are read whole.
func TestPurgeNeedsRequest(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_800_000_000_000)
	day := int64(24 * time.Hour / time.Millisecond)
	t0 := now.UnixMilli() - 10*day
	policies := Presets()
	policies["min"] = Policy{MinKeep: 20 * 24 * time.Hour, AfterWithdrawal: dur(0)}
	s := &logStore{}
	add := func(kind ledger.Kind, body record.Body) {
		p, err := record.Encode(&record.Meta{ReceivedMs: t0}, body)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ledger.NewRecord(ledger.Entry{Kind: kind, Time: time.UnixMilli(t0), Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		r.Index = uint64(len(s.recs))
		s.recs = append(s.recs, r)
	}
	for range 6 {
		add(ledger.KindWebhook, &record.Webhook{})
	}
	request := func(set ...[2]int64) {
		detail := map[string]any{"delete_after": set}
		add(ledger.KindAdmin, &record.Admin{Action: "subject_request", Subject: "user:U1", Detail: detail})
	}
	past, future := now.UnixMilli()-day, now.UnixMilli()+day
	request([2]int64{1, past}, [2]int64{2, future}, [2]int64{4, past}, [2]int64{9, past})
	add(ledger.KindAdmin, &record.Admin{Action: "kill_switch", Detail: map[string]any{"delete_after": [][2]int64{{0, past}}}})
	request([2]int64{5, future}) // a later request replaces an earlier one
	request([2]int64{5, past})
	cand := func(i uint64, class string) Candidate {
		return Candidate{Index: i, TimeMs: t0, Class: class, DeleteAfterMs: past}
	}
	s.cands = []Candidate{
		cand(0, "jp-appi"), // no request: the stored time was written by hand
		cand(1, "jp-appi"), // requested, and due
		cand(2, "jp-appi"), // requested, not yet due
		cand(3, "th-pdpa"), // no request, and a class that keeps it 10 years
		cand(4, "min"),     // requested earlier than MinKeep allows
		cand(5, "jp-appi"), // the later request is due
		{Index: 9, TimeMs: t0 - 11*365*day, Class: "th-pdpa", DeleteAfterMs: past}, // its keep period is over
	}
	c := &deletions{}
	rep, err := Purge(ctx, s, c, nil, policies, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Deleted, []uint64{1, 5, 9}) || !slices.Equal(rep.Refused, []uint64{0, 2, 3, 4}) {
		t.Errorf("deleted %v, refused %v; want [1 5 9], [0 2 3 4]", rep.Deleted, rep.Refused)
	}
	if len(c.deleted) != 1 || c.deleted[0].Basis[1] != "request" || c.deleted[0].Basis[9] != "retention" {
		t.Errorf("deletion records %+v", c.deleted)
	}
	if s.reads != 4 {
		t.Errorf("%d records read whole, want the 4 admin records", s.reads)
	}
	// A record the request comes before is not its basis.
	if at := (&requests{log: s}); at.update(ctx) != nil || at.at[9] != 0 || at.at[5] != past {
		t.Errorf("requests %v", at.at)
	}
}

func TestDue(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	yearMs := int64(year / time.Millisecond)
	c := Candidate{Index: 1, TimeMs: now.UnixMilli() - yearMs, Class: "tw-pipa", DeleteAfterMs: 1}
	tests := []struct {
		class     string
		requested int64
		want      string
	}{
		{"tw-pipa", 0, ""},                      // 1 year of 5: no request
		{"tw-pipa", now.UnixMilli(), ""},        // before the 3 years' minimum
		{"jp-appi", 0, ""},                      // never automatically
		{"jp-appi", now.UnixMilli(), "request"}, // the request's time has come
		{"jp-appi", now.UnixMilli() + 1, ""},    // not yet
		{"jp-appi", c.TimeMs - 1, ""},           // before the record
		{"unknown", now.UnixMilli(), ""},        // no such class
		{"rejections", 0, "retention"},          // 90 days
	}
	for _, tt := range tests {
		c.Class = tt.class
		if got, ok := Due(Presets(), c, tt.requested, now); got != tt.want || ok != (tt.want != "") {
			t.Errorf("Due(%s, requested %d) = %q, %v; want %q", tt.class, tt.requested, got, ok, tt.want)
		}
	}
}

// TestPurgeSignedOnly: a purge deletes only what the log has signed; the
// records after the tree head are counted and left for a later run (a
// row written by hand past the head must not be made to look deleted by
// policy before the sequencer has checked it).
func TestPurgeSignedOnly(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_800_000_000_000)
	old := now.Add(-11 * 365 * 24 * time.Hour).UnixMilli() // past every class's keep period
	s := &logStore{unsigned: 2}
	for i := range 5 {
		r, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: time.UnixMilli(old), Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		r.Index = uint64(i)
		s.recs = append(s.recs, r)
		s.cands = append(s.cands, Candidate{Index: uint64(i), TimeMs: old, Class: "th-pdpa", DeleteAfterMs: now.UnixMilli()})
	}
	c := &deletions{}
	rep, err := Purge(ctx, s, c, nil, Presets(), now, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Deleted, []uint64{0, 1}) || rep.Unsigned != 3 || len(rep.Refused) != 0 {
		t.Errorf("deleted %v, %d unsigned, refused %v; want [0 1], 3 unsigned, none refused", rep.Deleted, rep.Unsigned, rep.Refused)
	}
	if len(c.deleted) != 1 || !slices.Equal(c.deleted[0].Deleted, []uint64{0, 1}) {
		t.Errorf("deletion records %+v, want one naming 0 and 1", c.deleted)
	}
}
