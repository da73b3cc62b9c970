package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// forgedRow returns an INSERT of a record written by hand, as someone with
// write access to the database but without the key encryption key would:
// a well-formed leaf committing to a payload stored in the clear.
func forgedRow(t *testing.T, index uint64, kind ledger.Kind, body []byte) string {
	t.Helper()
	payload, err := record.EncodePayload(&record.Meta{Channel: "demo", ReceivedMs: time.Now().UnixMilli()}, body)
	if err != nil {
		t.Fatal(err)
	}
	nonce := ledger.NewNonce()
	leaf, err := ledger.Leaf{Kind: kind, Time: time.Now(), Channel: "demo", Commitment: ledger.Commit(nonce, payload)}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("INSERT INTO records (idx, leaf, nonce, payload) VALUES (%d, x'%x', x'%x', x'%x')", index, leaf, nonce, payload)
}

// queryInt runs a query returning one integer on a copy's database.
func queryInt(t *testing.T, dir, q string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// waitNotReady waits until /readyz answers 503 and returns its body.
func waitNotReady(t *testing.T, g *gateway) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		code, b := g.get(t, g.admin+"/readyz")
		if code == http.StatusServiceUnavailable {
			return string(b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("/readyz stayed ready")
	return ""
}

// TestForgedRowsRefused: rows put into the database by hand, without the
// key encryption key (a webhook with a made-up signature and an unsealed
// payload; a deletion record that "explains" a payload set to NULL), are
// never signed into the log nor processed: serve stops signing and is not
// ready, naming the record, and verify fails naming it. A delete-after
// time moved into the past does not make purge delete a record that its
// class keeps.
func TestForgedRowsRefused(t *testing.T) {
	sqliteOnly(t)
	base := t.TempDir()
	cfg := gwConfig{chanExtra: "    retention: th-pdpa\n", extra: "retention:\n  purge_every: 0s\n"}
	g := startGateway(t, base, cfg)
	sendText(t, g, "U1", "", "first")
	sendText(t, g, "U1", "", "second")
	waitIdle(t, g)
	g.stop()
	n := uint64(queryInt(t, base, "SELECT MAX(idx)+1 FROM records"))

	t.Run("webhook", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, base, dir)
		forged := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01FORGED0000000000000000000","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"r","message":{"id":"1","type":"text","text":"START","quoteToken":"q"}}]}`,
			time.Now().UnixMilli())
		execSQL(t, dir, forgedRow(t, n, ledger.KindWebhook, forged))
		g := startGateway(t, dir, cfg)
		why := waitNotReady(t, g)
		if !strings.Contains(why, fmt.Sprintf("record %d", n)) {
			t.Errorf("/readyz says %q, want it to name record %d", why, n)
		}
		// Genuine webhooks are still taken (durable), but nothing is
		// signed past the forged record.
		sendText(t, g, "U2", "", "after")
		time.Sleep(300 * time.Millisecond)
		_, cp := g.get(t, g.admin+"/log/checkpoint")
		if c, err := ledger.ParseCheckpoint(string(cp)); err != nil || c.Size > n {
			t.Errorf("checkpoint %q signs past the forged record %d (%v)", cp, n, err)
		}
		// What LinegateSigningStalled reads: records wait, and the
		// integrations fail.
		_, m := g.get(t, g.admin+"/metrics")
		if v := metricValue(string(m), "linegate_ledger_unintegrated_records"); v < 2 {
			t.Errorf("linegate_ledger_unintegrated_records = %v, want the forged record and the one after it at least", v)
		}
		if v := metricValue(string(m), "linegate_ledger_integrate_errors_total"); v < 1 {
			t.Errorf("linegate_ledger_integrate_errors_total = %v, want the refusals counted", v)
		}
		g.stop()
		if !strings.Contains(g.Logs(), fmt.Sprintf("refused to sign record %d", n)) {
			t.Errorf("the log does not name the forged record")
		}
		// The pipeline never acted on it: no outcome names it.
		for _, r := range readLedgerRaw(t, dir) {
			if r.leaf.Kind != ledger.KindEvent || r.payload == nil {
				continue
			}
			_, b, err := record.Decode(ledger.KindEvent, r.payload)
			if err != nil {
				t.Fatal(err)
			}
			if o := b.(*record.Outcome); o.Record == n {
				t.Errorf("the forged webhook was processed: %+v", o)
			}
		}
		code, out := runCLI(t, "verify", "-config", g.cfgPath)
		if code != 1 || !strings.Contains(out, fmt.Sprintf("record %d", n)) || !strings.Contains(out, "not sealed") {
			t.Errorf("verify = %d, want 1 naming record %d as not sealed:\n%s", code, n, out)
		}
	})

	// Rows that stop the sequencer, and must say so: each one is refused,
	// naming it, and nothing past it is signed.
	for _, tc := range []struct {
		name, why string
		at        uint64
		sql       func() []string
	}{
		{"payload gone, named by no deletion record", "its payload is gone, and no deletion record names it", n, func() []string {
			return []string{forgedRow(t, n, ledger.KindWebhook, []byte(`{"events":[]}`)), fmt.Sprintf("UPDATE records SET payload = NULL, nonce = NULL WHERE idx = %d", n)}
		}},
		{"a gap", fmt.Sprintf("record %d: missing", n), n, func() []string {
			return []string{forgedRow(t, n+1, ledger.KindWebhook, []byte(`{"events":[]}`))}
		}},
		{"malformed key references", "malformed record", n, func() []string {
			return []string{forgedRow(t, n, ledger.KindWebhook, []byte(`{"events":[]}`)), fmt.Sprintf("UPDATE records SET keys = 'garbage' WHERE idx = %d", n)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, base, dir)
			execSQL(t, dir, tc.sql()...)
			g := startGateway(t, dir, cfg)
			why := waitNotReady(t, g)
			if !strings.Contains(why, tc.why) || !strings.Contains(why, fmt.Sprintf("%d", tc.at)) {
				t.Errorf("/readyz says %q, want it to name record %d: %s", why, tc.at, tc.why)
			}
			sendText(t, g, "U2", "", "after")
			time.Sleep(300 * time.Millisecond)
			_, cp := g.get(t, g.admin+"/log/checkpoint")
			if c, err := ledger.ParseCheckpoint(string(cp)); err != nil || c.Size > tc.at {
				t.Errorf("checkpoint %q signs past record %d (%v)", cp, tc.at, err)
			}
			g.stop()
		})
	}

	t.Run("deletion", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, base, dir)
		body, err := json.Marshal(record.Deletion{Deleted: []uint64{0}, Reason: "retention period over"})
		if err != nil {
			t.Fatal(err)
		}
		execSQL(t, dir, "UPDATE records SET payload = NULL, nonce = NULL, keys = NULL WHERE idx = 0",
			forgedRow(t, n, ledger.KindDeletion, body))
		code, out := runCLI(t, "verify", "-data", filepath.Join(dir, "data"))
		if code != 1 || !strings.Contains(out, "record 0") && !strings.Contains(out, fmt.Sprintf("record %d", n)) {
			t.Errorf("verify = %d, want 1 naming record 0 or %d:\n%s", code, n, out)
		}
		g := startGateway(t, dir, cfg)
		if why := waitNotReady(t, g); !strings.Contains(why, fmt.Sprintf("record %d", n)) {
			t.Errorf("/readyz says %q, want it to name record %d", why, n)
		}
		g.stop()
	})

	t.Run("copy of a sealed row", func(t *testing.T) {
		// A webhook's row copied whole (it opens under its own leaf), and
		// the dedup memory emptied so that the pipeline would act again.
		dir := t.TempDir()
		copyDir(t, base, dir)
		execSQL(t, dir, fmt.Sprintf("INSERT INTO records (idx, leaf, nonce, payload, delete_after_ms, keys) SELECT %d, leaf, nonce, payload, delete_after_ms, keys FROM records WHERE idx = 0", n),
			"DELETE FROM dedup")
		code, out := runCLI(t, "verify", "-data", filepath.Join(dir, "data"))
		if code != 1 || !strings.Contains(out, fmt.Sprintf("record %d: a copy of record 0", n)) {
			t.Errorf("verify = %d, want 1 naming record %d as a copy of record 0:\n%s", code, n, out)
		}
		g := startGateway(t, dir, cfg)
		if why := waitNotReady(t, g); !strings.Contains(why, fmt.Sprintf("record %d: a copy of record 0", n)) {
			t.Errorf("/readyz says %q, want it to name record %d as a copy", why, n)
		}
		_, cp := g.get(t, g.admin+"/log/checkpoint")
		if c, err := ledger.ParseCheckpoint(string(cp)); err != nil || c.Size > n {
			t.Errorf("checkpoint %q signs the copy (%v)", cp, err)
		}
		g.stop()
		// The pipeline never acted on the copy, though its dedup memory
		// was emptied: no outcome names it.
		for _, r := range readLedgerRaw(t, dir) {
			if r.leaf.Kind != ledger.KindEvent || r.payload == nil {
				continue
			}
			_, b, err := record.Decode(ledger.KindEvent, r.payload)
			if err != nil {
				t.Fatal(err)
			}
			if o := b.(*record.Outcome); o.Record == n {
				t.Errorf("the copy was processed: %+v", o)
			}
		}
	})

	t.Run("published checkpoint removed", func(t *testing.T) {
		// Without the published file (and no anchors yet), a cut-back
		// would look whole: verify refuses to pass, serve says so.
		dir := t.TempDir()
		copyDir(t, base, dir)
		if err := os.Remove(filepath.Join(dir, "data", "published", "checkpoint")); err != nil {
			t.Fatal(err)
		}
		code, out := runCLI(t, "verify", "-data", filepath.Join(dir, "data"))
		if code != 1 || !strings.Contains(out, "FAIL published checkpoint file: missing") {
			t.Errorf("verify without the published checkpoint = %d:\n%s", code, out)
		}
		if code, out := runCLI(t, "verify", "-data", filepath.Join(dir, "data"), "-no-published"); code != 0 {
			t.Errorf("verify -no-published = %d:\n%s", code, out)
		}
		g := startGateway(t, dir, cfg)
		g.stop()
		if !strings.Contains(g.Logs(), "the published checkpoint file is missing") {
			t.Error("serve said nothing of the missing published checkpoint")
		}
	})

	t.Run("delete-after", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, base, dir)
		// th-pdpa keeps payloads 10 years; the stored time says now.
		execSQL(t, dir, "UPDATE records SET delete_after_ms = 1 WHERE idx = 0")
		cfgPath := writeConfig(t, dir, cfg)
		code, out := runCLI(t, "purge", "-config", cfgPath)
		if code != 0 || !strings.Contains(out, "deleted 0 payloads") || !strings.Contains(out, "refused to delete 1") {
			t.Errorf("purge = %d:\n%s", code, out)
		}
		if n := queryInt(t, dir, "SELECT COUNT(*) FROM records WHERE idx = 0 AND payload IS NOT NULL"); n != 1 {
			t.Error("purge deleted a payload its class keeps for 10 years")
		}
		if code, out := runCLI(t, "verify", "-config", cfgPath); code != 0 {
			t.Errorf("verify = %d:\n%s", code, out)
		}
	})
}

// rawRecord is a record as stored, opened with the data directory's KEK.
type rawRecord struct {
	index   uint64
	leaf    ledger.Leaf
	payload []byte // in the clear; nil when deleted or not readable
}

// readLedgerRaw reads every record, leaving unreadable payloads nil
// instead of failing (readLedger fails on a forged one).
func readLedgerRaw(t *testing.T, dir string) []rawRecord {
	t.Helper()
	s := openStore(t, dir)
	defer s.Close()
	ring := testRing(t, dir, s)
	ctx := t.Context()
	n, err := s.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []rawRecord
	for r, err := range s.Records(ctx, 0, n) {
		if err != nil {
			t.Fatal(err)
		}
		rr := rawRecord{index: r.Index}
		if err := rr.leaf.UnmarshalBinary(r.Leaf); err != nil {
			t.Fatal(err)
		}
		rr.payload, _ = ledger.OpenPayload(ctx, ring, r)
		out = append(out, rr)
	}
	return out
}

// TestShredReachesEverything: everything about a user is sealed under the
// user's key, so a shred reaches it: the user's consent records (from the
// admin API and from a keyword) and a hold on the user, with the state
// tables' copies of the user id (consent, released holds). A shred from
// the CLI while serve runs does not make the user's next webhook fail.
func TestShredReachesEverything(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{extra: "consent:\n  opt_out_keywords: [STOP]\n"})
	sendText(t, g, "U7", "", "hello")
	if code, b := adminDo(t, g, "/admin/consent", `{"channel":"demo","user":"U7","opt_in":true}`); code != 200 {
		t.Fatalf("consent = %d %s", code, b)
	}
	sendText(t, g, "U7", "", "STOP")
	code, b := adminDo(t, g, "/admin/holds", `{"subject":"user:U7","reason":"case 7"}`)
	if code != 200 {
		t.Fatalf("hold = %d %s", code, b)
	}
	if code, b := adminDo(t, g, fmt.Sprintf("/admin/holds/%d/release", holdID(t, string(b))), ""); code != 200 {
		t.Fatalf("release = %d %s", code, b)
	}
	waitIdle(t, g)

	// Every admin record about the user is sealed under the user's key.
	var consent, holds int
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindAdmin {
			continue
		}
		var a record.Admin
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatal(err)
		}
		switch {
		case a.Action == "consent":
			consent++
		case a.Action == "legal_hold_added" && a.Subject == "user:U7":
			holds++
		default:
			continue
		}
		if len(r.subjects) != 1 || r.subjects[0] != "user:U7" {
			t.Errorf("%s record sealed under %v, want the user's key", a.Action, r.subjects)
		}
	}
	if consent != 2 || holds != 1 {
		t.Fatalf("%d consent records and %d hold records about the user, want 2 and 1", consent, holds)
	}

	// Shred from the CLI, beside the running gateway.
	if code, out := runCLI(t, "keys", "shred", "-config", g.cfgPath, "-subject", "user:U7"); code != 0 {
		t.Fatalf("keys shred = %d: %s", code, out)
	}
	if n := recordsOf(readLedger(t, dir), "user:U7"); n != 0 {
		t.Errorf("%d records of the user still readable after the shred", n)
	}
	if !pgE2E {
		if n := queryInt(t, dir, "SELECT COUNT(*) FROM consent WHERE user = 'U7'"); n != 0 {
			t.Error("the user's consent row outlived the shred")
		}
		if n := queryInt(t, dir, "SELECT COUNT(*) FROM holds WHERE subject LIKE '%U7%'"); n != 0 {
			t.Error("the user id outlived the shred in the holds table")
		}
	}
	// The running gateway had the old key cached: the next webhook is
	// sealed under a new key, and acknowledged.
	sendText(t, g, "U7", "", "back")
	waitIdle(t, g)
	g.stop()
	if code, out := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, out)
	}
}

// TestAdminRecordedOrNotApplied: an operator's action takes effect only
// with its record, and is recorded only when it takes effect. Releasing a
// hold that does not exist fails and appends nothing. With the database
// refusing admin records (a trigger stands in for a failing disk), the
// kill switch cannot be turned on: 503, and it stays off; with the
// database refusing the setting, the switch's record is not stored
// either.
func TestAdminRecordedOrNotApplied(t *testing.T) {
	sqliteOnly(t)
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	waitIdle(t, g)
	n := queryInt(t, dir, "SELECT COUNT(*) FROM records")
	if code, b := adminDo(t, g, "/admin/holds/123456/release", ""); code != http.StatusNotFound {
		t.Errorf("release of an unknown hold = %d %s, want 404", code, b)
	}
	if m := queryInt(t, dir, "SELECT COUNT(*) FROM records"); m != n {
		t.Errorf("a refused release appended %d records", m-n)
	}
	g.stop()

	killSwitch := func(g *gateway) bool {
		req, err := http.NewRequest("GET", g.admin+"/admin/kill-switch", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer test-admin-token")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ks struct{ On bool }
		if err := json.NewDecoder(resp.Body).Decode(&ks); err != nil {
			t.Fatal(err)
		}
		return ks.On
	}
	for _, tt := range []struct{ name, trigger string }{
		// The admin record cannot be stored (kind 5 is the second byte of
		// its leaf).
		{"record refused", "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN substr(NEW.leaf, 2, 1) = x'05' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"},
		// The setting cannot be stored.
		{"setting refused", "CREATE TRIGGER refuse BEFORE INSERT ON settings BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, filepath.Dir(g.cfgPath), dir)
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "ledger.db"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(tt.trigger); err != nil {
				t.Fatal(err)
			}
			db.Close()
			n := queryInt(t, dir, "SELECT COUNT(*) FROM records")
			g := startGateway(t, dir, gwConfig{})
			code, b := adminDo(t, g, "/admin/kill-switch", `{"on": true, "reason": "test"}`)
			if code != http.StatusServiceUnavailable || !strings.Contains(string(b), "neither applied nor recorded") {
				t.Errorf("kill switch = %d %s, want 503", code, b)
			}
			if killSwitch(g) {
				t.Error("the kill switch is on without its record")
			}
			g.stop()
			if n := queryInt(t, dir, "SELECT COUNT(*) FROM settings WHERE key = 'kill_switch' AND value = 'on'"); n != 0 {
				t.Error("the stored kill switch is on without its record")
			}
			for _, r := range readLedgerRaw(t, dir)[n:] {
				if r.leaf.Kind == ledger.KindAdmin && strings.Contains(string(r.payload), "kill_switch") {
					t.Error("the kill switch was recorded without taking effect")
				}
			}
		})
	}
}

// holdID returns the id of the hold that an answer of POST /admin/holds
// or the output of `linegate hold add` names: the index of its record.
func holdID(t *testing.T, answer string) uint64 {
	t.Helper()
	var a struct{ ID uint64 }
	if json.Unmarshal([]byte(answer), &a) == nil && a.ID > 0 {
		return a.ID
	}
	var id uint64
	if _, err := fmt.Sscanf(answer, "hold %d added", &id); err != nil {
		t.Fatalf("no hold id in %q: %v", answer, err)
	}
	return id
}

// TestHoldAndShredRace: a legal hold and a shred sent at the same moment
// never leave a record deleted after a hold covering it was committed:
// either the shred comes first, or it is refused (409).
func TestHoldAndShredRace(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for trial := range 8 {
		user := fmt.Sprintf("U%032x", 0xc000+trial)
		sendText(t, g, user, "", "race")
		waitIdle(t, g)
		var wg sync.WaitGroup
		var holdCode, shredCode int
		var holdBody []byte
		wg.Go(func() {
			holdCode, holdBody = adminDo(t, g, "/admin/holds", fmt.Sprintf(`{"channel":"demo","reason":"race %d"}`, trial))
		})
		wg.Go(func() { shredCode, _ = adminDo(t, g, "/admin/subjects/user:"+user+"/shred", "") })
		wg.Wait()
		if holdCode != 200 || (shredCode != 200 && shredCode != http.StatusConflict) {
			t.Fatalf("trial %d: hold = %d, shred = %d", trial, holdCode, shredCode)
		}
		// Release the hold for the next trial.
		if code, b := adminDo(t, g, fmt.Sprintf("/admin/holds/%d/release", holdID(t, string(holdBody))), ""); code != 200 {
			t.Fatalf("release = %d %s", code, b)
		}
	}
	g.stop()
	// In the log: no deletion record after an active hold on the demo
	// channel deletes a demo record. (Each hold here covers all of demo.)
	type hold struct{ added, released uint64 }
	var holds []hold
	for _, r := range readLedgerRaw(t, dir) {
		if r.payload == nil {
			continue
		}
		switch r.leaf.Kind {
		case ledger.KindAdmin:
			_, b, err := record.Decode(r.leaf.Kind, r.payload)
			if err != nil {
				t.Fatal(err)
			}
			switch a := b.(*record.Admin); a.Action {
			case "legal_hold_added":
				holds = append(holds, hold{added: r.index, released: ^uint64(0)})
			case "legal_hold_released":
				id := uint64(a.Detail["id"].(float64))
				for i := range holds {
					if holds[i].added == id {
						holds[i].released = r.index
					}
				}
			}
		case ledger.KindDeletion:
			_, b, err := record.Decode(r.leaf.Kind, r.payload)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range holds {
				if h.added < r.index && r.index < h.released {
					t.Errorf("deletion record %d (of %v) committed while hold %d was active", r.index, b.(*record.Deletion).Deleted, h.added)
				}
			}
		}
	}
}

// TestAdminRefusesUnknownChannels: a switch or a consent for a channel the
// config does not have, or for a user id that is not one, is a bad
// request, neither applied nor recorded.
func TestAdminRefusesUnknownChannels(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	for _, c := range []struct{ path, body string }{
		{"/admin/dry-run", `{"channel":"nosuch","on":true}`},
		{"/admin/dry-run", `{"channel":"../x","on":true}`},
		{"/admin/consent", `{"channel":"nosuch","user":"U7","opt_in":true}`},
		{"/admin/consent", `{"channel":"demo","user":"x y\n","opt_in":true}`},
		{"/admin/purge", `{"dry_run": true,}`},
	} {
		if code, b := adminDo(t, g, c.path, c.body); code != http.StatusBadRequest {
			t.Errorf("POST %s %s = %d %s, want 400", c.path, c.body, code, b)
		}
	}
	g.stop()
	for _, r := range readLedgerRaw(t, dir) {
		if r.leaf.Kind == ledger.KindAdmin && (strings.Contains(string(r.payload), "nosuch") || strings.Contains(string(r.payload), "../x")) {
			t.Errorf("a refused call was recorded: %s", r.payload)
		}
		if r.leaf.Kind == ledger.KindDeletion {
			t.Error("a purge ran on a body that did not decode")
		}
	}
	if strings.Contains(g.Logs(), "x y") {
		t.Error("the refused user id reached the log")
	}
}
