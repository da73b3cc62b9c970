// Package retention deletes payloads when their retention period is over,
// unless a legal hold covers them. The log keeps every leaf: a payload is
// deleted with its nonce, so that the salted commitment in the leaf stays
// verifiable and the deleted content stays unguessable, and each deletion
// is itself a record, of kind deletion, which tells "deleted by policy"
// from "missing".
package retention

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
)

// Policy is a retention class: how long payloads are kept, and what a
// user's deletion request or consent withdrawal does to them.
type Policy struct {
	// Law names the law the class follows, for the operator's reports.
	Law string `json:"law,omitempty"`
	// Keep is how long a payload is kept after its record's time; 0 keeps
	// it until a request or an operator deletes it.
	Keep time.Duration `json:"keep"`
	// MinKeep is the least time a payload is kept after its record's time,
	// whatever a request says (proof the law requires to be kept).
	MinKeep time.Duration `json:"min_keep,omitempty"`
	// AfterDeletionRequest, if set, is how long after a user's deletion
	// request that user's payloads are kept at most.
	AfterDeletionRequest *time.Duration `json:"after_deletion_request,omitempty"`
	// AfterWithdrawal, if set, is how long after a user withdraws consent
	// that user's payloads are kept at most.
	AfterWithdrawal *time.Duration `json:"after_withdrawal,omitempty"`
}

const year = 365 * 24 * time.Hour

func dur(d time.Duration) *time.Duration { return &d }

// RejectionsClass is the retention class of the records of webhook
// requests that failed authentication.
const RejectionsClass = "rejections"

// Presets are the retention classes taken from the product brief's table
// of retention by jurisdiction. They are defaults to check with counsel,
// not legal advice; a config can change them or add classes.
//
//   - jp-appi (Japan, APPI): kept while there is a business need (no
//     automatic deletion); at most one year after the user's deletion
//     request.
//   - th-pdpa (Thailand, PDPA): the statute period, 10 years, as both the
//     least and the most: a request does not shorten it.
//   - tw-pipa (Taiwan, PIPA): at least 3 years as marketing proof, at most
//     5 years, or until consent is withdrawn (but not before 3 years).
func Presets() map[string]Policy {
	return map[string]Policy{
		"jp-appi": {Law: "Japan APPI", AfterDeletionRequest: dur(year)},
		"th-pdpa": {Law: "Thailand PDPA", Keep: 10 * year, MinKeep: 10 * year},
		"tw-pipa": {Law: "Taiwan PIPA", Keep: 5 * year, MinKeep: 3 * year, AfterWithdrawal: dur(0)},
		// Requests that failed authentication hold no LINE user's data,
		// only what an unauthenticated sender sent: kept as evidence of
		// an attack for a short while.
		RejectionsClass: {Law: "none: unauthenticated requests", Keep: 90 * 24 * time.Hour},
	}
}

// Candidate is a record with a payload, as purges and requests see it.
type Candidate struct {
	Index         uint64
	Channel       string
	TimeMs        int64
	Class         string
	Subjects      []string
	DeleteAfterMs int64 // 0: no delete-after time
}

// NewCandidate builds a candidate from a record's stored columns: its
// index, leaf, keys (ledger.FormatKeys; "" for none) and delete-after time.
func NewCandidate(index uint64, leafBytes []byte, keys string, deleteAfterMs int64) (Candidate, error) {
	var leaf ledger.Leaf
	if err := leaf.UnmarshalBinary(leafBytes); err != nil {
		return Candidate{}, fmt.Errorf("record %d: %w", index, err)
	}
	ks, err := ledger.ParseKeys(keys)
	if err != nil {
		return Candidate{}, fmt.Errorf("record %d: %w", index, err)
	}
	return Candidate{Index: index, Channel: leaf.Channel, TimeMs: leaf.Time.UnixMilli(), Class: leaf.Retention,
		Subjects: ledger.Subjects(ks), DeleteAfterMs: deleteAfterMs}, nil
}

