package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/record"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// VerifyReport summarises a successful verification.
type VerifyReport struct {
	Records      uint64 // records read, integrated or not
	TreeSize     uint64 // size of the stored tree head
	Checkpoints  int    // stored checkpoints checked
	PayloadBytes uint64 // payload bytes hashed
	Tiles        int    // tiles compared
	Deleted      int    // payloads deleted by policy, each named by a deletion record

	// Without a Sealer, only the structure is checked: sealed payloads
	// are not opened, so their commitments are not checked, and the
	// deletion records among them cannot name what they deleted.
	Unopened         uint64 // sealed payloads not opened: commitments not checked
	DeletedUnchecked int    // payloads deleted before a sealed deletion record, not matched to one

	// DeletedUnsigned are payloads deleted by deletion records appended
	// after the tree head: not counted as deleted by policy until a
	// checkpoint signs them.
	DeletedUnsigned int
	// DueUnchecked are deletions whose record's retention class the
	// verifier has no policy for (WithDeletionPolicy): their due times
	// were not checked.
	DueUnchecked int

	// Rollbacks are the external checkpoints that the tree does not
	// extend, each acknowledged as lost by a record inside the tree.
	Rollbacks []AcknowledgedRollback
}

// VerifyError names the first place where storage disagrees with itself.
type VerifyError struct {
	Where  string // "record 12", "tile 0/3", "tree head", "checkpoint 7 (size 120)", ...
	Reason string
}

func (e *VerifyError) Error() string { return e.Where + ": " + e.Reason }

func verr(where, format string, args ...any) error {
	return &VerifyError{Where: where, Reason: fmt.Sprintf(format, args...)}
}

// External is a signed checkpoint kept outside the store: the published
// checkpoint file, or an anchor.
type External struct {
	Name   string // "checkpoint file", "anchor 2026-11-26"
	Signed []byte
}

