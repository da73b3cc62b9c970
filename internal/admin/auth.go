package admin

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// bearer admits requests that carry the admin token; with no token
// configured, it admits none.
func bearer(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := cutPrefixFold(r.Header.Get("Authorization"), "Bearer ")
		if len(token) == 0 || !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="linegate admin"`)
			http.Error(w, "unauthorized\n", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cutPrefixFold is strings.CutPrefix, ignoring the case of ASCII letters
// (an authentication scheme is case-insensitive).
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}