// Hold is a legal hold: while active, it keeps from deletion the payloads
// of the records of a channel ("" for all) and a subject ("" for all) in a
// time range (0 for open).
type Hold struct {
	ID         int64  `json:"id"`
	Channel    string `json:"channel"`
	Subject    string `json:"subject,omitempty"`
	FromMs     int64  `json:"from_ms"`
	ToMs       int64  `json:"to_ms"`
	Reason     string `json:"reason"`
	CreatedMs  int64  `json:"created_ms"`
	ReleasedMs int64  `json:"released_ms,omitempty"`
}

// Covers reports whether an active hold keeps a candidate.
func (h Hold) Covers(c Candidate) bool {
	return h.ReleasedMs == 0 && (h.Channel == "" || h.Channel == c.Channel) &&
		(h.Subject == "" || slices.Contains(c.Subjects, h.Subject)) &&
		(h.FromMs == 0 || c.TimeMs >= h.FromMs) && (h.ToMs == 0 || c.TimeMs < h.ToMs)
}

// Store is the storage that purges need. Declared here, by its consumer.
// What changes state (deleting payloads, destroying keys, holds, delete-
// after times) is an Effect appended with the record that documents it,
// through a Committer: never applied without its record.
type Store interface {
	// Expired returns up to limit records whose payload is still there
	// and whose delete-after time is at or before now, in index order,
	// from index from.
	Expired(ctx context.Context, now time.Time, from uint64, limit int) ([]Candidate, error)
	// SubjectRecords returns up to limit records of a subject whose
	// payload is still there, in index order, from index from.
	SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]Candidate, error)
	Holds(ctx context.Context) ([]Hold, error)
	// The log's records, where a purge finds the deletion requests.
	Log
}

// Log is the ledger's records as a purge reads them (ledger.Store's
// methods), to find the deletion requests and withdrawals recorded there.
type Log interface {
	Count(ctx context.Context) (uint64, error)
	// TreeHead is the signed tree's: a purge deletes only records the log
	// has signed.
	TreeHead(ctx context.Context) (ledger.TreeHead, error)
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
	Records(ctx context.Context, start, end uint64) iter.Seq2[ledger.Record, error]
}

// Committer appends records with the effects that commit with them
// (ledger.Writer, ledger.Ledger).
type Committer interface {
	Commit(ctx context.Context, entries []ledger.Entry, effects ...ledger.Effect) (uint64, error)
}

// DeletePayloads is the effect of a deletion record: the payloads and
// nonces of the records Indices are deleted, so that their bytes are gone
// from the database files too (and their rows of the subject index with
// them), and the data keys of the subjects in Destroy are destroyed. A
// Store fails it if a record still refers to one of those keys. With a
// key destroyed goes the subject's id from the state tables: a user's
// consent on every channel is deleted (no row: no opt-in), and the subject
// of its released holds, and its id ("user:U..." or the bare "U...")
// wherever a hold's reason names it, become its pseudonym
// (record.Pseudonym).
type DeletePayloads struct {
	Indices []uint64
	Destroy []string
	// HoldsKnown is the id of the newest legal hold the caller took into
	// account (NewestHold): a Store fails the effect with ErrHoldsChanged
	// if an active hold with a larger id exists, one added since (hold ids
	// are the indices of their records, and grow), so that a hold and a
	// deletion that race never leave a held record deleted.
	HoldsKnown uint64
}

// ErrHoldsChanged is returned (wrapped) by a Store for a DeletePayloads
// effect when a legal hold was added after the caller read the holds: the
// caller reads them again and starts over.
var ErrHoldsChanged = errors.New("retention: a legal hold was added meanwhile")

// NewestHold returns the id of the newest of holds (0 for none).
func NewestHold(holds []Hold) uint64 {
	var n uint64
	for _, h := range holds {
		n = max(n, uint64(h.ID))
	}
	return n
}

// EffectName implements ledger.Effect.
func (DeletePayloads) EffectName() string { return "delete payloads" }

// SetDeleteAfter is the effect of a deletion request or consent
// withdrawal: the records' delete-after times are set to their
// DeleteAfterMs (0: none), for those whose payload is still there.
type SetDeleteAfter struct {
	Records []Candidate
}

// EffectName implements ledger.Effect.
func (SetDeleteAfter) EffectName() string { return "set delete-after times" }