// Verify recomputes everything in view from the records up: each payload's
// commitment, each leaf hash, every hash of every tile, the tree head and
// the root of every stored checkpoint, whose signatures it checks with v.
// The view must contain a tree that extends every external checkpoint (the
// checkpoint file, the anchors), so that a store rolled back or rewritten
// is caught, unless a rollback acknowledgement inside the tree names the
// checkpoint it does not extend: the report lists those losses.
//
// view should be one snapshot (Snapshotter.Snapshot): Verify holds what it
// reads to the view's own tree head, exactly, tile by tile, which only a
// snapshot can promise while the log is written to. (A Store is a ReadView
// too, but only a quiescent one verifies reliably.)
//
// It reads the view once, in index order, and keeps O(log n) hashes in
// memory. The error is a *VerifyError naming the first bad place it met,
// or the error of the store.
//
// Sealed payloads are decrypted with s to check their commitments; a
// payload whose data key was destroyed must be named by a deletion record,
// as a deleted one must. With a nil s, Verify checks the structure only
// (leaf encodings and hashes, tiles, tree head, checkpoints, external
// checkpoints, and payloads stored in the clear): the report counts the
// sealed payloads it could not open.
func Verify(ctx context.Context, view ReadView, v note.Verifier, origin string, external []External, s Sealer, opts ...VerifyOption) (VerifyReport, error) {
	var rep VerifyReport
	var o verifyOptions
	for _, opt := range opts {
		opt(&o)
	}
	head, err := view.TreeHead(ctx)
	if err != nil {
		return rep, fmt.Errorf("read tree head: %w", err)
	}
	rep.TreeSize = head.Size
	if head.Checkpoint == nil {
		return rep, verr("tree head", "no signed checkpoint")
	}
	hc, err := OpenCheckpoint(head.Checkpoint, v, origin)
	if err != nil {
		return rep, verr("tree head", "%v", err)
	}
	if hc.Size != head.Size || hc.Hash != head.Hash {
		return rep, verr("tree head", "checkpoint (size %d) does not match the stored size %d and hash", hc.Size, head.Size)
	}

	// Every root hash the store claims, by tree size: the stored
	// checkpoints, the tree head, and the published checkpoint file.
	type claim struct {
		size  uint64
		hash  [32]byte
		where string
		ext   *externalCheck // for an external checkpoint: a different root is a loss to be acknowledged
	}
	var claims []claim
	i := 0
	for cp, err := range view.Checkpoints(ctx) {
		if err != nil {
			return rep, fmt.Errorf("read checkpoints: %w", err)
		}
		i++
		c, err := OpenCheckpoint(cp, v, origin)
		where := fmt.Sprintf("checkpoint %d", i)
		if err != nil {
			return rep, verr(where, "%v", err)
		}
		if c.Size > head.Size {
			return rep, verr(where, "size %d is beyond the tree head's size %d", c.Size, head.Size)
		}
		claims = append(claims, claim{c.Size, c.Hash, fmt.Sprintf("%s (size %d)", where, c.Size), nil})
	}
	rep.Checkpoints = i
	if !slices.ContainsFunc(claims, func(c claim) bool { return c.size == head.Size && c.hash == head.Hash }) {
		return rep, verr("tree head", "size %d is missing from the checkpoint history", head.Size)
	}
	exts, err := openExternals(external, v, origin, head)
	if err != nil {
		return rep, err
	}
	for _, x := range exts {
		if x.err == nil {
			claims = append(claims, claim{x.Size, x.Hash, fmt.Sprintf("%s (size %d)", x.Name, x.Size), x})
		}
	}
	slices.SortStableFunc(claims, func(a, b claim) int { return compareU64(a.size, b.size) })
	checkRoots := func(r *compact.Range) error {
		for len(claims) > 0 && claims[0].size == r.End() {
			root, err := r.GetRootHash(nil)
			if err != nil {
				return err
			}
			if r.End() == 0 {
				root = rfc6962.DefaultHasher.EmptyRoot()
			}
			if !bytes.Equal(root, claims[0].hash[:]) {
				err := verr(claims[0].where, "root hash %s differs from the hash recomputed from the records, %s",
					b64(claims[0].hash[:]), b64(root))
				if claims[0].ext == nil {
					return err
				}
				claims[0].ext.notExtended(err)
			}
			claims = claims[1:]
		}
		return nil
	}

	count, err := view.Count(ctx)
	if err != nil {
		return rep, fmt.Errorf("count records: %w", err)
	}
	if count < head.Size {
		return rep, verr(fmt.Sprintf("record %d", count), "missing: the tree head covers %d records, the store holds %d", head.Size, count)
	}

	tc := &tileChecker{ctx: ctx, reader: view, size: head.Size}
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	if err := checkRoots(rng); err != nil {
		return rep, err
	}
	copies := newCopyFinder(count)
	next := uint64(0)
	// Payloads deleted by policy wait here for the deletion record that
	// names them, which comes later in the log.
	deletedPending := map[uint64]Leaf{}
	// The delete-after times that deletion requests set, by record.
	requested := map[uint64]int64{}
	// Without a Sealer, the last deletion record whose payload stayed
	// sealed: the payloads deleted before it may be the ones it names.
	sealedDeletion, anySealedDeletion := uint64(0), false
	for b, err := range checkRecords(ctx, view, count, s) {
		if err != nil {
			return rep, fmt.Errorf("read records: %w", err)
		}
		for i, rec := range b.recs {
			if rec.Index != next {
				return rep, verr(fmt.Sprintf("record %d", next), "missing")
			}
			next++
			if b.errs[i] != nil {
				return rep, b.errs[i]
			}
			copies.add(b.checks[i].leaf.Commitment)
			if rec.Payload == nil {
				deletedPending[rec.Index] = b.checks[i].leaf
			}
			for _, r := range b.checks[i].requests {
				if r[0] >= 0 && uint64(r[0]) < rec.Index {
					requested[uint64(r[0])] = r[1]
				}
			}
			if b.unopened[i] {
				rep.Unopened++
				if b.kinds[i] == KindDeletion {
					sealedDeletion, anySealedDeletion = rec.Index, true
				}
			}
			for _, d := range b.deletes[i] {
				where := fmt.Sprintf("record %d", rec.Index)
				if d >= rec.Index {
					return rep, verr(where, "deletion record names record %d, which comes after it", d)
				}
				deleted, ok := deletedPending[d]
				if !ok {
					continue // its payload is still there, or was named before
				}
				checked, err := o.checkDue(deleted, b.checks[i].basis[d], requested[d], b.checks[i].leaf)
				if err != nil {
					return rep, verr(where, "deletion of record %d: %v", d, err)
				}
				if !checked {
					rep.DueUnchecked++
				}
				delete(deletedPending, d)
				if rec.Index >= head.Size {
					// A deletion counts only once it is signed: this one
					// was appended after the tree head (a purge moments
					// ago), and is reported apart.
					rep.DeletedUnsigned++
					continue
				}
				rep.Deleted++
			}
			rep.PayloadBytes += uint64(len(rec.Payload))
			rep.Records++
			if rec.Index >= head.Size {
				continue // appended, not yet integrated
			}
			if err := rng.Append(b.leafHashes[i][:], tc.visit); err != nil {
				return rep, err
			}
			if tc.err != nil {
				return rep, tc.err
			}
			if err := checkRoots(rng); err != nil {
				return rep, err
			}
		}
	}
	if next != count {
		return rep, verr(fmt.Sprintf("record %d", next), "missing")
	}
	for d := range deletedPending {
		if anySealedDeletion && d < sealedDeletion {
			delete(deletedPending, d)
			rep.DeletedUnchecked++
		}
	}
	if len(deletedPending) > 0 {
		first := slices.Min(slices.Collect(maps.Keys(deletedPending)))
		return rep, verr(fmt.Sprintf("record %d", first), "payload missing, and no deletion record names it")
	}
	if err := tc.finish(); err != nil {
		return rep, err
	}
	// A row copied whole opens under its own leaf: only its commitment,
	// the same as an earlier record's, shows it was not written anew.
	if idx, of, found, err := copies.find(ctx, view, count); err != nil {
		return rep, err
	} else if found {
		return rep, verr(fmt.Sprintf("record %d", idx), "a copy of record %d (the same salted commitment): not written by linegate", of)
	}
	rep.Tiles = tc.tiles
	if len(claims) > 0 {
		return rep, verr(claims[0].where, "not covered by the records")
	}
	if rep.Rollbacks, err = acknowledgedLosses(ctx, view, head.Size, count, s, v, origin, exts); err != nil {
		return rep, err
	}
	return rep, nil
}

