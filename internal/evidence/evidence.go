// Package evidence writes and checks evidence bundles: the records an
// auditor asks for, each with what is needed to check it offline, with
// nothing but the bundle: the payload, decrypted (for a webhook, the raw
// body and the x-line-signature exactly as received), the salted
// commitment's nonce, the leaf, a c2sp.org/tlog-proof inclusion proof
// against a signed checkpoint, the log's public key, and the anchors with
// their consistency proofs.
package evidence

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Selection says which records to export. Zero fields select all.
type Selection struct {
	From, To  time.Time // record time in [From, To)
	Channel   string
	User      string // a LINE user id
	MessageID string // a LINE message id
	// Records, when not nil, selects these records alone (by index),
	// within the other fields (an incident's timeline).
	Records []uint64
}

// selectionJSON is a Selection in manifest.json: the range's ends in RFC
// 3339 (UTC), or "open" for an end not given.
type selectionJSON struct {
	From      string   `json:"from"`
	To        string   `json:"to"`
	Channel   string   `json:"channel,omitempty"`
	User      string   `json:"user,omitempty"`
	MessageID string   `json:"message_id,omitempty"`
	Records   []uint64 `json:"records,omitempty"`
}

// openEnd is an end of the selected range that was not given.
const openEnd = "open"

// MarshalJSON implements json.Marshaler.
func (s Selection) MarshalJSON() ([]byte, error) {
	end := func(t time.Time) string {
		if t.IsZero() {
			return openEnd
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(selectionJSON{From: end(s.From), To: end(s.To), Channel: s.Channel, User: s.User, MessageID: s.MessageID, Records: s.Records})
}

// UnmarshalJSON implements json.Unmarshaler. It reads the manifests of
// older bundles too, whose keys were the field names and whose open ends
// were the zero time.
func (s *Selection) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	str := func(keys ...string) (string, error) {
		for _, k := range keys {
			if raw, ok := m[k]; ok {
				var v string
				err := json.Unmarshal(raw, &v)
				return v, err
			}
		}
		return "", nil
	}
	end := func(keys ...string) (time.Time, error) {
		v, err := str(keys...)
		if err != nil || v == "" || v == openEnd {
			return time.Time{}, err
		}
		return time.Parse(time.RFC3339Nano, v)
	}
	var err error
	var sel Selection
	if sel.From, err = end("from", "From"); err != nil {
		return fmt.Errorf("selection: from: %w", err)
	}
	if sel.To, err = end("to", "To"); err != nil {
		return fmt.Errorf("selection: to: %w", err)
	}
	if sel.Channel, err = str("channel", "Channel"); err != nil {
		return err
	}
	if sel.User, err = str("user", "User"); err != nil {
		return err
	}
	if sel.MessageID, err = str("message_id", "MessageID"); err != nil {
		return err
	}
	if raw, ok := m["records"]; ok {
		if err := json.Unmarshal(raw, &sel.Records); err != nil {
			return fmt.Errorf("selection: records: %w", err)
		}
	}
	*s = sel
	return nil
}

// Summary is record.json: what a record is, for people.
type Summary struct {
	Index      uint64   `json:"index"`
	Kind       string   `json:"kind"`
	Time       string   `json:"time"`
	Channel    string   `json:"channel"`
	Retention  string   `json:"retention,omitempty"`
	Commitment string   `json:"commitment"`
	Signature  string   `json:"x_line_signature,omitempty"`   // webhooks: as received
	RequestIDs []string `json:"x_line_request_ids,omitempty"` // outbound: for LINE support
}

// Manifest is manifest.json.
type Manifest struct {
	Origin     string    `json:"origin"`
	TreeSize   uint64    `json:"tree_size"`
	Selection  Selection `json:"selection"`
	Records    []uint64  `json:"records"`
	Skipped    int       `json:"skipped_not_yet_integrated,omitempty"`
	ExportedAt time.Time `json:"exported_at"`
	// ExportFormat is the format exported for review platforms beside the
	// records (rsmf, eml, jsonl), or "" for the bundle alone: a bundle
	// that names one must hold its exports.
	ExportFormat string `json:"export_format,omitempty"`
}

// SetExportFormat records in the manifest.json of the bundle in dir that
// it holds an export in format, before the export is written.
func SetExportFormat(dir, format string) error {
	p := filepath.Join(dir, "manifest.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("manifest.json: %w", err)
	}
	m.ExportFormat = format
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, append(mj, '\n'), 0o600)
}