// AddHold is the effect of a hold record: the hold is stored with the
// index of that record as its id (Hold.ID is ignored).
type AddHold struct {
	Hold Hold
}

// EffectName implements ledger.Effect.
func (AddHold) EffectName() string { return "add a legal hold" }

// ReleaseHold is the effect of a hold's release record. A Store fails it
// with an error wrapping ledger.ErrNotFound when no active hold has ID.
type ReleaseHold struct {
	ID int64
	At time.Time
}

// EffectName implements ledger.Effect.
func (ReleaseHold) EffectName() string { return "release a legal hold" }

// Report says what a purge did, or would do.
type Report struct {
	Deleted []uint64
	Held    int
	// Refused are records whose stored delete-after time is earlier than
	// their class allows, and than any request recorded in the ledger
	// allows: not deleted, and worth an investigation.
	Refused []uint64
	// Unsigned counts expired records not signed into the log yet: left
	// for a later run (a record is deleted only once the log has signed
	// it, so that no row written by hand can be made to look deleted by
	// policy before the sequencer has checked it).
	Unsigned int
}

// Purge deletes every expired payload that no active hold covers, in
// batches, each with its deletion record. With dryRun it only reports.
//
// The stored delete-after time is not trusted on its own (anyone with
// write access to the database can change it): each record's due time is
// recomputed from its leaf's time and the policy of its class (policies).
// Before its keep period is over (or, in a class without one, at all), a
// record is deleted only when a deletion request or withdrawal recorded in
// the ledger names it (an admin record, read with sealer, which may be
// sealed under the user's key) with a time that has come, and that is not
// earlier than the class's MinKeep allows. Other records are refused,
// counted in Report.Refused. The requests are read once a run, and only
// when a record needs one.
func Purge(ctx context.Context, s Store, c Committer, sealer ledger.Sealer, policies map[string]Policy, now time.Time, dryRun bool) (Report, error) {
	var rep Report
	holds, err := s.Holds(ctx)
	if err != nil {
		return rep, err
	}
	head, err := s.TreeHead(ctx)
	if errors.Is(err, ledger.ErrNotFound) {
		head, err = ledger.TreeHead{}, nil // nothing signed yet
	}
	if err != nil {
		return rep, err
	}
	reqs := &requests{log: s, sealer: sealer}
	after := int64(-1) // the first index is 0
	retries := 0
	for {
		cands, err := s.Expired(ctx, now, uint64(after+1), 500)
		if err != nil {
			return rep, err
		}
		if len(cands) == 0 {
			return rep, nil
		}
		var batch []uint64
		basis := map[uint64]string{}
		read := false // reqs is up to date for this batch
		batchStart, batchHeld, refusedBefore := after, 0, len(rep.Refused)
		for _, c := range cands {
			after = int64(c.Index)
			if c.Index >= head.Size {
				rep.Unsigned++
				continue
			}
			held := false
			for _, h := range holds {
				if h.Covers(c) {
					held = true
					break
				}
			}
			if held {
				rep.Held++
				batchHeld++
				continue
			}
			b, ok := Due(policies, c, 0, now)
			if !ok {
				if !read {
					// The whole log at the first need of the run, then
					// what was appended since, once a batch.
					if err := reqs.update(ctx); err != nil {
						return rep, err
					}
					read = true
				}
				b, ok = Due(policies, c, reqs.at[c.Index], now)
			}
			if !ok {
				rep.Refused = append(rep.Refused, c.Index)
				continue
			}
			batch = append(batch, c.Index)
			basis[c.Index] = b
		}
		if len(batch) == 0 || dryRun {
			rep.Deleted = append(rep.Deleted, batch...)
			continue
		}
		d := record.Deletion{Deleted: batch, Reason: "retention period over", Basis: basis}
		_, err = commitDeletion(ctx, c, now, d, DeletePayloads{Indices: batch, HoldsKnown: NewestHold(holds)})
		if errors.Is(err, ErrHoldsChanged) && retries < 5 {
			// A hold was added meanwhile: read the holds again, and
			// judge this batch anew.
			retries++
			if holds, err = s.Holds(ctx); err != nil {
				return rep, err
			}
			rep.Held -= batchHeld
			rep.Refused = rep.Refused[:refusedBefore]
			after = batchStart
			continue
		}
		if err != nil {
			return rep, err
		}
		rep.Deleted = append(rep.Deleted, batch...)
	}
}

