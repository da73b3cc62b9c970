package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPurgeNeedsRecordedRequest: a class with no automatic deletion
// (jp-appi) deletes a payload only after a deletion request recorded in
// the ledger. A delete-after time moved into the past in the database,
// without a request, makes purge refuse, not delete; once the time is
// repaired, a real request through the admin API lets a purge delete the
// payload when its time comes, and verify passes.
func TestPurgeNeedsRecordedRequest(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	cfg := gwConfig{
		extra: `retention:
  purge_every: 0s
  policies:
    jp-appi: {law: Japan APPI, keep: 0s, after_deletion_request: 1s}
`,
		chanExtra: "    retention: jp-appi\n",
	}
	g := startGateway(t, dir, cfg)
	sendText(t, g, "U1", "", "delete me only if I ask")
	waitIdle(t, g)
	g.stop()
	// The user's records: the webhook and its outcome.
	ofU1 := fmt.Sprintf("keys LIKE 'user:U1=%%' AND idx <= %d", queryInt(t, dir, "SELECT MAX(idx) FROM records"))
	payloads := func() int64 {
		return queryInt(t, dir, "SELECT COUNT(*) FROM records WHERE "+ofU1+" AND payload IS NOT NULL")
	}
	if n := payloads(); n != 2 {
		t.Fatalf("%d of the webhook and its outcome have a payload", n)
	}

	// Someone with write access to the database, and no request.
	execSQL(t, dir, fmt.Sprintf("UPDATE records SET delete_after_ms = %d WHERE %s", time.Now().UnixMilli(), ofU1))
	code, out := runCLI(t, "purge", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, "deleted 0 payloads") || !strings.Contains(out, "refused to delete 2 payloads") {
		t.Errorf("purge without a request = %d:\n%s", code, out)
	}
	if n := payloads(); n != 2 {
		t.Fatal("purge deleted payloads of a class with no automatic deletion, without a request")
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}

	// The operator repairs the times; the user asks for deletion.
	execSQL(t, dir, "UPDATE records SET delete_after_ms = NULL WHERE "+ofU1)
	g = startGateway(t, dir, cfg)
	code, b := adminDo(t, g, "/admin/subjects/user:U1/requests", `{"kind":"deletion"}`)
	var rep struct{ Changed int }
	if err := json.Unmarshal(b, &rep); code != 200 || err != nil || rep.Changed < 2 {
		t.Fatalf("deletion request = %d %s (%v)", code, b, err)
	}
	// Before its time, the request deletes nothing.
	code, b = adminDo(t, g, "/admin/purge", `{}`)
	if code != 200 || !strings.Contains(string(b), `"deleted":0`) || !strings.Contains(string(b), `"refused":0`) {
		t.Errorf("purge before the request's time = %d %s", code, b)
	}
	time.Sleep(1100 * time.Millisecond)
	code, b = adminDo(t, g, "/admin/purge", `{}`)
	var res struct{ Deleted, Refused int }
	if err := json.Unmarshal(b, &res); code != 200 || err != nil || res.Deleted < 2 || res.Refused != 0 {
		t.Errorf("purge after the request's time = %d %s (%v)", code, b, err)
	}
	waitIdle(t, g)
	g.stop()
	if n := payloads(); n != 0 {
		t.Errorf("%d payloads left after the requested deletion", n)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}
