package ledger

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/record"
)

// Kind says what a record is; the kinds and their bodies are declared in
// package record.
type Kind = record.Kind

// The kinds of record (package record documents each).
const (
	KindWebhook   = record.KindWebhook
	KindRejection = record.KindRejection
	KindEvent     = record.KindEvent
	KindOutbound  = record.KindOutbound
	KindAdmin     = record.KindAdmin
	KindDeletion  = record.KindDeletion
	KindMedia     = record.KindMedia
)

// leafVersion is the first byte of every leaf this code writes.
const leafVersion = 1

// NonceSize is the size of the random nonce that salts a commitment.
const NonceSize = 16

// Leaf is what the Merkle log holds for one record. It carries no personal
// data: the payload is bound by a salted commitment, so that deleting the
// payload and its nonce leaves the log verifiable and the content
// unguessable. The record id is the leaf's index in the log.
type Leaf struct {
	Kind       Kind
	Time       time.Time // millisecond precision
	Channel    string
	Retention  string
	Commitment [sha256.Size]byte
}

// maxLeafString bounds the channel and retention strings inside a leaf.
const maxLeafString = 255

// MarshalBinary encodes the leaf. The encoding is the leaf's identity in the
// log; it is:
//
//	u8 version (1) | u8 kind | i64 time in ms | u8 len | channel |
//	u8 len | retention class | 32-byte commitment
//
// all integers big-endian.
func (l Leaf) MarshalBinary() ([]byte, error) {
	if len(l.Channel) > maxLeafString || len(l.Retention) > maxLeafString {
		return nil, errors.New("ledger: leaf string too long")
	}
	b := make([]byte, 0, 2+8+2+len(l.Channel)+len(l.Retention)+sha256.Size)
	b = append(b, leafVersion, byte(l.Kind))
	b = binary.BigEndian.AppendUint64(b, uint64(l.Time.UnixMilli()))
	b = append(b, byte(len(l.Channel)))
	b = append(b, l.Channel...)
	b = append(b, byte(len(l.Retention)))
	b = append(b, l.Retention...)
	b = append(b, l.Commitment[:]...)
	return b, nil
}

// UnmarshalBinary decodes a leaf written by MarshalBinary and refuses
// anything else, including trailing bytes and unknown versions.
func (l *Leaf) UnmarshalBinary(b []byte) error {
	bad := func(what string) error { return fmt.Errorf("ledger: malformed leaf: %s", what) }
	if len(b) < 2+8+1 {
		return bad("short")
	}
	if b[0] != leafVersion {
		return bad(fmt.Sprintf("unknown version %d", b[0]))
	}
	kind := Kind(b[1])
	ms := int64(binary.BigEndian.Uint64(b[2:10]))
	rest := b[10:]
	readString := func() (string, bool) {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return "", false
		}
		n := int(rest[0])
		s := string(rest[1 : 1+n])
		rest = rest[1+n:]
		return s, true
	}
	channel, ok := readString()
	if !ok {
		return bad("channel")
	}
	retention, ok := readString()
	if !ok {
		return bad("retention")
	}
	if len(rest) != sha256.Size {
		return bad("commitment")
	}
	*l = Leaf{Kind: kind, Time: time.UnixMilli(ms), Channel: channel, Retention: retention}
	copy(l.Commitment[:], rest)
	return nil
}

// Commit returns the salted commitment SHA-256(nonce || payload).
func Commit(nonce, payload []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(nonce)
	h.Write(payload)
	var c [sha256.Size]byte
	h.Sum(c[:0])
	return c
}

// NewNonce returns a fresh random nonce.
func NewNonce() []byte {
	n := make([]byte, NonceSize)
	rand.Read(n) // never returns an error (crypto/rand, Go 1.24+)
	return n
}

// Record is one entry of the ledger: the leaf that the log holds, and the
// payload that the leaf commits to. Index is assigned by the Store when the
// record is appended.
type Record struct {
	Index uint64
	Leaf  []byte // Leaf.MarshalBinary
	// Nonce and Payload are nil once the payload has been deleted.
	Nonce   []byte
	Payload []byte
	// Keys names the data keys the payload is sealed with (SealRecord);
	// nil for a payload stored as it is.
	Keys []SubjectKey
}

// DeleteAfter returns when a record's payload is to be deleted, in Unix
// milliseconds, from its leaf's time and the retention period of its
// class in keep; ok is false when it is kept until deleted otherwise (no
// period, or a leaf that does not decode). Stores write it with the record.
func DeleteAfter(leaf []byte, keep map[string]time.Duration) (ms int64, ok bool) {
	if len(keep) == 0 {
		return 0, false
	}
	var l Leaf
	if l.UnmarshalBinary(leaf) != nil {
		return 0, false
	}
	if d := keep[l.Retention]; d > 0 {
		return l.Time.Add(d).UnixMilli(), true
	}
	return 0, false
}
