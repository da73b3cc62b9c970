package line

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// SignatureHeader is the header in which LINE sends the request signature.
const SignatureHeader = "X-Line-Signature"

// ErrNoSignature and ErrBadSignature are the two ways a webhook request
// fails authentication.
var (
	ErrNoSignature  = errors.New("webhook: missing signature")
	ErrBadSignature = errors.New("webhook: invalid signature")
)

// A Verifier checks LINE's webhook signature over a raw request body. It
// has the shape of a sumdb note.Verifier: a name to tell which key matched,
// and a check. A secret rotation is a list of verifiers, tried in order.
type Verifier interface {
	// Name says which key this is ("secret", "next_secret"), for the
	// record and for metrics; never the key itself.
	Name() string
	// Verify reports whether sig, the decoded signature header, is the
	// signature of body. It runs in constant time for a given body length.
	Verify(body, sig []byte) bool
}

// NewHMACVerifier returns the verifier of LINE's scheme: the signature is
// HMAC-SHA256 keyed with the channel secret, over the exact body bytes.
func NewHMACVerifier(name string, secret []byte) Verifier {
	return &hmacVerifier{name: name, key: append([]byte(nil), secret...)}
}

type hmacVerifier struct {
	name string
	key  []byte
}

func (v *hmacVerifier) Name() string { return v.name }

func (v *hmacVerifier) Verify(body, sig []byte) bool {
	m := hmac.New(sha256.New, v.key)
	m.Write(body)
	return hmac.Equal(m.Sum(nil), sig)
}

// Sign returns the signature header value LINE would send for body. The
// simulator and the rules' forwards sign with it.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Check verifies the signature header value against each verifier in turn
// and returns the one that matched. Every verifier is tried, so that the
// time taken does not tell which key matched.
func Check(vs []Verifier, body []byte, header string) (Verifier, error) {
	if header == "" {
		return nil, ErrNoSignature
	}
	// Only the one spelling LINE sends is accepted: exactly the padded
	// encoding of 32 bytes. The decoder alone would skip CR and LF inside
	// the value and take non-zero padding bits, so several header values
	// would stand for one signature.
	if len(header) != base64.StdEncoding.EncodedLen(sha256.Size) {
		return nil, ErrBadSignature
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(header)
	if err != nil || len(sig) != sha256.Size {
		return nil, ErrBadSignature
	}
	var match Verifier
	for _, v := range vs {
		if v.Verify(body, sig) && match == nil {
			match = v
		}
	}
	if match == nil {
		return nil, ErrBadSignature
	}
	return match, nil
}