// Export writes a bundle of the selected records to dir, which must not
// exist yet, from view: one snapshot (ledger.Snapshotter), so that the
// proofs are all against its tree head, whatever is appended meanwhile.
// vkey is the log's public key (log.vkey); anchorsDir, if not
// empty, holds the anchors to include. Sealed payloads are decrypted with
// sealer; those whose data key was destroyed are left out, as deleted ones
// are.
func Export(ctx context.Context, view ledger.ReadView, sealer ledger.Sealer, vkey []byte, anchorsDir string, sel Selection, dir string) (*Manifest, error) {
	v, err := ledger.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	head, err := view.TreeHead(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := ledger.OpenCheckpoint(head.Checkpoint, v, v.Name()); err != nil {
		return nil, fmt.Errorf("the stored checkpoint does not verify: %w", err)
	}
	// The bundle holds decrypted payloads: its directories are 0700 and its
	// files 0600 (public anchors 0400), whatever the umask.
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	for _, sub := range []string{"records", "anchors"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	// A user is named "U..." or as a subject, "user:U...": the same user.
	sel.User = strings.TrimPrefix(sel.User, "user:")
	m := &Manifest{Origin: v.Name(), TreeSize: head.Size, Selection: sel, ExportedAt: time.Now().UTC()}
	count, err := view.Count(ctx)
	if err != nil {
		return nil, err
	}
	// include writes a selected record into the bundle, if it is in the
	// checkpoint the proofs are against.
	include := func(rec ledger.Record, leaf ledger.Leaf) error {
		if rec.Index >= head.Size {
			m.Skipped++
			return nil
		}
		if err := writeRecord(ctx, view, dir, rec, leaf, head); err != nil {
			return err
		}
		m.Records = append(m.Records, rec.Index)
		return nil
	}
	keys := map[string]bool{} // dedup keys of selected webhook events, to follow links
	type linkedRecord struct {
		rec    ledger.Record
		leaf   ledger.Leaf
		ofUser bool // sealed under the selected user's key
	}
	var linked []linkedRecord
	var only map[uint64]bool
	if sel.Records != nil {
		only = make(map[uint64]bool, len(sel.Records))
		for _, i := range sel.Records {
			only[i] = true
		}
	}
	for rec, err := range view.Records(ctx, 0, count) {
		if err != nil {
			return nil, err
		}
		if only != nil && !only[rec.Index] {
			continue
		}
		var leaf ledger.Leaf
		if rec.Leaf == nil || leaf.UnmarshalBinary(rec.Leaf) != nil || rec.Payload == nil {
			continue
		}
		if !sel.From.IsZero() && leaf.Time.Before(sel.From) || !sel.To.IsZero() && !leaf.Time.Before(sel.To) {
			continue
		}
		if sel.Channel != "" && leaf.Channel != sel.Channel {
			continue
		}
		if leaf.Kind == ledger.KindWebhook && sel.User != "" && len(rec.Keys) > 0 &&
			!slices.Contains(ledger.Subjects(rec.Keys), "user:"+sel.User) {
			continue // sealed for other subjects only: no need to open it
		}
		subjects := ledger.Subjects(rec.Keys)
		payload, err := ledger.OpenPayload(ctx, sealer, rec)
		if errors.Is(err, ledger.ErrKeyDestroyed) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", rec.Index, err)
		}
		rec.Payload, rec.Keys = payload, nil
		_, body, err := record.SplitPayload(rec.Payload)
		if err != nil {
			continue
		}
		if leaf.Kind == ledger.KindWebhook {
			if !matchWebhook(body, sel, keys) {
				continue
			}
		} else if sel.User != "" || sel.MessageID != "" {
			// Outcomes and sends of the selected events, by their key;
			// for a user also whatever is sealed under the user's key
			// (the user's consent and requests, sends to the user).
			linked = append(linked, linkedRecord{rec, leaf, slices.Contains(subjects, "user:"+sel.User)})
			continue
		}
		if err := include(rec, leaf); err != nil {
			return nil, err
		}
	}
	for _, l := range linked {
		if !keys[eventKey(l.leaf.Kind, l.rec.Payload)] && !(l.ofUser && sel.MessageID == "") {
			continue
		}
		if err := include(l.rec, l.leaf); err != nil {
			return nil, err
		}
	}
	slices.Sort(m.Records)
	if err := copyAnchors(ctx, view, anchorsDir, filepath.Join(dir, "anchors"), head, v); err != nil {
		return nil, err
	}
	mj, _ := json.MarshalIndent(m, "", "  ")
	for name, data := range map[string][]byte{
		"log.vkey":      append(bytes.TrimSpace(vkey), '\n'),
		"checkpoint":    head.Checkpoint,
		"manifest.json": append(mj, '\n'),
		"README.md":     []byte(readme),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// eventKey returns the dedup key of the event an outcome or a send
// belongs to ("" for other kinds, or a body that does not decode).
func eventKey(k ledger.Kind, payload []byte) string {
	_, b, err := record.Decode(k, payload)
	if err != nil {
		return ""
	}
	switch b := b.(type) {
	case *record.Outcome:
		return b.Key
	case *record.Outbound:
		return b.EventKey
	case *record.Media:
		return b.EventKey
	}
	return ""
}

// matchWebhook reports whether a webhook body has an event of the selected
// user or message, and notes the selected events' keys.
func matchWebhook(body []byte, sel Selection, keys map[string]bool) bool {
	if sel.User == "" && sel.MessageID == "" {
		return true
	}
	cb, err := line.ParseCallback(body)
	if err != nil {
		return false
	}
	found := false
	for _, raw := range cb.Events {
		e := line.DecodeEvent(raw)
		if sel.User != "" && (e.Source == nil || e.Source.UserID != sel.User) {
			continue
		}
		if sel.MessageID != "" && (e.Message == nil || e.Message.ID != sel.MessageID) {
			continue
		}
		keys[e.DedupKey()] = true
		found = true
	}
	return found
}

func writeRecord(ctx context.Context, tiles ledger.TileReader, dir string, rec ledger.Record, leaf ledger.Leaf, head ledger.TreeHead) error {
	meta, body, err := record.SplitPayload(rec.Payload)
	if err != nil {
		return err
	}
	p, err := ledger.InclusionProof(ctx, tiles, rec.Index, head.Size)
	if err != nil {
		return err
	}
	sj := summaryJSON(rec.Index, leaf, meta, rec.Payload)
	rd := filepath.Join(dir, "records", fmt.Sprintf("%012d", rec.Index))
	if err := os.Mkdir(rd, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"record.json":          sj,
		"leaf":                 rec.Leaf,
		"nonce":                rec.Nonce,
		"meta.json":            meta,
		"body":                 body,
		"inclusion.tlog-proof": ledger.FormatTlogProof(rec.Index, p, head.Checkpoint),
	}
	if leaf.Kind == ledger.KindMedia {
		if err := splitMediaFiles(files); err != nil {
			return err
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(rd, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// summaryJSON is a record's record.json: made from the leaf, the
// metadata and the payload alone, so that Verify rebuilds it and requires
// the bundle's to be the same.
func summaryJSON(index uint64, leaf ledger.Leaf, meta, payload []byte) []byte {
	s := Summary{Index: index, Kind: leaf.Kind.String(), Time: leaf.Time.UTC().Format(time.RFC3339Nano),
		Channel: leaf.Channel, Retention: leaf.Retention, Commitment: hex.EncodeToString(leaf.Commitment[:])}
	var m record.Meta
	json.Unmarshal(meta, &m)
	if sig := m.Headers["X-Line-Signature"]; len(sig) > 0 {
		s.Signature = sig[0]
	}
	if leaf.Kind == ledger.KindOutbound {
		if _, b, err := record.Decode(leaf.Kind, payload); err == nil {
			s.RequestIDs = b.(*record.Outbound).RequestIDs()
		}
	}
	sj, _ := json.MarshalIndent(s, "", "  ")
	return append(sj, '\n')
}

// copyAnchors copies the anchors that the bundle's tree extends, with a
// consistency proof from the last of them to the bundle's checkpoint.
func copyAnchors(ctx context.Context, tiles ledger.TileReader, from, to string, head ledger.TreeHead, v note.Verifier) error {
	if from == "" {
		return nil
	}
	anchors, err := ledger.ReadAnchors(from, v, v.Name())
	if err != nil {
		return err
	}
	var last *ledger.Anchor
	for _, a := range anchors {
		if a.Size > head.Size {
			break
		}
		for _, ext := range []string{".checkpoint", ".consistency"} {
			b, err := os.ReadFile(filepath.Join(from, a.Name()+ext))
			if err == nil {
				if err := os.WriteFile(filepath.Join(to, a.Name()+ext), b, 0o400); err != nil {
					return err
				}
			}
		}
		last = a
	}
	if last == nil {
		return nil
	}
	var hashes [][32]byte
	if last.Size > 0 {
		if hashes, err = ledger.ConsistencyProof(ctx, tiles, last.Size, head.Size); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(to, "checkpoint.consistency"), ledger.FormatConsistency(last.Name(), last.Size, head.Size, hashes), 0o400)
}

// Verify checks a bundle with nothing but its files: the checkpoint's
// signature with the bundle's log.vkey, every record's commitment, leaf
// and inclusion proof, and the anchors' consistency up to the checkpoint.
// The error names the first bad record or file. trustedVkey, if not nil,
// is the key the auditor holds, which the bundle's must equal.
func Verify(dir string, trustedVkey []byte) (*Manifest, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	bfs := bundleFS{root}
	vkey, err := fs.ReadFile(bfs, "log.vkey")
	if err != nil {
		return nil, err
	}
	if trustedVkey != nil && !bytes.Equal(bytes.TrimSpace(vkey), bytes.TrimSpace(trustedVkey)) {
		return nil, errors.New("log.vkey: not the key you trust")
	}
	v, err := ledger.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	cpb, err := fs.ReadFile(bfs, "checkpoint")
	if err != nil {
		return nil, err
	}
	cp, err := ledger.OpenCheckpoint(cpb, v, v.Name())
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var m Manifest
	mj, err := fs.ReadFile(bfs, "manifest.json")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	entries, err := fs.ReadDir(bfs, "records")
	if err != nil {
		return nil, err
	}
	var found []uint64
	for _, ent := range entries {
		idx, err := verifyRecord(bfs, "records/"+ent.Name(), cp, cpb)
		if err != nil {
			return nil, fmt.Errorf("record %s: %w", strings.TrimLeft(ent.Name(), "0"), err)
		}
		if ent.Name() != fmt.Sprintf("%012d", idx) {
			return nil, fmt.Errorf("records/%s: holds record %d, which is not the one its name says", ent.Name(), idx)
		}
		found = append(found, idx)
	}
	if !slices.Equal(found, m.Records) {
		return nil, errors.New("manifest.json: its record list differs from the records in the bundle")
	}
	if err := verifyExports(bfs, found); err != nil {
		return nil, err
	}
	// The anchors directory must be a real one (a link in its place would
	// have the anchors skipped); a bundle without one has no anchors.
	var anchors []*ledger.Anchor
	if fi, err := root.Lstat("anchors"); err == nil && (!fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0) {
		return nil, &fs.PathError{Op: "open", Path: "anchors", Err: errNotRegular}
	} else if err == nil {
		afs, err := fs.Sub(bfs, "anchors")
		if err != nil {
			return nil, err
		}
		if anchors, err = ledger.ReadAnchorsFS(afs, v, v.Name()); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if len(anchors) > 0 {
		last := anchors[len(anchors)-1]
		b, err := fs.ReadFile(bfs, "anchors/checkpoint.consistency")
		if err != nil {
			return nil, err
		}
		if err := ledger.CheckConsistency(b, last.Name(), last.Checkpoint, cp); err != nil {
			return nil, fmt.Errorf("anchors/checkpoint.consistency: %w", err)
		}
	}
	return &m, nil
}

func verifyRecord(bfs fs.FS, rd string, cp ledger.Checkpoint, cpb []byte) (uint64, error) {
	var readErr error
	read := func(name string) []byte {
		b, err := fs.ReadFile(bfs, rd+"/"+name)
		if err != nil && readErr == nil && !errors.Is(err, fs.ErrNotExist) {
			readErr = err
		}
		return b
	}
	leafB, nonce, meta, body := read("leaf"), read("nonce"), read("meta.json"), read("body")
	if readErr != nil {
		return 0, readErr
	}
	var leaf ledger.Leaf
	if err := leaf.UnmarshalBinary(leafB); err != nil {
		return 0, err
	}
	// Nothing but the record's own files: a file the record does not
	// account for (a content beside a record that is not media, say) is
	// refused rather than left for a reader to take as part of it.
	ents, err := fs.ReadDir(bfs, rd)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		switch e.Name() {
		case "record.json", "leaf", "nonce", "meta.json", "body", "inclusion.tlog-proof":
		case "content":
			if leaf.Kind != ledger.KindMedia {
				return 0, errors.New("a content file beside a record that is not media")
			}
		default:
			return 0, fmt.Errorf("%s: a file that is not part of the record", e.Name())
		}
		if !e.Type().IsRegular() {
			return 0, fmt.Errorf("%s: %w", e.Name(), errNotRegular)
		}
	}
	if leaf.Kind == ledger.KindMedia {
		var err error
		if body, err = joinMediaFiles(body, read("content")); err != nil {
			return 0, err
		}
		if readErr != nil {
			return 0, readErr
		}
	}
	payload, err := rebuildPayload(meta, body)
	if err != nil {
		return 0, err
	}
	if ledger.Commit(nonce, payload) != leaf.Commitment {
		return 0, errors.New("the payload (meta.json, body) or nonce does not match the leaf's commitment")
	}
	idx, hashes, pcp, err := ledger.ParseTlogProof(read("inclusion.tlog-proof"))
	if readErr != nil {
		return 0, readErr
	}
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(pcp, cpb) {
		return 0, errors.New("the inclusion proof is against another checkpoint")
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, cp.Size, rfc6962.DefaultHasher.HashLeaf(leafB), hashes, cp.Hash[:]); err != nil {
		return 0, fmt.Errorf("the leaf is not in the checkpointed tree at index %d: %w", idx, err)
	}
	// record.json says nothing but what the record does: the bundle's
	// must be the one the verified leaf, metadata and payload make.
	if sj := read("record.json"); readErr != nil || !bytes.Equal(sj, summaryJSON(idx, leaf, meta, payload)) {
		return 0, errors.Join(readErr, errors.New("record.json does not describe this record"))
	}
	return idx, nil
}

// maxBundleFile bounds each file of a bundle that Verify reads.
const maxBundleFile = 64 << 20

// bundleFS reads an evidence bundle that must not be trusted: only its
// directories and regular files, never a symbolic link (not even one that
// stays inside), a named pipe (which would block the reader forever) or a
// device, nothing outside the bundle (os.Root), and no file larger than
// maxBundleFile. Hand-written because os.Root follows links inside the
// root and opens pipes; the checks are Lstat on every component, then an
// open that cannot block or follow, then fstat.
type bundleFS struct{ root *os.Root }

var errNotRegular = errors.New("not a regular file or directory in the bundle (a link, pipe or device)")

func (b bundleFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	// Every component must be a real directory or, last, a regular file.
	parts := strings.Split(name, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := b.root.Lstat(p)
		if err != nil {
			return nil, err
		}
		last := i == len(parts)-1
		if !fi.IsDir() && !(last && fi.Mode().IsRegular()) || fi.Mode()&fs.ModeSymlink != 0 {
			return nil, &fs.PathError{Op: "open", Path: p, Err: errNotRegular}
		}
	}
	f, err := b.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: errNotRegular}
	}
	if fi.Size() > maxBundleFile {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("larger than %d bytes", maxBundleFile)}
	}
	return f, nil
}

// ReadBundle reads the bundle in dir as Verify does (regular files and
// directories only, nothing outside it, bounded sizes), for the checks of
// what Verify leaves to others (the exports). close releases it.
func ReadBundle(dir string) (fsys fs.FS, close func() error, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, err
	}
	return bundleFS{root}, root.Close, nil
}

// rebuildPayload frames meta and body as record.EncodePayload does.
func rebuildPayload(meta, body []byte) ([]byte, error) {
	if len(meta) > 1<<31 {
		return nil, errors.New("meta.json too large")
	}
	p := make([]byte, 4, 4+len(meta)+len(body))
	p[0], p[1], p[2], p[3] = byte(len(meta)>>24), byte(len(meta)>>16), byte(len(meta)>>8), byte(len(meta))
	p = append(p, meta...)
	return append(p, body...), nil
}
