package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestShredReachesEveryNamedSubject: a shred reaches every record that
// names the user, not only those the user wrote: a webhook whose other
// event is malformed (the valid one is processed, so its record must be
// sealed under the user's key all the same), a group message that only
// mentions the user, and the reason of a released hold that names the
// user, which becomes the user's pseudonym in the holds table (and its
// old bytes leave the database files).
func TestShredReachesEveryNamedSubject(t *testing.T) {
	const (
		dest  = "U0123456789abcdef0123456789abcdef"
		u1    = "U1f0e2d3c4b5a69788796a5b4c3d2e1f0"
		u2    = "U2a3b4c5d6e7f80918273645546372819"
		u3    = "U3c4d5e6f708192a3b4c5d6e7f8091a2b"
		group = "C91dc9896d9b5fced2730b33ac7616614"
	)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	secret := fmt.Sprintf("named-%d", time.Now().UnixNano())
	now := time.Now().UnixMilli()
	event := func(n int, source, message string) string {
		return fmt.Sprintf(`{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01SHRED%019d","deliveryContext":{"isRedelivery":false},"source":%s,"replyToken":"r","message":%s}`,
			now, n, source, message)
	}
	bodies := []string{
		// A valid text from U1 and a malformed event beside it.
		`{"destination":"` + dest + `","events":[` +
			event(1, `{"type":"user","userId":"`+u1+`"}`, `{"id":"81","type":"text","text":"`+secret+`-u1","quoteToken":"q"}`) + `,` +
			event(2, `"oops"`, `{"id":"82","type":"text","text":"x","quoteToken":"q"}`) + `]}`,
		// U3 mentions U2 in a group.
		`{"destination":"` + dest + `","events":[` +
			event(3, `{"type":"group","groupId":"`+group+`","userId":"`+u3+`"}`,
				`{"id":"83","type":"text","text":"@bob `+secret+`-u2","quoteToken":"q","mention":{"mentionees":[{"index":0,"length":4,"type":"user","userId":"`+u2+`"}]}}`) + `]}`,
	}
	for _, b := range bodies {
		if code := g.post(t, testSecret, []byte(b)); code != 200 {
			t.Fatalf("webhook = %d", code)
		}
	}
	reason := "case for " + u1 + " (user:" + u1 + ")"
	code, b := adminDo(t, g, "/admin/holds", `{"subject":"user:`+u1+`","reason":"`+reason+`"}`)
	if code != 200 {
		t.Fatalf("hold = %d %s", code, b)
	}
	if code, b := adminDo(t, g, fmt.Sprintf("/admin/holds/%d/release", holdID(t, string(b))), ""); code != 200 {
		t.Fatalf("release = %d %s", code, b)
	}
	waitIdle(t, g)
	var texts int
	for _, r := range readLedger(t, dir) {
		if strings.Contains(string(r.body), secret) {
			texts++
		}
	}
	if texts < 2 {
		t.Fatalf("%d records hold the texts before the shred", texts)
	}
	for _, u := range []string{u1, u2} {
		if code, b := adminDo(t, g, "/admin/subjects/user:"+u+"/shred", ""); code != http.StatusOK {
			t.Fatalf("shred %s = %d %s", u, code, b)
		}
	}
	g.stop()

	for _, r := range readLedger(t, dir) {
		for _, s := range []string{u1, u2, secret} {
			if strings.Contains(string(r.body), s) {
				t.Errorf("a %s record (sealed under %v) still holds %q after the shreds:\n%s", r.leaf.Kind, r.subjects, s, r.body)
			}
		}
	}
	if !pgE2E {
		if n := queryInt(t, dir, "SELECT COUNT(*) FROM holds WHERE reason LIKE '%"+u1+"%'"); n != 0 {
			t.Error("the user id outlived the shred in a hold's reason")
		}
		if n := queryInt(t, dir, "SELECT COUNT(*) FROM holds WHERE reason LIKE 'case for sha256:%'"); n != 1 {
			t.Error("the hold's reason does not name the user's pseudonym")
		}
		for _, u := range []string{u1, u2} {
			if rawFilesContain(t, dir, u) {
				t.Errorf("%s is still in the database files (the hold's reason, or another table)", u)
			}
		}
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}