// VerifyOption adds a check to Verify.
type VerifyOption func(*verifyOptions)

type verifyOptions struct {
	policy DeletionPolicy
}

// DeletionPolicy says when a record's payload may be deleted: the
// retention classes' periods, which the ledger itself does not know
// (package retention implements it).
type DeletionPolicy interface {
	// Keep returns, for a retention class, how long after a record's time
	// its payload is kept (0: no automatic deletion) and the least time
	// any request leaves it; ok is false for a class the policy lacks.
	Keep(class string) (keep, minKeep time.Duration, ok bool)
}

// WithDeletionPolicy makes Verify check that every deletion was due when
// it was made, by the basis its deletion record gives: "retention" (the
// record's time plus its class's keep period had passed), "request" (a
// deletion request recorded before set a time that had passed, and that
// is not before the record's time plus its class's least keep period), or
// "shred" (its subject's key was destroyed). A deletion with no basis, or
// one that was not due, is a finding; one of a class the policy lacks is
// counted in VerifyReport.DueUnchecked.
func WithDeletionPolicy(p DeletionPolicy) VerifyOption {
	return func(o *verifyOptions) { o.policy = p }
}

// checkDue checks one deletion against the policy, and reports whether it
// could.
func (o *verifyOptions) checkDue(deleted Leaf, basis string, requestedMs int64, deletion Leaf) (bool, error) {
	if basis == "shred" {
		return true, nil
	}
	if basis != "retention" && basis != "request" {
		return false, fmt.Errorf("no basis given (%q)", basis)
	}
	if o.policy == nil {
		return false, nil
	}
	keep, minKeep, ok := o.policy.Keep(deleted.Retention)
	if !ok {
		return false, nil
	}
	at := deletion.Time.UnixMilli()
	switch basis {
	case "retention":
		if keep <= 0 {
			return true, fmt.Errorf("class %q keeps payloads until deleted otherwise, yet the deletion says its period was over", deleted.Retention)
		}
		if due := deleted.Time.Add(keep).UnixMilli(); due > at {
			return true, fmt.Errorf("class %q keeps it until %s, and it was deleted at %s", deleted.Retention,
				time.UnixMilli(due).UTC().Format(time.RFC3339), deletion.Time.UTC().Format(time.RFC3339))
		}
	case "request":
		if requestedMs == 0 {
			return true, errors.New("deleted on a request, but no deletion request recorded before it names the record")
		}
		if least := deleted.Time.Add(minKeep).UnixMilli(); requestedMs < least {
			return true, fmt.Errorf("a request may not bring class %q's deletion before %s", deleted.Retention, time.UnixMilli(least).UTC().Format(time.RFC3339))
		}
		if requestedMs > at {
			return true, fmt.Errorf("the request set %s, and it was deleted at %s", time.UnixMilli(requestedMs).UTC().Format(time.RFC3339), deletion.Time.UTC().Format(time.RFC3339))
		}
	}
	return true, nil
}

