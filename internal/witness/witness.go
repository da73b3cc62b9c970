// Package witness has the log's checkpoints cosigned by independent
// witnesses, over the C2SP tlog-witness protocol, and checks cosigned
// checkpoints against a quorum (C2SP tlog-cosignature, cosignature/v1).
//
// A witness cosigns a checkpoint only once it has checked that the
// checkpoint extends the last one it cosigned for the log, by a
// consistency proof. A log key holder who shows one tree to some and
// another to others (a fork), or who rolls the log back and signs again,
// cannot get both cosigned by the same witness: with a quorum of
// witnesses required by verifiers, the fork is caught.
package witness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Witness is one witness: its name (its key's), the URL its tlog-witness
// API is under, and its cosignature/v1 verifier.
type Witness struct {
	Name     string
	URL      string // add-checkpoint is at URL + "/add-checkpoint"
	Verifier note.Verifier
}

// NewVerifier parses a witness's verifier key: a note verifier key of type
// Ed25519 (0x01) or Ed25519 cosignature/v1 (0x04), as C2SP
// tlog-cosignature describes, checked as cosignature/v1.
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("witness verifier key: %w", err)
	}
	return v, nil
}

// New returns a witness at url whose key is vkey.
func New(url, vkey string) (Witness, error) {
	v, err := NewVerifier(vkey)
	if err != nil {
		return Witness{}, err
	}
	return Witness{Name: v.Name(), URL: strings.TrimSuffix(url, "/"), Verifier: v}, nil
}

var (
	// ErrUnknownLog: the witness does not know the log's origin or key
	// (404).
	ErrUnknownLog = errors.New("witness: the witness does not know this log (404)")
	// ErrBadSignature: the witness found no signature by a key it trusts
	// for the log (403).
	ErrBadSignature = errors.New("witness: the witness does not accept the checkpoint's signature (403)")
	// ErrRolledBack: the checkpoint is smaller than the last one the
	// witness cosigned (400, after a 409 gave its size): the log was
	// rolled back, or forked.
	ErrRolledBack = errors.New("witness: the witness cosigned a larger tree than this checkpoint's: the log was rolled back or forked")
	// ErrForked: the witness refused the consistency proof, or the root
	// for a size it cosigned differs (422): the log was forked.
	ErrForked = errors.New("witness: the witness refused the checkpoint as inconsistent with what it cosigned: a fork")
	// ErrCosignature: the witness answered 200 without a valid
	// cosignature by its key.
	ErrCosignature = errors.New("witness: no valid cosignature in the witness's answer")
)

// ConflictError is a 409 answer: the old size sent is not the size of the
// last checkpoint the witness cosigned, which is Size.
type ConflictError struct{ Size uint64 }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("witness: the witness's last cosigned size is %d (409)", e.Size)
}

// maxAnswer bounds a witness's answer.
const maxAnswer = 64 << 10

// AddCheckpoint sends checkpoint (a signed note) to w with the consistency
// proof from oldSize, the size the log believes w last cosigned. It
// returns the cosignature lines w signed, checked against w's key.
func AddCheckpoint(ctx context.Context, hc *http.Client, w Witness, oldSize uint64, proof [][32]byte, checkpoint []byte) ([]byte, error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", oldSize)
	for _, h := range proof {
		body.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		body.WriteByte('\n')
	}
	body.WriteByte('\n')
	body.Write(checkpoint)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL+"/add-checkpoint", &body)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", w.Name, err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", w.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("witness %s: read answer: %w", w.Name, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusConflict:
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("witness %s: 409 without a size", w.Name)
		}
		return nil, &ConflictError{Size: n}
	case http.StatusNotFound:
		return nil, fmt.Errorf("witness %s: %w", w.Name, ErrUnknownLog)
	case http.StatusForbidden:
		return nil, fmt.Errorf("witness %s: %w", w.Name, ErrBadSignature)
	case http.StatusBadRequest:
		return nil, fmt.Errorf("witness %s: %w", w.Name, ErrRolledBack)
	case http.StatusUnprocessableEntity:
		return nil, fmt.Errorf("witness %s: %w", w.Name, ErrForked)
	default:
		return nil, fmt.Errorf("witness %s: HTTP %d", w.Name, resp.StatusCode)
	}
	sigs, err := checkCosignatures(checkpoint, b, w.Verifier)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", w.Name, err)
	}
	return sigs, nil
}

// checkCosignatures keeps, of the signature lines in answer, those that
// verify with v over checkpoint's text; there must be one at least.
func checkCosignatures(checkpoint, answer []byte, v note.Verifier) ([]byte, error) {
	text, _, ok := splitNote(checkpoint)
	if !ok {
		return nil, errors.New("malformed checkpoint")
	}
	var keep []byte
	sc := bufio.NewScanner(bytes.NewReader(answer))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		n, err := note.Open(append(append(append([]byte{}, text...), '\n'), line+"\n"...), note.VerifierList(v))
		if err != nil || len(n.Sigs) == 0 {
			continue
		}
		keep = append(keep, line+"\n"...)
	}
	if keep == nil {
		return nil, ErrCosignature
	}
	return keep, nil
}

// splitNote splits a signed note into its text (ending in a newline) and
// its signature lines.
func splitNote(signed []byte) (text, sigs []byte, ok bool) {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		return nil, nil, false
	}
	return signed[:i+1], signed[i+2:], true
}

// Cosigned returns checkpoint with the cosignature lines added.
func Cosigned(checkpoint []byte, cosigs ...[]byte) []byte {
	out := append([]byte{}, checkpoint...)
	for _, c := range cosigs {
		out = append(out, c...)
	}
	return out
}

// QuorumError reports a cosigned checkpoint with fewer valid
// cosignatures than the quorum.
type QuorumError struct {
	Have, Want int
	Names      []string // the witnesses whose cosignature verified
}

func (e *QuorumError) Error() string {
	return fmt.Sprintf("witness: %d of the required %d witness cosignatures verify (%s)", e.Have, e.Want, strings.Join(e.Names, ", "))
}

// VerifyQuorum opens a cosigned checkpoint: the log's signature must
// verify with logV, and at least k of the witnesses' cosignatures with
// theirs. It returns the note's text and the names of the witnesses whose
// cosignature verified.
func VerifyQuorum(signed []byte, logV note.Verifier, witnesses []note.Verifier, k int) (string, []string, error) {
	vs := append([]note.Verifier{logV}, witnesses...)
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		return "", nil, fmt.Errorf("witness: open the cosigned checkpoint: %w", err)
	}
	logOK := false
	seen := map[string]bool{}
	var names []string
	for _, s := range n.Sigs {
		if s.Name == logV.Name() && s.Hash == logV.KeyHash() {
			logOK = true
			continue
		}
		for _, w := range witnesses {
			if s.Name == w.Name() && s.Hash == w.KeyHash() && !seen[s.Name] {
				seen[s.Name] = true
				names = append(names, s.Name)
			}
		}
	}
	if !logOK {
		return "", names, errors.New("witness: the checkpoint has no valid signature by the log's key")
	}
	if len(names) < k {
		return n.Text, names, &QuorumError{Have: len(names), Want: k, Names: names}
	}
	return n.Text, names, nil
}
