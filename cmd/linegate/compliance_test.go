package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

// adminDo makes an admin call and returns its status and body.
func adminDo(t *testing.T, g *gateway, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", g.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

var msgSeq int

// sendText posts a signed text message event from a user (in a group, if
// group is not empty).
func sendText(t *testing.T, g *gateway, user, group, text string) {
	t.Helper()
	msgSeq++
	src := fmt.Sprintf(`{"type":"user","userId":%q}`, user)
	if group != "" {
		src = fmt.Sprintf(`{"type":"group","groupId":%q,"userId":%q}`, group, user)
	}
	body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01CMP%021d","deliveryContext":{"isRedelivery":false},"source":%s,"replyToken":"r","message":{"id":"%d","type":"text","text":%q,"quoteToken":"q"}}]}`,
		time.Now().UnixMilli(), msgSeq, src, 900000+msgSeq, text)
	if code := g.post(t, testSecret, body); code != 200 {
		t.Fatalf("webhook = %d", code)
	}
}

// recordsOf returns how many records sealed with a subject's key still
// have their payload.
func recordsOf(recs []storedRecord, subject string) (n int) {
	for _, r := range recs {
		if r.body != nil && slices.Contains(r.subjects, subject) {
			n++
		}
	}
	return n
}

// TestCryptoShredding: a user's data key is destroyed with every payload
// sealed with it (including a group message that user wrote), unless a
// legal hold on the user forbids it; other users' records stay readable,
// the sealed bytes are gone from the files, verify passes, and the user
// can write again under a new key.
func TestCryptoShredding(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	secret := fmt.Sprintf("shred-me-%d", time.Now().UnixNano())
	sendText(t, g, "U1", "", secret+"-a")
	sendText(t, g, "U1", "C9", secret+"-b")
	sendText(t, g, "U2", "", "keep me")
	waitIdle(t, g)

	// A legal hold on the user forbids destroying the key.
	code, hold := adminDo(t, g, "/admin/holds", `{"subject":"user:U1","reason":"case 9"}`)
	if code != 200 {
		t.Fatalf("hold = %d %s", code, hold)
	}
	if code, b := adminDo(t, g, "/admin/subjects/user:U1/shred", ""); code != http.StatusConflict {
		t.Fatalf("shred under a hold = %d %s, want 409", code, b)
	}
	if code, b := adminDo(t, g, "/admin/subjects/bogus/shred", ""); code != http.StatusBadRequest {
		t.Fatalf("shred of a non-subject = %d %s, want 400", code, b)
	}
	if code, b := adminDo(t, g, fmt.Sprintf("/admin/holds/%d/release", holdID(t, string(hold))), ""); code != 200 {
		t.Fatalf("release = %d %s", code, b)
	}
	g.stop()
	frags := sealedFragments(t, dir, secret)
	if len(frags) < 2 {
		t.Fatalf("%d records hold the user's text", len(frags))
	}
	g = startGateway(t, dir, gwConfig{})
	code, b := adminDo(t, g, "/admin/subjects/user:U1/shred", "")
	if code != 200 {
		t.Fatalf("shred = %d %s", code, b)
	}
	var res struct{ Deleted int }
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("shred: %v: %s", err, b)
	}
	if res.Deleted < 4 { // two webhooks and their two outcomes
		t.Errorf("shred deleted %d payloads, want at least 4", res.Deleted)
	}
	// The user writes again: a new key, readable.
	sendText(t, g, "U1", "", "back again")
	waitIdle(t, g)
	g.stop()

	recs := readLedger(t, dir)
	if n := recordsOf(recs, "user:U2"); n < 2 {
		t.Errorf("user U2 has %d readable records, want its webhook and outcome", n)
	}
	var again bool
	for _, r := range recs {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("record (%s) still holds the shredded user's text", r.leaf.Kind)
		}
		again = again || strings.Contains(string(r.body), "back again")
	}
	if !again {
		t.Error("the user's message after the shredding is not readable")
	}
	if n := anyInFiles(t, dir, frags); n > 0 && !pgE2E {
		t.Errorf("%d shredded payloads' sealed bytes are still in the database files", n)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 || strings.Contains(out, "; 0 payloads deleted by policy") {
		t.Errorf("verify after shredding = %d:\n%s", code, out)
	}
	// The CLI does the same with the gateway stopped.
	if code, out := runCLI(t, "keys", "shred", "-config", g.cfgPath, "-subject", "user:U2"); code != 0 || !strings.Contains(out, "destroyed the data key of user:U2") {
		t.Errorf("keys shred = %d: %s", code, out)
	}
	if n := recordsOf(readLedger(t, dir), "user:U2"); n != 0 {
		t.Errorf("user U2 still has %d readable records", n)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify after keys shred = %d:\n%s", code, out)
	}
}