// recordBatch is a run of records checked on their own: commitments
// verified and leaf hashes computed, by a worker.
type recordBatch struct {
	recs       []Record
	errs       []error // per record: the record's own fault, or nil
	leafHashes [][32]byte
	deletes    [][]uint64 // per deletion record: the records it deleted
	unopened   []bool     // per record: sealed, and no Sealer to open it
	checks     []recordCheck
	kinds      []Kind
	done       chan struct{}
}

// checkRecords reads records [0, count) and checks each on its own
// (leaf encoding, payload against commitment, leaf hash) on all cores,
// yielding the batches in index order. The checks that depend on order,
// the tree and the tiles, stay with the caller.
func checkRecords(ctx context.Context, view ReadView, count uint64, s Sealer) iter.Seq2[*recordBatch, error] {
	return func(yield func(*recordBatch, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		workers := runtime.GOMAXPROCS(0)
		order := make(chan *recordBatch, 4*workers)
		work := make(chan *recordBatch, 4*workers)
		var readErr error
		go func() {
			defer close(order)
			defer close(work)
			b := &recordBatch{done: make(chan struct{})}
			send := func() bool {
				select {
				case order <- b:
				case <-ctx.Done():
					return false
				}
				work <- b
				b = &recordBatch{done: make(chan struct{})}
				return true
			}
			for rec, err := range view.Records(ctx, 0, count) {
				if err != nil {
					readErr = err
					break
				}
				b.recs = append(b.recs, rec)
				if len(b.recs) == 512 && !send() {
					return
				}
			}
			if len(b.recs) > 0 {
				send()
			}
		}()
		for range workers {
			go func() {
				for b := range work {
					b.errs = make([]error, len(b.recs))
					b.leafHashes = make([][32]byte, len(b.recs))
					b.deletes = make([][]uint64, len(b.recs))
					b.unopened = make([]bool, len(b.recs))
					b.kinds = make([]Kind, len(b.recs))
					b.checks = make([]recordCheck, len(b.recs))
					for i, rec := range b.recs {
						var c recordCheck
						c, b.errs[i] = checkRecord(ctx, s, rec)
						b.deletes[i], b.unopened[i], b.kinds[i], b.checks[i] = c.deletes, c.unopened, c.kind, c
						if b.errs[i] == nil {
							copy(b.leafHashes[i][:], rfc6962.DefaultHasher.HashLeaf(rec.Leaf))
						}
					}
					close(b.done)
				}
			}()
		}
		for b := range order {
			<-b.done
			if !yield(b, nil) {
				return
			}
		}
		if readErr != nil {
			yield(nil, readErr)
		}
	}
}

// recordCheck is what checkRecord learnt of a record.
type recordCheck struct {
	kind     Kind
	leaf     Leaf
	deletes  []uint64          // for a deletion record: the indices it deleted
	basis    map[uint64]string // and on what basis each was due
	requests [][2]int64        // for a deletion request: (index, delete-after ms) it set
	unopened bool              // sealed, and no Sealer: its commitment is not checked
}

// checkRecord checks what a record can show on its own. A record whose
// payload and nonce are both gone passes here: the caller checks that a
// deletion record names it. With a nil Sealer, a sealed payload is left
// unopened.
func checkRecord(ctx context.Context, s Sealer, rec Record) (recordCheck, error) {
	where := fmt.Sprintf("record %d", rec.Index)
	if rec.Leaf == nil {
		return recordCheck{}, verr(where, "missing")
	}
	var leaf Leaf
	if err := leaf.UnmarshalBinary(rec.Leaf); err != nil {
		return recordCheck{}, verr(where, "%v", err)
	}
	c := recordCheck{kind: leaf.Kind, leaf: leaf}
	switch {
	case rec.Payload == nil && rec.Nonce == nil:
		return c, nil // deleted: to be named by a deletion record
	case rec.Payload == nil || rec.Nonce == nil:
		return c, verr(where, "payload missing")
	case s == nil && len(rec.Keys) > 0:
		c.unopened = true
		return c, nil
	}
	payload, err := OpenPayload(ctx, s, rec)
	switch {
	case err != nil:
		return c, verr(where, "payload does not decrypt: %v", err)
	case Commit(rec.Nonce, payload) != leaf.Commitment:
		return c, verr(where, "payload does not match its commitment")
	}
	switch leaf.Kind {
	case KindMedia:
		_, b, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			return c, verr(where, "malformed media record: %v", err)
		}
		if m := b.(*record.Media); m.Stored == "record" {
			if err := m.CheckContent(m.Content); err != nil {
				return c, verr(where, "media: %v", err)
			}
		}
	case KindDeletion:
		_, b, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			return c, verr(where, "malformed deletion record: %v", err)
		}
		d := b.(*record.Deletion)
		c.deletes, c.basis = d.Deleted, d.Basis
	case KindAdmin:
		// A deletion request lists the delete-after times it set: the
		// basis of the deletions it allows before their keep period.
		_, b, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			return c, verr(where, "malformed admin record: %v", err)
		}
		if a := b.(*record.Admin); a.Action == "subject_request" {
			if raw, ok := a.Detail["delete_after"]; ok {
				j, _ := json.Marshal(raw)
				if json.Unmarshal(j, &c.requests) != nil {
					return c, verr(where, "malformed deletion request: delete_after")
				}
			}
		}
	}
	return c, nil
}

