package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/proxy"
	"github.com/linegate/linegate/internal/sim"
)

// do sends a request to the proxy and returns its status and LINE-shaped
// error message ("" when the answer is not LINE's error shape).
func (w *world) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, w.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Message string `json:"message"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Message
}

// TestBodyReadAsLINEReadsIt: a key that encoding/json would read and LINE
// would not (another case of a field the proxy reads, or a key twice) is
// refused before anything is checked, recorded or sent, so that consent
// and the record's subjects are those of the bytes LINE reads. Unknown
// keys pass, and an escaped key is read as LINE reads it.
func TestBodyReadAsLINEReadsIt(t *testing.T) {
	w := newWorld(t,
		proxy.Tool{Name: "ads", Token: []byte("ads-token"), Channels: []string{"demo"}, PromotionalPush: true, AllowBroadcast: true})
	msgs := `"messages":[{"type":"text","text":"sale"}]`
	for name, body := range map[string]string{
		"TO beside to":         `{"to":"` + userB + `","TO":"` + userA + `",` + msgs + `}`,
		"To alone":             `{"To":"` + userA + `",` + msgs + `}`,
		"to twice":             `{"to":"` + userB + `","to":"` + userA + `",` + msgs + `}`,
		"Messages":             `{"to":"` + userA + `","Messages":[{"type":"text","text":"x"}]}`,
		"flag twice":           `{"to":"` + userA + `",` + msgs + `,"notificationDisabled":false,"notificationDisabled":true}`,
		"long s in messages":   `{"to":"` + userA + `","meſſages":[]}`,
		"nested key twice":     `{"to":"` + userA + `","messages":[{"type":"text","text":"a","text":"b"}]}`,
		"REPLYTOKEN":           `{"to":"` + userA + `","REPLYTOKEN":"x",` + msgs + `}`,
		"not UTF-8":            "{\"to\":\"" + userA + "\xff\"," + msgs + "}",
		"escaped TO beside to": `{"to":"` + userB + `","\u0054O":"` + userA + `",` + msgs + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			n := len(w.led.sends(t))
			status, msg := w.do(t, "POST", "/v2/bot/message/push", "ads-token", body)
			if status != 400 || msg == "" {
				t.Errorf("%d %q, want 400 in LINE's error shape", status, msg)
			}
			if len(w.led.sends(t)) != n {
				t.Error("recorded")
			}
		})
	}
	if n := len(w.simCalls("/v2/bot/message/push")); n != 0 {
		t.Fatalf("%d pushes reached LINE", n)
	}
	// An unknown key passes; an escaped "to" is "to" for both.
	status, msg := w.do(t, "POST", "/v2/bot/message/push", "ads-token", `{"t\u006f":"`+userA+`",`+msgs+`,"x-extra":{"To":1}}`)
	if status != 200 {
		t.Fatalf("push with an unknown key: %d %q", status, msg)
	}
	pushes := w.simCalls("/v2/bot/message/push")
	var sent struct {
		To string `json:"to"`
	}
	if len(pushes) != 1 || json.Unmarshal(pushes[0].Body, &sent) != nil || sent.To != userA {
		t.Fatalf("LINE got %+v", pushes)
	}
	if rec := w.led.last(t); rec.Outcome != "sent" || !slices.Equal(rec.Subj, []string{"user:" + userA}) {
		t.Errorf("record: %+v", rec)
	}
}

// flex returns a push of a Flex bubble whose body nests boxes boxes deep.
func flex(to string, boxes int) string {
	inner := `{"type":"text","text":"x"}`
	for i := 0; i < boxes; i++ {
		inner = `{"type":"box","layout":"vertical","contents":[` + inner + `]}`
	}
	return `{"to":"` + to + `","messages":[{"type":"flex","altText":"x","contents":{"type":"carousel","contents":[{"type":"bubble","body":` + inner + `}]}}]}`
}

// TestBodyDepth: a body nesting deeper than proxy.MaxJSONDepth is refused
// (400, not recorded); a Flex carousel of 28 nested boxes passes, of 29
// not (the figure in PROXY.md).
func TestBodyDepth(t *testing.T) {
	w := newWorld(t)
	deep := strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000)
	for name, body := range map[string]string{
		"10000 objects":       `{"to":"` + userA + `","messages":[` + deep + `]}`,
		"10000 arrays":        `{"to":"` + userA + `","messages":` + strings.Repeat("[", 9990) + strings.Repeat("]", 9990) + `}`,
		"just past the bound": `{"to":"` + userA + `","messages":` + strings.Repeat("[", proxy.MaxJSONDepth) + strings.Repeat("]", proxy.MaxJSONDepth) + `}`,
	} {
		n := len(w.led.sends(t))
		if status, msg := w.do(t, "POST", "/v2/bot/message/push", "crm-proxy-token", body); status != 400 || msg == "" {
			t.Errorf("%s: %d %q, want 400", name, status, msg)
		}
		if len(w.led.sends(t)) != n {
			t.Errorf("%s: recorded", name)
		}
	}
	if status, msg := w.do(t, "POST", "/v2/bot/message/push", "crm-proxy-token", flex(userA, 28)); status != 200 {
		t.Errorf("a Flex message of 28 nested boxes: %d %q", status, msg)
	}
	if rec := w.led.last(t); rec.Outcome != "sent" {
		t.Errorf("record: %+v", rec)
	}
	if status, _ := w.do(t, "POST", "/v2/bot/message/push", "crm-proxy-token", flex(userA, 29)); status != 400 {
		t.Errorf("a Flex message of 29 nested boxes: %d, want 400", status)
	}
}

// rawRequest writes a request line as given (no client normalises it) and
// returns the answer's status and body.
func rawRequest(t *testing.T, url, target, token string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPathsAsLINEReadsThem: a path with a percent-escape or a character
// LINE's ids do not use is refused before it is matched; "*" segments
// that stand for ids must be ids of their kind; a query string passes only
// where the endpoint takes one.
func TestPathsAsLINEReadsThem(t *testing.T) {
	w := newWorld(t)
	w.api.AddContent("4711", sim.Content{Type: "image", Size: 10})
	n := len(w.led.sends(t))
	for _, target := range []string{
		"/channels/demo/v2/bot/message/quota%3F/content",
		"/channels/demo/v2/bot/message/quota%23/content",
		"/channels/demo/v2/bot/message/quota%3f/content",
		"/channels/demo/v2/bot/profile/" + userA + "%3Fx",
		"/channels/demo/v2/bot/profile/" + userA + "%3F",
		"/channels/demo/v2/bot/profile/%55" + userA[1:],
		"/channels/demo/v2/bot/message/quota/content",     // not a message id
		"/channels/demo/v2/bot/profile/" + userA + "x",    // not a user id
		"/channels/demo/v2/bot/profile/" + group,          // a group id for a user
		"/channels/demo/v2/bot/profile/" + userA + ";x",   // not an id character
		"/channels/demo/v2/bot/profile/" + userA + "?x=1", // a profile takes no query
		"/channels/demo/v2/bot/message/4711/content?x#y",  // nor content
		"/channels/demo/v2/bot/info?a=b",
	} {
		status, body := rawRequest(t, w.url, target, "helpdesk-proxy-token")
		var e struct {
			Message string `json:"message"`
		}
		if status/100 != 4 || json.Unmarshal([]byte(body), &e) != nil || e.Message == "" {
			t.Errorf("%s: %d %s, want a 4xx in LINE's error shape", target, status, body)
		}
	}
	// A path that is LINE's but not an id of its kind is an endpoint the
	// tool may not call: recorded as refused, like any such call.
	for _, rec := range w.led.sends(t)[n:] {
		if rec.Outcome != "refused" {
			t.Errorf("record of a refused path: %+v", rec)
		}
	}
	for _, c := range w.api.Calls() {
		t.Errorf("LINE was called: %s %s", c.Method, c.Path)
	}
	// A malformed escape never reaches the proxy: Go's server answers it
	// 400 in plain text (PROXY.md, known limits).
	if status, _ := rawRequest(t, w.url, "/channels/demo/v2/bot/profile/%zz", "helpdesk-proxy-token"); status != 400 {
		t.Errorf("a malformed escape: %d, want 400", status)
	}
	// The ids of their kinds pass, recorded under the user.
	if status, body := rawRequest(t, w.url, "/channels/demo/v2/bot/profile/"+userA, "helpdesk-proxy-token"); status != 200 {
		t.Errorf("profile: %d %s", status, body)
	}
	if rec := w.led.last(t); !slices.Equal(rec.Subj, []string{"user:" + userA}) || rec.Endpoint != "/v2/bot/profile/"+userA {
		t.Errorf("profile record: %+v", rec)
	}
	if status, body := rawRequest(t, w.url, "/channels/demo/v2/bot/message/4711/content", "helpdesk-proxy-token"); status != 200 {
		t.Errorf("content: %d %s", status, body)
	}
}
