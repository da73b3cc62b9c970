package rules

import "crypto/subtle"

// SecretIs reports, in constant time, whether the forward's resolved
// signing secret is s: a forward must never sign with a channel's secret,
// or its target could make webhooks the gateway takes for LINE's.
func (f *Forward) SecretIs(s []byte) bool {
	return len(f.secret) > 0 && subtle.ConstantTimeCompare(f.secret, s) == 1
}
