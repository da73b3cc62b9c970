package incident_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/incident"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

// TestBuild builds the timeline of a ledger with every kind of entry: the
// admin actions and alerts in order, signature failures and 503s (from a
// summary record) a minute, a run of counts closed by an alert between
// them, Messaging API 429s with their request ids, sends held back for the
// quota; records out of the range, of other channels and of other kinds
// left out.
func TestBuild(t *testing.T) {
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	l, err := ledger.New(ctx, store, ledger.Options{Origin: "example.com/test", Signer: signer, Verifier: verifier, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Close(ctx)

	t0 := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var idx []uint64
	add := func(kind ledger.Kind, when time.Time, channel string, meta *record.Meta, body record.Body) {
		t.Helper()
		if meta == nil {
			meta = &record.Meta{Channel: channel, ReceivedMs: when.UnixMilli()}
		}
		var payload []byte
		var err error
		if body == nil {
			payload, err = record.EncodePayload(meta, nil)
		} else {
			payload, err = record.Encode(meta, body)
		}
		if err != nil {
			t.Fatal(err)
		}
		i, err := l.Append(ctx, ledger.Entry{Kind: kind, Time: when, Channel: channel, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, i)
	}
	admin := func(s int, action string, detail map[string]any) {
		add(ledger.KindAdmin, at(s), "", nil, &record.Admin{Action: action, Detail: detail})
	}
	reject := func(s int, reason string, n int64) {
		m := &record.Meta{Channel: "demo", ReceivedMs: at(s).UnixMilli(), Reason: reason}
		if n > 0 {
			m.Reason, m.Suppressed = "summary: "+reason, n
		}
		add(ledger.KindRejection, at(s), "demo", m, nil)
	}
	admin(-3600, "kill_switch", map[string]any{"on": true, "reason": "before"})                            // 0: out of range
	admin(1, "kill_switch", map[string]any{"on": true, "reason": "incident"})                              // 1
	reject(2, "bad_signature", 0)                                                                          // 2
	reject(3, "unavailable", 5)                                                                            // 3
	reject(4, "missing_signature", 0)                                                                      // 4
	admin(5, "alert_firing", map[string]any{"alertname": "LinegateSignatureFailures", "severity": "page"}) // 5
	reject(6, "bad_signature", 0)                                                                          // 6
	add(ledger.KindOutbound, at(7), "demo", nil, &record.Outbound{Endpoint: "push", Outcome: "sent", Attempts: []record.Attempt{
		{Status: 429, RequestID: "req-429"}, {Status: 200, RequestID: "req-200"}}}) // 7
	add(ledger.KindOutbound, at(8), "demo", nil, &record.Outbound{Endpoint: "push", Outcome: "blocked", Class: "promotional",
		Reason: "the channel's quota budget is spent"}) // 8
	add(ledger.KindOutbound, at(9), "other", nil, &record.Outbound{Endpoint: "reply", Outcome: "failed", Attempts: []record.Attempt{{Status: 500}}}) // 9: another channel
	add(ledger.KindOutbound, at(10), "demo", nil, &record.Outbound{Endpoint: "reply", Outcome: "sent", Attempts: []record.Attempt{{Status: 200}}})   // 10: fine
	admin(11, "dry_run", map[string]any{"channel": "other", "on": true})                                                                             // 11: another channel
	add(ledger.KindWebhook, at(12), "demo", nil, &record.Webhook{Raw: []byte(`{"destination":"U1","events":[]}`)})                                   // 12: a webhook
	admin(13, "keys_rotated", map[string]any{"kek": "kek-2027", "rewrapped": 3})                                                                     // 13
	admin(75, "alert_resolved", map[string]any{"labels": map[string]any{"alertname": "LinegateSignatureFailures"}})                                  // 14
	admin(200, "kill_switch", map[string]any{"on": false, "reason": "after"})                                                                        // 15: out of range
	if _, err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	view, err := store.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	tl, err := incident.Build(ctx, view, nil, "example.com/test", incident.Selection{From: at(0), To: at(120), Channel: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		kind, action string
		records      []uint64
	}
	var got []step
	for _, e := range tl.Entries {
		got = append(got, step{e.Kind, e.Action, e.Records})
	}
	want := []step{
		{incident.KindAdmin, "kill_switch", []uint64{idx[1]}},
		{incident.KindSignatureFailures, "", []uint64{idx[2], idx[4]}},
		{incident.KindUnavailable, "", []uint64{idx[3]}},
		{incident.KindAlert, "alert_firing", []uint64{idx[5]}},
		{incident.KindSignatureFailures, "", []uint64{idx[6]}},
		{incident.KindLineAPI, "", []uint64{idx[7]}},
		{incident.KindQuotaHold, "", []uint64{idx[8]}},
		{incident.KindAdmin, "keys_rotated", []uint64{idx[13]}},
		{incident.KindAlert, "alert_resolved", []uint64{idx[14]}},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i].kind != want[i].kind || got[i].action != want[i].action || !slices.Equal(got[i].records, want[i].records) {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if e := tl.Entries[1]; e.Counts["bad_signature"] != 1 || e.Counts["missing_signature"] != 1 || !e.Time.Equal(at(2)) || !e.Minute.Equal(t0) {
		t.Errorf("signature failures entry: %+v", e)
	}
	if e := tl.Entries[2]; e.Counts["unavailable"] != 5 {
		t.Errorf("503s entry: %+v", e)
	}
	if e := tl.Entries[5]; e.Counts["429"] != 1 || !slices.Equal(e.RequestIDs, []string{"req-429"}) {
		t.Errorf("Messaging API entry: %+v", e)
	}
	wantTotals := incident.Totals{AdminActions: 2, Alerts: 2, SignatureFailures: 3, Unavailable: 5, LineAPIRateLimits: 1, QuotaHolds: 1}
	if tl.Totals != wantTotals {
		t.Errorf("totals %+v, want %+v", tl.Totals, wantTotals)
	}
	wantRecords := []uint64{idx[1], idx[2], idx[3], idx[4], idx[5], idx[6], idx[7], idx[8], idx[13], idx[14]}
	slices.Sort(wantRecords)
	if !slices.Equal(tl.Records(), wantRecords) {
		t.Errorf("records %v, want %v", tl.Records(), wantRecords)
	}

	var md, js bytes.Buffer
	if err := tl.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	last := -1
	for _, s := range []string{"kill switch ON (reason: incident)", "bad_signature 1, missing_signature 1", "unavailable 5",
		"alert LinegateSignatureFailures FIRING", "429 1; x-line-request-id req-429", "by class: promotional 1",
		"3 data keys re-wrapped under kek-2027", "alert LinegateSignatureFailures RESOLVED"} {
		i := strings.Index(md.String(), s)
		if i <= last {
			t.Errorf("timeline.md: %q missing or out of order:\n%s", s, md.String())
		}
		last = i
	}
	if err := tl.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back incident.Timeline
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Entries) != len(tl.Entries) || back.From != "2026-12-02T09:00:00Z" {
		t.Errorf("timeline.json does not read back: %v %+v", err, back)
	}

	// All channels: the other channel's 500 and dry-run are in.
	all, err := incident.Build(ctx, view, nil, "example.com/test", incident.Selection{From: at(0), To: at(120)})
	if err != nil {
		t.Fatal(err)
	}
	if all.Totals.LineAPIErrors != 1 || all.Totals.AdminActions != 3 {
		t.Errorf("all channels: totals %+v", all.Totals)
	}
}
