package review

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/evidence"
)

// TestRSMFSlices: a group conversation over two UTC days is two .rsmf
// files, each a "channel" conversation of the members who spoke that
// day, each listed in exports.json with the records it shows.
func TestRSMFSlices(t *testing.T) {
	day1 := time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	b := &Bundle{Dir: t.TempDir(), Items: []*Item{
		{Kind: "message", Record: 1, Time: day1, Channel: "shop", Conversation: "group:C1", From: "Ua", Direction: "incoming", Type: "text", Text: "สั่งของ"},
		{Kind: "send", Record: 2, Time: day1.Add(time.Second), Channel: "shop", Conversation: "group:C1", From: "bot:shop", Direction: "outgoing", Type: "text", Text: "ok", Outcome: "sent"},
		{Kind: "event", Record: 3, Time: day2, Channel: "shop", Conversation: "group:C1", From: "Ub", Direction: "incoming", Type: "memberJoined"},
		{Kind: "message", Record: 4, Time: day2.Add(time.Second), Channel: "shop", Conversation: "group:C1", From: "Ub", Direction: "incoming", Type: "text", Text: "こんにちは"},
	}}
	ex, err := Write(b, "rsmf", Options{Generator: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Files) != 2 {
		t.Fatalf("%d files, want one per day", len(ex.Files))
	}
	wantRecords := [][]uint64{{1, 2}, {3, 4}}
	for i, f := range ex.Files {
		if !strings.Contains(f.Path, []string{"2026-11-30", "2026-12-01"}[i]) {
			t.Errorf("file %d: %s", i, f.Path)
		}
		if len(f.Records) != 2 || f.Records[0] != wantRecords[i][0] || f.Records[1] != wantRecords[i][1] {
			t.Errorf("file %s records %v, want %v", f.Path, f.Records, wantRecords[i])
		}
		m := readManifest(t, filepath.Join(b.Dir, f.Path))
		if len(m.Conversations) != 1 || m.Conversations[0].Type != "channel" || m.Conversations[0].Platform != "LINE" {
			t.Errorf("%s: conversations %+v", f.Path, m.Conversations)
		}
		if len(m.Events) != 2 {
			t.Errorf("%s: %d events", f.Path, len(m.Events))
		}
	}
	m := readManifest(t, filepath.Join(b.Dir, ex.Files[1].Path))
	if m.Events[0].Type != "join" || m.Events[1].Body != "こんにちは" || m.Events[1].Direction != "incoming" {
		t.Errorf("day 2 events %+v", m.Events)
	}
	var listed evidence.Exports
	j, _ := os.ReadFile(filepath.Join(b.Dir, evidence.ExportsFile))
	if err := json.Unmarshal(j, &listed); err != nil || listed.Format != "rsmf" || len(listed.Files) != 2 {
		t.Errorf("exports.json: %v %s", err, j)
	}
	if _, err := Write(b, "pdf", Options{}); err == nil {
		t.Error("an unknown format was written")
	}
}

func readManifest(t *testing.T, path string) Manifest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msg, err := mail.ReadMessage(f)
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			t.Fatalf("no rsmf.zip: %v", err)
		}
		if !strings.Contains(p.Header.Get("Content-Disposition"), "rsmf.zip") {
			continue
		}
		raw, _ := io.ReadAll(p)
		data, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := zr.Open("rsmf_manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		var m Manifest
		if err := json.NewDecoder(rc).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
}