// Due says whether an expired candidate may be deleted at now, and on what
// basis, whatever its stored delete-after time says: "retention" when the
// record's time plus its class's keep period has passed; "request" when
// requestedMs, the delete-after time that the last deletion request or
// withdrawal recorded in the ledger set for it (0: none), has come and is
// not earlier than the class's MinKeep allows; false otherwise, or when
// the class is unknown: the stored time was changed.
func Due(policies map[string]Policy, c Candidate, requestedMs int64, now time.Time) (string, bool) {
	p, ok := policies[c.Class]
	if !ok {
		return "", false
	}
	if p.Keep > 0 && c.TimeMs+p.Keep.Milliseconds() <= now.UnixMilli() {
		return "retention", true
	}
	if requestedMs != 0 && requestedMs <= now.UnixMilli() && requestedMs >= c.TimeMs+p.MinKeep.Milliseconds() {
		return "request", true
	}
	return "", false
}

// commitDeletion appends a deletion record with its effect.
func commitDeletion(ctx context.Context, c Committer, now time.Time, d record.Deletion, eff DeletePayloads) (uint64, error) {
	if d.Deleted == nil {
		d.Deleted = []uint64{}
	}
	payload, err := record.Encode(&record.Meta{ReceivedMs: now.UnixMilli()}, &d)
	if err != nil {
		return 0, err
	}
	n, err := c.Commit(ctx, []ledger.Entry{{Kind: ledger.KindDeletion, Time: now, Payload: payload}}, eff)
	if err != nil {
		return 0, fmt.Errorf("purge: %w", err)
	}
	return n, nil
}

// ErrHeld is returned when a legal hold forbids an operation.
var ErrHeld = errors.New("retention: a legal hold covers records of this subject")

// ErrNotSubject and ErrUnknownRequest are returned (wrapped) for requests
// that name no subject, or no kind of request: the caller's to fix.
var (
	ErrNotSubject     = errors.New("retention: not a subject")
	ErrUnknownRequest = errors.New("retention: unknown request kind")
)

// subjectRecords returns every record of a subject with a payload.
func subjectRecords(ctx context.Context, s Store, subject string) ([]Candidate, error) {
	var out []Candidate
	var from uint64
	for {
		cs, err := s.SubjectRecords(ctx, subject, from, 1000)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
		if len(cs) < 1000 {
			return out, nil
		}
		from = cs[len(cs)-1].Index + 1
	}
}

