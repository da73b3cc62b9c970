package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// sealedFragments returns, for each record whose payload holds phrase once
// decrypted, 32 bytes from the middle of its stored (sealed) payload: what
// must be gone from the files once the record is purged.
func sealedFragments(t *testing.T, dir, phrase string) []string {
	t.Helper()
	ctx := context.Background()
	s := openStore(t, dir)
	defer s.Close()
	ring := testRing(t, dir, s)
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for r, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Payload == nil {
			continue
		}
		if len(r.Keys) == 0 {
			t.Fatalf("record %d is stored unencrypted", r.Index)
		}
		p, err := ledger.OpenPayload(ctx, ring, r)
		if err != nil {
			t.Fatalf("record %d: %v", r.Index, err)
		}
		if bytes.Contains(p, []byte(phrase)) {
			mid := len(r.Payload) / 2
			out = append(out, string(r.Payload[mid-16:mid+16]))
		}
	}
	return out
}

// anyInFiles reports how many of the fragments a database file still holds.
func anyInFiles(t *testing.T, dir string, frags []string) int {
	n := 0
	for _, f := range frags {
		if rawFilesContain(t, dir, f) {
			n++
		}
	}
	return n
}

// rawFilesContain reports whether any database file holds s.
func rawFilesContain(t *testing.T, dir, s string) bool {
	files, err := filepath.Glob(filepath.Join(dir, "data", "ledger.db*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// TestRetentionPurge: payloads are encrypted at rest; those past their
// retention are deleted, unless a legal hold keeps them; after a purge
// verify passes, telling deleted by policy from missing, and neither the
// text of a purged message nor its sealed bytes are left in the database
// files.
func TestRetentionPurge(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	cfg := gwConfig{extra: "retention:\n  policies: {short: 1s}\n  purge_every: 0s\n", chanExtra: "    retention: short\n"}
	g := startGateway(t, dir, cfg)
	phrase := fmt.Sprintf("my-phone-is-%d", time.Now().UnixNano())
	for i := range 5 {
		body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01RET%021d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"r","message":{"id":"%d","type":"text","text":"%s-%d","quoteToken":"q"}}]}`,
			time.Now().UnixMilli(), i, i, phrase, i)
		if code := g.post(t, testSecret, body); code != 200 {
			t.Fatal(code)
		}
	}
	waitIdle(t, g)
	g.stop()
	if rawFilesContain(t, dir, phrase) {
		t.Fatal("a message's text is in the database files in the clear")
	}
	frags := sealedFragments(t, dir, phrase)
	if len(frags) < 5 { // the five webhooks at least
		t.Fatalf("%d records hold the phrase once decrypted, want at least 5", len(frags))
	}
	if n := anyInFiles(t, dir, frags); n != len(frags) {
		t.Fatalf("only %d of %d sealed payloads found in the files to begin with", n, len(frags))
	}
	time.Sleep(1100 * time.Millisecond) // past the retention

	code, added := runCLI(t, "hold", "add", "-config", g.cfgPath, "-channel", "demo", "-reason", "case 42")
	if code != 0 {
		t.Fatalf("hold add = %d: %s", code, added)
	}
	code, out := runCLI(t, "purge", "-config", g.cfgPath)
	if code != 0 || !strings.HasPrefix(out, "deleted 0 ") {
		t.Fatalf("purge under a hold = %d: %s", code, out)
	}
	if n := anyInFiles(t, dir, frags); n != len(frags) {
		t.Fatal("a held payload was deleted")
	}
	if code, out := runCLI(t, "hold", "release", "-config", g.cfgPath, "-id", fmt.Sprint(holdID(t, added))); code != 0 {
		t.Fatalf("hold release = %d: %s", code, out)
	}
	if code, out := runCLI(t, "purge", "-config", g.cfgPath, "-dry-run"); code != 0 || !strings.HasPrefix(out, "would delete ") || strings.HasPrefix(out, "would delete 0 ") {
		t.Fatalf("purge -dry-run = %d: %s", code, out)
	}
	if n := anyInFiles(t, dir, frags); n != len(frags) {
		t.Fatal("a dry run deleted")
	}
	code, out = runCLI(t, "purge", "-config", g.cfgPath)
	if code != 0 || strings.HasPrefix(out, "deleted 0 ") {
		t.Fatalf("purge = %d: %s", code, out)
	}
	if n := anyInFiles(t, dir, frags); n > 0 {
		t.Errorf("%d purged payloads' sealed bytes are still in the database files", n)
	}
	if rawFilesContain(t, dir, phrase) {
		t.Error("a purged message's text is in the database files")
	}
	// The deletion records are not signed yet (the gateway is stopped):
	// verify passes, and counts the deletions apart until they are.
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 || !strings.Contains(out, "PENDING: ") {
		t.Errorf("verify after purge = %d:\n%s", code, out)
	}
	// The gateway starts on the purged ledger and integrates the deletion
	// records; verify counts them as deleted by policy.
	g = startGateway(t, dir, cfg)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 || strings.Contains(out, "; 0 payloads deleted by policy") || strings.Contains(out, "PENDING") {
		t.Errorf("verify after restart = %d:\n%s", code, out)
	}
	// Each deletion is checked against the retention classes: under a
	// policy that keeps the class a year, the deletions were not due.
	long := writeConfig(t, dir, gwConfig{extra: "retention:\n  policies: {short: 8760h}\n  purge_every: 0s\n", chanExtra: "    retention: short\n"})
	if code, out := runCLI(t, "verify", "-config", long); code != 1 || !strings.Contains(out, "class \"short\" keeps it until") {
		t.Errorf("verify under a longer retention = %d:\n%s\nwant a failure naming a deletion that was not due", code, out)
	}
}

// TestHoldsAdminAPI sets and releases a legal hold through the admin API;
// both are recorded in the ledger.
func TestHoldsAdminAPI(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	_, b := adminDo(t, g, "/admin/holds", `{"channel":"demo","from":"2026-01-01","reason":"case 7"}`)
	release := fmt.Sprintf("/admin/holds/%d/release", holdID(t, string(b)))
	admin(t, g, release, "")
	req, err := http.NewRequest("POST", g.admin+release, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("releasing a released hold = %d, want 404", resp.StatusCode)
	}
	g.stop()
	var actions []string
	for _, r := range readLedger(t, dir) {
		var a struct{ Action string }
		if r.leaf.Kind == ledger.KindAdmin && json.Unmarshal(r.body, &a) == nil && strings.HasPrefix(a.Action, "legal_hold") {
			actions = append(actions, a.Action)
		}
	}
	if strings.Join(actions, ",") != "legal_hold_added,legal_hold_released" {
		t.Errorf("recorded: %v", actions)
	}
}
