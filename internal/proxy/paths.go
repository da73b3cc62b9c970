package proxy

import (
	"net/url"
	"regexp"
	"strings"
)

// pathChars matches a LINE path made only of the characters LINE's paths
// and ids use: letters, digits, '-', '_', '.' and '/'. A path with anything
// else, or with a percent-escape of anything, is refused before it is
// matched, so that the path matched is the path LINE gets.
var pathChars = regexp.MustCompile(`^[A-Za-z0-9/_.\-]+$`)

// Id forms of a "*" segment, by the literal segment before it.
var (
	userID    = regexp.MustCompile(`^U[0-9a-f]{32}$`)
	groupID   = regexp.MustCompile(`^C[0-9a-f]{32}$`)
	roomID    = regexp.MustCompile(`^R[0-9a-f]{32}$`)
	messageID = regexp.MustCompile(`^[0-9]{1,32}$`)
	richMenu  = regexp.MustCompile(`^richmenu-[0-9a-f]{32}$`)
	// otherID is any other id (an audience group, a rich menu alias, a
	// request id): no dot, so never "." or "..".
	otherID = regexp.MustCompile(`^[A-Za-z0-9_\-]{1,100}$`)
)

// idOK reports whether seg may stand for the "*" at index i of a pattern's
// segments: a user id after "profile", "member" or "user", a group id after
// "group", a room id after "room", a message id between "message" and
// "content", a rich menu id after "richmenu", otherwise letters, digits,
// '-' and '_'.
func idOK(segments []string, i int, seg string) bool {
	prev, next := "", ""
	if i > 0 {
		prev = segments[i-1]
	}
	if i+1 < len(segments) {
		next = segments[i+1]
	}
	switch {
	case prev == "profile" || prev == "member" || prev == "user":
		return userID.MatchString(seg)
	case prev == "group":
		return groupID.MatchString(seg)
	case prev == "room":
		return roomID.MatchString(seg)
	case prev == "message" && next == "content":
		return messageID.MatchString(seg)
	case prev == "richmenu":
		return richMenu.MatchString(seg)
	}
	return otherID.MatchString(seg)
}

// queries are the GET endpoints that take a query string, and its
// parameters (LINE's OpenAPI specs); every other call is refused one.
var queries = []struct {
	path   *regexp.Regexp
	params []string
}{
	{regexp.MustCompile(`^/v2/bot/message/progress/narrowcast$`), []string{"requestId"}},
	{regexp.MustCompile(`^/v2/bot/message/delivery/(reply|push|multicast|broadcast|pnp)$`), []string{"date"}},
	{regexp.MustCompile(`^/v2/bot/message/aggregation/list$`), []string{"limit", "start"}},
	{regexp.MustCompile(`^/v2/bot/followers/ids$`), []string{"start", "limit"}},
	{regexp.MustCompile(`^/v2/bot/(group|room)/[^/]+/members/ids$`), []string{"start"}},
	{regexp.MustCompile(`^/v2/bot/richmenu/progress/batch$`), []string{"requestId"}},
	{regexp.MustCompile(`^/v2/bot/membership/[^/]+/users/ids$`), []string{"start", "limit"}},
	{regexp.MustCompile(`^/v2/bot/coupon$`), []string{"status", "start", "limit"}},
	{regexp.MustCompile(`^/v2/bot/insight/(message/delivery|followers)$`), []string{"date"}},
	{regexp.MustCompile(`^/v2/bot/insight/message/event$`), []string{"requestId"}},
	{regexp.MustCompile(`^/v2/bot/insight/message/event/aggregation$`), []string{"customAggregationUnit", "from", "to"}},
	{regexp.MustCompile(`^/v2/bot/insight/richmenu/[^/]+/(summary|daily)$`), []string{"from", "to"}},
	{regexp.MustCompile(`^/v2/bot/list$`), []string{"start", "limit"}},
}

// queryValue matches a query parameter's value (a date, an id, a
// continuation token).
var queryValue = regexp.MustCompile(`^[A-Za-z0-9_.\-=+/:]{0,512}$`)

// checkQuery returns the query string to send for a call (re-encoded from
// what was checked), or ok false when the call takes no query, or not this
// one: an unknown parameter, one twice, or a value out of the forms above.
func checkQuery(method, path, raw string) (string, bool) {
	if raw == "" {
		return "", true
	}
	if method != "GET" || strings.Contains(raw, "#") {
		return "", false
	}
	var params []string
	for _, q := range queries {
		if q.path.MatchString(path) {
			params = q.params
		}
	}
	if params == nil {
		return "", false
	}
	vs, err := url.ParseQuery(raw)
	if err != nil {
		return "", false
	}
	for k, v := range vs {
		known := false
		for _, p := range params {
			known = known || p == k
		}
		if !known || len(v) != 1 || !queryValue.MatchString(v[0]) {
			return "", false
		}
	}
	return vs.Encode(), true
}
