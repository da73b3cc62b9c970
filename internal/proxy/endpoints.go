package proxy

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// pattern is an allowed call: a method and a path whose "*" segments match
// any one segment.
type pattern struct {
	method   string
	segments []string
}

// CheckEndpoint checks an endpoint pattern of a tool's configuration.
func CheckEndpoint(s string) error {
	_, err := parsePattern(s)
	return err
}

func parsePattern(s string) (pattern, error) {
	method, path, ok := strings.Cut(strings.TrimSpace(s), " ")
	path = strings.TrimSpace(path)
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		ok = false
	}
	if !ok || !strings.HasPrefix(path, "/v2/bot/") || strings.Contains(path, "?") {
		return pattern{}, fmt.Errorf("endpoint %q: want METHOD /v2/bot/... (GET, POST, PUT or DELETE; * for one path segment)", s)
	}
	return pattern{method: method, segments: strings.Split(strings.Trim(path, "/"), "/")}, nil
}

func (pt pattern) match(method, path string) bool {
	if method != pt.method {
		return false
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) != len(pt.segments) {
		return false
	}
	for i, s := range pt.segments {
		if s != "*" && s != segs[i] {
			return false
		}
		if s == "*" && !idOK(pt.segments, i, segs[i]) {
			return false
		}
	}
	return true
}

// allowed returns the tool's pattern that allows a call ("" for none): it
// names the endpoint in metrics, whose values the config bounds.
func (t *tool) allowed(method, path string) string {
	for _, pt := range t.allow {
		if pt.match(method, path) {
			return pt.method + " /" + strings.Join(pt.segments, "/")
		}
	}
	return ""
}

// sendKind returns the kind of a message send ("push", "reply",
// "multicast", "broadcast", "narrowcast"), "" for any other call.
func sendKind(method, path string) string {
	if method != http.MethodPost {
		return ""
	}
	switch k := strings.TrimPrefix(path, "/v2/bot/message/"); k {
	case "push", "reply", "multicast", "broadcast", "narrowcast":
		return k
	}
	return ""
}

// keyed reports whether a send takes an X-Line-Retry-Key.
func keyed(kind string) bool { return kind != "" && kind != "reply" }

// dataPath matches the paths that LINE serves on its data API host: message
// content and rich menu images.
var dataPath = regexp.MustCompile(`^/v2/bot/(message/[^/]+/content(/preview|/transcoding)?|richmenu/[^/]+/content)$`)

// lineID matches a LINE user, group or room id in a path.
var lineID = regexp.MustCompile(`^[UCR][0-9a-f]{32}$`)
