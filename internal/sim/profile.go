package sim

import (
	"net/http"
	"regexp"
)

// The reads that tools make through linegate's proxy: a user's profile
// (api.line.me). A message's content is served by routeContent.

func (a *API) routeReads() {
	a.route("GET /v2/bot/profile/{userId}", a.profile)
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
