package sim

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"regexp"
)

// The reads that tools make through linegate's proxy: a user's profile
// (api.line.me) and a message's content (api-data.line.me, served here on
// the same host).

func (a *API) routeReads() {
	a.route("GET /v2/bot/profile/{userId}", a.profile)
	a.route("GET /v2/bot/message/{messageId}/content", a.content)
}

var simUserID = regexp.MustCompile(`^U[0-9a-f]{32}$`)

// profile answers a user's profile: a made-up display name, 404 for an id
// that is not a user id (LINE's answer to a user who is not a friend).
func (a *API) profile(c *call) {
	id := c.r.PathValue("userId")
	if !simUserID.MatchString(id) {
		c.fail(http.StatusNotFound, "Not found")
		return
	}
	c.reply(http.StatusOK, map[string]any{"userId": id, "displayName": "sim user " + id[len(id)-4:], "language": "en"})
}

// ContentBytes is the content the simulator serves for a message id: a
// deterministic byte string, so that a test can check what came through.
func ContentBytes(messageID string) []byte {
	out := make([]byte, 0, 64<<10)
	for i := 0; len(out) < 64<<10; i++ {
		s := sha256.Sum256(fmt.Appendf(nil, "%s/%d", messageID, i))
		out = append(out, s[:]...)
	}
	return out
}

// content answers a message's content as LINE's data API does: binary,
// with its content type.
func (a *API) content(c *call) {
	b := ContentBytes(c.r.PathValue("messageId"))
	c.status = http.StatusOK
	c.w.Header().Set("Date", a.opts.Now().UTC().Format(http.TimeFormat))
	c.w.Header().Set("Content-Type", "image/jpeg")
	c.w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	c.w.WriteHeader(http.StatusOK)
	c.w.Write(b)
}
