package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/line"
)

// TestEvidenceBundle exports one user's records of one day, verifies the
// bundle offline, recomputes LINE's signature of a webhook from it, and
// checks that changing one byte makes verify-bundle fail naming the record.
func TestEvidenceBundle(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	cfg := w.config(t, dir)
	cfg.logExtra = "  anchor_every: 1s\n"
	g := startGateway(t, dir, cfg)
	w.replyTo(t, w.send(t, g, "U1", "message", "track"))
	w.replyTo(t, w.send(t, g, "U2", "message", "hello"))
	w.replyTo(t, w.send(t, g, "U1", "follow", ""))
	waitIdle(t, g)
	time.Sleep(2500 * time.Millisecond) // a checkpoint and an anchor after everything
	g.stop()

	out := filepath.Join(t.TempDir(), "bundle")
	day := time.Now().UTC().Format("2006-01-02")
	next := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02")
	if code, o := runCLI(t, "export", "-config", g.cfgPath, "-from", day, "-to", next, "-user", "U1", "-out", out); code != 0 {
		t.Fatalf("export = %d:\n%s", code, o)
	}
	vkey := filepath.Join(dir, "data", "log.vkey")
	if code, o := runCLI(t, "verify-bundle", "-vkey", vkey, out); code != 0 || !strings.HasPrefix(o, "OK") {
		t.Fatalf("verify-bundle = %d:\n%s", code, o)
	}
	recs, err := filepath.Glob(filepath.Join(out, "records", "*"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var webhookDir string
	for _, rd := range recs {
		b, err := os.ReadFile(filepath.Join(rd, "record.json"))
		if err != nil {
			t.Fatal(err)
		}
		var sum map[string]any
		if err := json.Unmarshal(b, &sum); err != nil {
			t.Fatalf("%s: %v", rd, err)
		}
		kinds[sum["kind"].(string)]++
		body, err := os.ReadFile(filepath.Join(rd, "body"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body), `"U2"`) {
			t.Errorf("%s: another user's record in the bundle", filepath.Base(rd))
		}
		if sum["kind"] == "webhook" {
			webhookDir = rd
			// The auditor recomputes LINE's signature with the secret.
			if sum["x_line_signature"] != line.Sign([]byte(testSecret), body) {
				t.Errorf("%s: the signature received does not sign the body exported", filepath.Base(rd))
			}
		}
		if sum["kind"] == "outbound" && sum["x_line_request_ids"] == nil {
			t.Errorf("%s: outbound record without x-line-request-id", filepath.Base(rd))
		}
	}
	if kinds["webhook"] != 2 || kinds["event"] != 2 || kinds["outbound"] != 2 {
		t.Errorf("records by kind: %v, want 2 webhooks, 2 outcomes, 2 replies", kinds)
	}
	if anchors, err := filepath.Glob(filepath.Join(out, "anchors", "*.checkpoint")); err != nil || len(anchors) == 0 {
		t.Errorf("no anchors in the bundle: %v", err)
	}

	// One byte changed in one record.
	bodyFile := filepath.Join(webhookDir, "body")
	b, err := os.ReadFile(bodyFile)
	if err != nil {
		t.Fatal(err)
	}
	b[10] ^= 1
	if err := os.WriteFile(bodyFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, o := runCLI(t, "verify-bundle", "-vkey", vkey, out)
	name := strings.TrimLeft(filepath.Base(webhookDir), "0")
	if code != 1 || !strings.Contains(o, "FAIL record "+name+":") {
		t.Errorf("after changing a byte of record %s: verify-bundle = %d:\n%s", name, code, o)
	}
}
