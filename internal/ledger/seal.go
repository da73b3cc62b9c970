package ledger

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/line"
)

// ErrKeyDestroyed is returned by a Sealer when a payload's data key no
// longer exists: the subject's key was destroyed (crypto-shredding), so the
// payload can never be read again.
var ErrKeyDestroyed = errors.New("ledger: the payload's data key was destroyed")

// ErrUnavailable marks an error of a Sealer that could not read its keys
// from the store (a database that went away): the payload may be sound,
// and opening it again later may succeed. The sequencer retries such a
// record rather than refuse it.
var ErrUnavailable = errors.New("ledger: data keys could not be read")

// ErrNoSealer is returned by OpenPayload for a sealed payload when no
// Sealer (no key encryption key) was given.
var ErrNoSealer = errors.New("ledger: payload is encrypted and no key encryption key is configured")

// ErrUnsealed is returned by OpenPayload for a payload stored in the clear
// while a Sealer is configured: every record this gateway writes is
// sealed, so a clear payload was written by someone without the key
// encryption key (a row put into the database by hand) and is not to be
// trusted, processed or signed.
var ErrUnsealed = errors.New("ledger: payload is not sealed, but encryption at rest is on: not written by linegate")

// SubjectKey names the data key of one subject (a LINE user, group or
// room, or the system) that a payload is sealed with: the subject and the
// key's id, so that a key destroyed and created anew is never mistaken for
// the old one.
type SubjectKey struct {
	Subject string
	ID      []byte
}

// Sealer encrypts payloads at rest. A payload is sealed with the data keys
// of all its subjects together: destroying any one of them makes it
// unreadable, since a record that holds several users' data is personal
// data of each of them.
type Sealer interface {
	// Seal encrypts plaintext for subjects (none means the system's own
	// key), binding aad, and returns the sealed bytes and the keys used.
	Seal(ctx context.Context, subjects []string, aad, plaintext []byte) ([]byte, []SubjectKey, error)
	// Open decrypts a payload sealed with keys and aad. It returns an
	// error wrapping ErrKeyDestroyed if one of the keys is gone, and one
	// wrapping ErrUnavailable if they could not be read.
	Open(ctx context.Context, keys []SubjectKey, aad, sealed []byte) ([]byte, error)
	// Reset forgets cached keys, after a store refused a record (its key
	// may have been destroyed by another process meanwhile).
	Reset()
}

// SealRecord builds a record for e, as NewRecord does, and seals its
// payload with s under e's subjects. The commitment is over the plaintext,
// so that an auditor given the decrypted payload and the nonce can check
// it; the sealed payload is bound to the leaf. With a nil Sealer the
// payload is stored as it is.
func SealRecord(ctx context.Context, s Sealer, e Entry) (Record, error) {
	rec, err := NewRecord(e)
	if err != nil || s == nil {
		return rec, err
	}
	sealed, keys, err := s.Seal(ctx, e.Subjects, rec.Leaf, rec.Payload)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: seal payload: %w", err)
	}
	rec.Payload, rec.Keys = sealed, keys
	return rec, nil
}

// OpenPayload returns a record's payload in the clear: decrypted when it
// is sealed (the record names its keys), as stored otherwise when no
// Sealer is given. With a Sealer, a payload stored in the clear is
// refused (ErrUnsealed). It returns nil for a deleted payload.
func OpenPayload(ctx context.Context, s Sealer, rec Record) ([]byte, error) {
	if rec.Payload == nil {
		return nil, nil
	}
	if len(rec.Keys) == 0 {
		if s != nil {
			return nil, ErrUnsealed
		}
		return rec.Payload, nil
	}
	if s == nil {
		return nil, ErrNoSealer
	}
	return s.Open(ctx, rec.Keys, rec.Leaf, rec.Payload)
}

// CheckRecord checks what a record shows on its own: its leaf decodes,
// its payload and nonce are both there or both gone (deleted), and a
// payload there opens (with s: it is sealed, and decrypts under the leaf)
// and matches the leaf's commitment. It returns the leaf and the payload
// in the clear (nil when deleted), or an error that names what is wrong.
func CheckRecord(ctx context.Context, s Sealer, rec Record) (Leaf, []byte, error) {
	var leaf Leaf
	if rec.Leaf == nil {
		return leaf, nil, errors.New("missing")
	}
	if err := leaf.UnmarshalBinary(rec.Leaf); err != nil {
		return leaf, nil, err
	}
	switch {
	case rec.Payload == nil && rec.Nonce == nil:
		return leaf, nil, nil // deleted: a deletion record must name it
	case rec.Payload == nil || rec.Nonce == nil:
		return leaf, nil, errors.New("payload missing")
	}
	payload, err := OpenPayload(ctx, s, rec)
	switch {
	case errors.Is(err, ErrNoSealer), errors.Is(err, ErrUnavailable):
		return leaf, nil, err
	case errors.Is(err, ErrUnsealed):
		return leaf, nil, errors.New("payload is not sealed, but encryption at rest is on: not written by linegate")
	case err != nil:
		return leaf, nil, fmt.Errorf("payload does not decrypt: %v", err)
	case Commit(rec.Nonce, payload) != leaf.Commitment:
		return leaf, nil, errors.New("payload does not match its commitment")
	}
	return leaf, payload, nil
}

// Subjects returns the subjects of keys, sorted, without duplicates.
func Subjects(keys []SubjectKey) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.Subject)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// FormatKeys encodes a record's keys for a Store's text column, as
// "subject=hexid" separated by spaces. Subjects never contain spaces or
// "=" (ValidSubject).
func FormatKeys(keys []SubjectKey) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k.Subject)
		b.WriteByte('=')
		b.WriteString(hex.EncodeToString(k.ID))
	}
	return b.String()
}

// ParseKeys decodes what FormatKeys wrote.
//
// A malformed column's error wraps ErrMalformed.
func ParseKeys(s string) ([]SubjectKey, error) {
	if s == "" {
		return nil, nil
	}
	fields := strings.Fields(s)
	keys := make([]SubjectKey, len(fields))
	for i, f := range fields {
		subj, id, ok := strings.Cut(f, "=")
		b, err := hex.DecodeString(id)
		if !ok || err != nil || subj == "" || len(b) == 0 {
			return nil, fmt.Errorf("%w: key reference %d", ErrMalformed, i)
		}
		keys[i] = SubjectKey{Subject: subj, ID: b}
	}
	return keys, nil
}

// SubjectSystem is the subject of records that concern no LINE user, group
// or room (admin actions, deletions, requests that failed authentication).
const SubjectSystem = "system"

// ValidSubject reports whether s names a subject: "system", or a LINE
// subject (line.ValidSubject: "user:", "group:" or "room:" followed by a
// LINE id).
func ValidSubject(s string) bool {
	return s == SubjectSystem || line.ValidSubject(s)
}