// Shred destroys a subject's data key and deletes the payloads sealed with
// it, with a deletion record, in one transaction: crypto-shredding. Every
// copy of those payloads (a backup, a replica's disk) becomes unreadable
// with the key, and verify reports them as deleted by policy. It refuses
// while a legal hold covers one of the subject's records. The system's own
// key is never shredded.
//
// The deletion record names the subject and carries detail (who asked);
// sealer's cached keys are forgotten after the key is destroyed.
func Shred(ctx context.Context, s Store, c Committer, sealer ledger.Sealer, subject string, detail map[string]any, now time.Time) ([]uint64, error) {
	if !line.ValidSubject(subject) {
		return nil, fmt.Errorf("%w whose key can be destroyed (user:, group: or room: and a LINE id)", ErrNotSubject)
	}
	var indices []uint64
	for attempt := 0; ; attempt++ {
		holds, err := s.Holds(ctx)
		if err != nil {
			return nil, err
		}
		cs, err := subjectRecords(ctx, s, subject)
		if err != nil {
			return nil, err
		}
		// A hold that names the subject forbids the shred, whatever its
		// channel and period: its own record is about the subject.
		for _, h := range holds {
			if h.ReleasedMs == 0 && h.Subject == subject {
				return nil, fmt.Errorf("%w (hold %d)", ErrHeld, h.ID)
			}
		}
		indices = make([]uint64, 0, len(cs))
		for _, c := range cs {
			for _, h := range holds {
				if h.Covers(c) {
					return nil, fmt.Errorf("%w (hold %d)", ErrHeld, h.ID)
				}
			}
			indices = append(indices, c.Index)
		}
		basis := make(map[uint64]string, len(indices))
		for _, i := range indices {
			basis[i] = "shred"
		}
		d := record.Deletion{Deleted: indices, Reason: "the subject's data key was destroyed", Basis: basis, Subject: record.Pseudonym(subject), Detail: detail}
		_, err = commitDeletion(ctx, c, now, d, DeletePayloads{Indices: indices, Destroy: []string{subject}, HoldsKnown: NewestHold(holds)})
		if errors.Is(err, ErrHoldsChanged) && attempt < 5 {
			continue // a hold was added meanwhile: look at the holds again
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if sealer != nil {
		sealer.Reset()
	}
	return indices, nil
}

// RequestKind is a user's request that shortens retention.
type RequestKind string

// The requests.
const (
	DeletionRequest RequestKind = "deletion"
	Withdrawal      RequestKind = "withdrawal"
)

// RequestReport says what a request changed.
type RequestReport struct {
	Records int `json:"records"` // records of the subject with a payload
	Changed int `json:"changed"` // records whose delete-after time moved earlier
	// Unchanged by class: records whose class has no rule for the request.
	NoRule map[string]int `json:"no_rule,omitempty"`
	// DeleteAfter lists each changed record and its new delete-after time
	// (index, Unix ms), so that the request's record shows what it did.
	DeleteAfter [][2]int64 `json:"delete_after,omitempty"`
	// Effect applies the change; the caller commits it with the request's
	// record, so that the change takes effect only once it is recorded.
	Effect SetDeleteAfter `json:"-"`
}

// Apply works out a user's deletion request or consent withdrawal, made at
// time at, to the delete-after time of each of the subject's records, by
// the policy of its class: at most the policy's time after the request,
// never before the record's time plus the class's MinKeep, and never later
// than it already was. Records whose class has no rule for the request
// keep their time. Purges then delete them on schedule. Nothing changes
// until the caller commits the report's Effect with the request's record.
func Apply(ctx context.Context, s Store, policies map[string]Policy, subject string, kind RequestKind, at time.Time) (RequestReport, error) {
	rep := RequestReport{NoRule: map[string]int{}}
	if !line.ValidSubject(subject) {
		return rep, fmt.Errorf("%w (user:, group: or room: and a LINE id)", ErrNotSubject)
	}
	if kind != DeletionRequest && kind != Withdrawal {
		return rep, fmt.Errorf("%w %q (deletion or withdrawal)", ErrUnknownRequest, kind)
	}
	cs, err := subjectRecords(ctx, s, subject)
	if err != nil {
		return rep, err
	}
	rep.Records = len(cs)
	var changed []Candidate
	for _, c := range cs {
		p := policies[c.Class]
		d := p.AfterDeletionRequest
		if kind == Withdrawal {
			d = p.AfterWithdrawal
		}
		if d == nil {
			rep.NoRule[c.Class]++
			continue
		}
		t := max(at.Add(*d).UnixMilli(), c.TimeMs+p.MinKeep.Milliseconds())
		if c.DeleteAfterMs == 0 || t < c.DeleteAfterMs {
			c.DeleteAfterMs = t
			changed = append(changed, c)
		}
	}
	rep.Changed = len(changed)
	if len(rep.NoRule) == 0 {
		rep.NoRule = nil
	}
	rep.Effect = SetDeleteAfter{Records: changed}
	for _, c := range changed {
		rep.DeleteAfter = append(rep.DeleteAfter, [2]int64{int64(c.Index), c.DeleteAfterMs})
	}
	return rep, nil
}

// Policies are retention classes by name. They tell verify when each
// deletion was due (ledger.DeletionPolicy).
type Policies map[string]Policy

// Keep implements ledger.DeletionPolicy.
func (p Policies) Keep(class string) (keep, minKeep time.Duration, ok bool) {
	c, ok := p[class]
	return c.Keep, c.MinKeep, ok
}