// TestDeletionRequestsAndAudiences: an audience of a channel gets its own
// retention class, which the records of its users carry from the start;
// a deletion request and a consent withdrawal set the delete-after time of
// the user's records as their class says (and a class with no rule for the
// request leaves them), then a purge deletes them.
func TestDeletionRequestsAndAudiences(t *testing.T) {
	dir := t.TempDir()
	cfg := gwConfig{
		extra: `retention:
  purge_every: 0s
  policies:
    jp-appi: {law: Japan APPI, keep: 0s, after_deletion_request: 1s}
    tw-pipa: {law: Taiwan PIPA, keep: 43800h, min_keep: 2s, after_withdrawal: 0s}
`,
		chanExtra: `    retention: jp-appi
    audiences:
      - name: taiwan
        retention: tw-pipa
        subjects: [user:U3]
`,
	}
	g := startGateway(t, dir, cfg)
	for _, u := range []string{"U1", "U2", "U3"} {
		sendText(t, g, u, "", "hello from "+u)
	}
	waitIdle(t, g)
	requests := []struct {
		subject, body string
		changed       bool
	}{
		{"user:U1", `{"kind":"deletion"}`, true},
		{"user:U3", `{"kind":"withdrawal","channel":"demo"}`, true},
		{"user:U2", `{"kind":"withdrawal"}`, false}, // jp-appi has no rule for a withdrawal
	}
	for _, r := range requests {
		code, b := adminDo(t, g, "/admin/subjects/"+r.subject+"/requests", r.body)
		var rep struct{ Records, Changed int }
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s %s: %v: %s", r.subject, r.body, err, b)
		}
		if code != 200 || rep.Records < 2 || (rep.Changed > 0) != r.changed {
			t.Errorf("%s %s = %d %s", r.subject, r.body, code, b)
		}
	}
	if code, b := adminDo(t, g, "/admin/subjects/user:U1/requests", `{"kind":"forget"}`); code != 400 {
		t.Errorf("unknown request kind = %d %s", code, b)
	}
	time.Sleep(2100 * time.Millisecond) // past both the year (1s here) and the 2s minimum
	code, b := adminDo(t, g, "/admin/purge", `{}`)
	if code != 200 || strings.Contains(string(b), `"deleted":0`) {
		t.Fatalf("purge = %d %s", code, b)
	}
	g.stop()

	recs := readLedger(t, dir)
	classes := map[string]string{}
	var requestsRecorded int
	for _, r := range recs {
		for _, s := range r.subjects {
			if r.leaf.Kind == ledger.KindWebhook {
				classes[s] = r.leaf.Retention
			}
		}
		var a struct{ Action string }
		if r.leaf.Kind == ledger.KindAdmin && json.Unmarshal(r.body, &a) == nil && a.Action == "subject_request" {
			requestsRecorded++
		}
	}
	// Records of U1 and U3 are deleted: their subjects are gone with the
	// payloads; read the classes from the leaves of U2's and the index.
	if classes["user:U2"] != "jp-appi" {
		t.Errorf("U2's webhook has class %q, want the channel's jp-appi", classes["user:U2"])
	}
	// The requests' own records are sealed under their subject's key and
	// kept, as the proof that the request was made and carried out; the
	// user's messages and what was made of them are gone.
	var data []storedRecord
	for _, r := range recs {
		if r.leaf.Kind != ledger.KindAdmin {
			data = append(data, r)
		} else if r.body != nil && len(r.subjects) == 1 && strings.HasPrefix(r.subjects[0], "user:") && !strings.Contains(string(r.body), "subject_request") {
			t.Errorf("an admin record sealed under %v: %s", r.subjects, r.body)
		}
	}
	if n := recordsOf(data, "user:U1"); n != 0 {
		t.Errorf("U1 (deletion request) has %d readable records", n)
	}
	if n := recordsOf(data, "user:U3"); n != 0 {
		t.Errorf("U3 (withdrawal, tw-pipa) has %d readable records", n)
	}
	if n := recordsOf(recs, "user:U1") + recordsOf(recs, "user:U3"); n != 2 {
		t.Errorf("%d request records of U1 and U3 readable, want both", n)
	}
	if n := recordsOf(recs, "user:U2"); n < 2 {
		t.Errorf("U2 (no rule) has %d readable records, want them kept", n)
	}
	var tw int
	for _, r := range recs {
		if r.leaf.Retention == "tw-pipa" {
			tw++
		}
	}
	if tw < 2 { // U3's webhook and its outcome carry the audience's class
		t.Errorf("%d records carry the audience's class tw-pipa, want U3's webhook and outcome", tw)
	}
	if requestsRecorded != 3 {
		t.Errorf("%d requests recorded in the ledger, want 3", requestsRecorded)
	}
	// The withdrawal with a channel also withdrew U3's consent there.
	s := openStore(t, dir)
	in, err := s.OptedIn(t.Context(), "demo", "U3")
	s.Close()
	if err != nil || in {
		t.Errorf("U3 opted in = %v, %v after a withdrawal", in, err)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestKeyRotation rotates the key encryption key while the gateway runs:
// the new KEK is loaded on SIGHUP with the old one as previous, `keys
// rotate` re-wraps every data key, and then every payload decrypts with
// the new KEK alone, the old one removed; with the old one alone, nothing
// does.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	oldKEK := filepath.Join(dir, "data", "kek")
	for i := range 5 {
		sendText(t, g, fmt.Sprintf("U%d", i), "", "before the rotation")
	}
	waitIdle(t, g)

	newKEK := filepath.Join(dir, "new.kek")
	if code, out := runCLI(t, "keys", "new-kek", "-out", newKEK); code != 0 {
		t.Fatalf("keys new-kek = %d: %s", code, out)
	}
	cfg, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	setEncryption := func(y string) {
		if err := os.WriteFile(g.cfgPath, append([]byte(y), cfg...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(g.Logs(), `"current":"`+kekID(t, newKEK)+`"`) {
			if time.Now().After(deadline) {
				t.Fatalf("SIGHUP did not load the new KEK:\n%s", g.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	setEncryption(fmt.Sprintf("encryption:\n  kek_file: %s\n  previous_kek_files: [%s]\n", newKEK, oldKEK))
	for i := 5; i < 10; i++ { // new subjects: keys wrapped by the new KEK
		sendText(t, g, fmt.Sprintf("U%d", i), "", "during the rotation")
	}
	sendText(t, g, "U0", "", "an old subject during the rotation")
	code, out := runCLI(t, "keys", "rotate", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(out, " data keys re-wrapped") || strings.HasPrefix(out, "0 data keys") {
		t.Fatalf("keys rotate = %d: %s", code, out)
	}
	// The old key is gone from the config and from the disk.
	setEncryption(fmt.Sprintf("encryption:\n  kek_file: %s\n", newKEK))
	oldText, err := os.ReadFile(oldKEK)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(oldKEK); err != nil {
		t.Fatal(err)
	}
	sendText(t, g, "U0", "", "after the rotation")
	sendText(t, g, "U11", "", "a new subject after the rotation")
	waitIdle(t, g)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Fatalf("verify with the new KEK alone = %d:\n%s", code, out)
	}
	// Export decrypts every record too.
	if code, out := runCLI(t, "export", "-config", g.cfgPath, "-out", filepath.Join(dir, "bundle")); code != 0 {
		t.Fatalf("export = %d: %s", code, out)
	}
	bodies, err := filepath.Glob(filepath.Join(dir, "bundle", "records", "*", "body"))
	if err != nil {
		t.Fatal(err)
	}
	var texts int
	for _, f := range bodies {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"before the rotation", "during the rotation", "after the rotation"} {
			if strings.Contains(string(b), s) {
				texts++
			}
		}
	}
	if texts < 13 {
		t.Errorf("the bundle holds %d of the 13 messages", texts)
	}
	// With only the old KEK, the data keys no longer unwrap.
	if err := os.WriteFile(filepath.Join(dir, "old.kek"), oldText, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.cfgPath, append(fmt.Appendf(nil, "encryption:\n  kek_file: %s\n", filepath.Join(dir, "old.kek")), cfg...), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code == 0 || !strings.Contains(out, "not configured") {
		t.Errorf("verify with the old KEK alone = %d:\n%s", code, out)
	}
}

// kekID returns the id of the KEK in a file.
func kekID(t *testing.T, path string) string {
	t.Helper()
	k, err := keys.LoadKEKFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}