// tileChecker compares every node hash of the tree, as it is recomputed,
// with the stored tile that should hold it.
type tileChecker struct {
	ctx    context.Context
	reader TileReader
	size   uint64
	cur    []tileCursor // by tile level
	tiles  int
	err    error
}

type tileCursor struct {
	index uint64
	data  []byte
	seen  int // hashes compared in this tile
	open  bool
}

func (tc *tileChecker) visit(id compact.NodeID, h []byte) {
	if tc.err != nil || id.Level%TileHeight != 0 {
		return
	}
	level := uint64(id.Level / TileHeight)
	for uint64(len(tc.cur)) <= level {
		tc.cur = append(tc.cur, tileCursor{})
	}
	c := &tc.cur[level]
	index, pos := id.Index/TileWidth, int(id.Index%TileWidth)
	if !c.open || c.index != index {
		if c.open {
			if tc.err = tc.close(level, c); tc.err != nil {
				return
			}
		}
		data, err := tc.reader.ReadTile(tc.ctx, level, index)
		if err != nil {
			tc.err = verr(fmt.Sprintf("tile %d/%d", level, index), "%v", err)
			return
		}
		*c = tileCursor{index: index, data: data, open: true}
	}
	where := fmt.Sprintf("tile %d/%d", level, index)
	if level == 0 {
		// A level-0 hash is a leaf hash: either the record's leaf or the
		// tile was changed, and nothing tells which.
		where = fmt.Sprintf("record %d (tile 0/%d)", id.Index, index)
	}
	if len(c.data) < (pos+1)*hashSize {
		tc.err = verr(fmt.Sprintf("tile %d/%d", level, index), "holds %d hashes, the tree needs %d", len(c.data)/hashSize, pos+1)
		return
	}
	if !bytes.Equal(c.data[pos*hashSize:(pos+1)*hashSize], h) {
		if level == 0 {
			tc.err = verr(where, "the leaf's hash differs from hash %d of the tile", pos)
		} else {
			tc.err = verr(where, "hash %d differs from the hash recomputed from the records", pos)
		}
		return
	}
	c.seen = pos + 1
}

// close checks that a tile holds no hash beyond the ones the tree has.
func (tc *tileChecker) close(level uint64, c *tileCursor) error {
	tc.tiles++
	if len(c.data) != c.seen*hashSize {
		return verr(fmt.Sprintf("tile %d/%d", level, c.index), "holds %d bytes, want %d hashes", len(c.data), c.seen)
	}
	return nil
}

func (tc *tileChecker) finish() error {
	for l := range tc.cur {
		if c := &tc.cur[l]; c.open {
			if err := tc.close(uint64(l), c); err != nil {
				return err
			}
		}
	}
	return nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
