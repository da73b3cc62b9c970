package ledger

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a parsed C2SP tlog-checkpoint.
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   [32]byte
}

// OpenCheckpoint verifies a signed checkpoint note with v and parses it,
// refusing a checkpoint of another origin.
func OpenCheckpoint(signed []byte, v note.Verifier, origin string) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", c.Origin, origin)
	}
	return c, nil
}

// ParseCheckpoint parses the body of a tlog-checkpoint: origin, size and
// base64 root hash lines, then optional extension lines.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, errors.New("malformed checkpoint: too few lines")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, errors.New("malformed checkpoint: size")
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != 32 {
		return Checkpoint{}, errors.New("malformed checkpoint: root hash")
	}
	c := Checkpoint{Origin: lines[0], Size: size}
	copy(c.Hash[:], h)
	if c.Origin == "" {
		return Checkpoint{}, errors.New("malformed checkpoint: empty origin")
	}
	return c, nil
}

// NewVerifier parses a note verifier key as written by keygen (log.vkey),
// trimming surrounding space.
func NewVerifier(vkey []byte) (note.Verifier, error) {
	v, err := note.NewVerifier(string(bytes.TrimSpace(vkey)))
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	return v, nil
}

// NewSigner parses a note signer key as written by keygen (log.key).
func NewSigner(skey []byte) (note.Signer, error) {
	s, err := note.NewSigner(string(bytes.TrimSpace(skey)))
	if err != nil {
		// The key's text must not reach the error.
		return nil, errors.New("checkpoint signer key: malformed")
	}
	return s, nil
}
