package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
)

// mediaUser is the LINE user of the media conversation.
const mediaUser = "U7e1c0a5b3d9f42e8a6c4b2d0f8e6a4c2"

// mediaContent is the content the simulator serves in the conversation.
var mediaContent = []struct {
	id, typ, ctype, name string
	size                 int
}{
	{"7001", "image", "image/jpeg", "7001.jpg", 6000},
	{"7002", "file", "application/octet-stream", "見積書 ใบเสนอราคา.pdf", 50000},
	{"7003", "video", "video/mp4", "7003.mp4", 200000},
}

func mediaEvent(n int, message string) string {
	return fmt.Sprintf(`{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01MEDIAE2E%016d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"%s"},"replyToken":"REPLYTOKEN","message":%s}`,
		time.Now().UnixMilli(), n, mediaUser, message)
}

// TestMediaConversation: a conversation with a text in Thai and
// Japanese, an image, a file and a video, and a text its user unsent,
// through the real binary and the simulator. The contents are fetched
// behind the acknowledgement (the video after its transcoding), kept in
// the store sealed (the database files do not hold the plain bytes),
// their SHA-256 in the ledger; the RSMF, EML and JSON lines exports hold
// them and show the unsent message as unsent; the exports read back with
// Go's net/mail and mime/multipart and with Python's email package, the
// RSMF manifest has every field the specification requires; verify-
// bundle checks the media and the exports and fails on a changed media
// file or export; after a shred of the user the contents are gone.
func TestMediaConversation(t *testing.T) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "test-access-token", Secret: testSecret}}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	for _, c := range mediaContent {
		api.AddContent(c.id, sim.Content{Type: c.typ, Size: c.size, Transcoding: 2})
	}
	dir := t.TempDir()
	// The shop's image server, whose image a rule sends: hashed at send
	// time. HTTPS, as LINE requires, with its certificate trusted by the
	// gateway (SSL_CERT_FILE).
	photo := bytes.Repeat([]byte("parcel photo "), 500)
	images := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(photo)
	}))
	t.Cleanup(images.Close)
	certFile := filepath.Join(dir, "images.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: images.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	imageHost := strings.TrimPrefix(images.URL, "https://")
	cfg := gwConfig{env: []string{"SSL_CERT_FILE=" + certFile}, extra: fmt.Sprintf(`line_api_base: %s
media:
  enabled: true
  data_api_base: %s
  every: 50ms
  retry_base: 20ms
  transcode_poll: 20ms
  sent_image_hosts: [%q]
rules:
  - name: photo
    priority: 10
    when: {event: [message], text: {exact: photo}}
    reply: [{type: image, originalContentUrl: "%s/parcel.jpg", previewImageUrl: "%s/parcel.jpg"}]
  - name: thanks
    when: {event: [message]}
    reply: [{type: text, text: "ได้รับแล้ว ありがとうございます"}]
`, srv.URL, srv.URL, imageHost, images.URL, images.URL)}
	g := startGateway(t, dir, cfg)
	bodies := []string{
		mediaEvent(1, `{"id":"7000","type":"text","text":"สวัสดีครับ 見積もりをお願いします","quoteToken":"q"}`),
		mediaEvent(2, `{"id":"7001","type":"image","quoteToken":"q","contentProvider":{"type":"line"}}`),
		mediaEvent(3, `{"id":"7002","type":"file","fileName":"見積書 ใบเสนอราคา.pdf","fileSize":50000}`),
		mediaEvent(4, `{"id":"7003","type":"video","duration":3000,"quoteToken":"q","contentProvider":{"type":"line"}}`),
		mediaEvent(5, `{"id":"7005","type":"text","text":"この発言は取り消します","quoteToken":"q"}`),
		mediaEvent(6, `{"id":"7006","type":"text","text":"photo","quoteToken":"q"}`),
		fmt.Sprintf(`{"type":"unsend","mode":"active","timestamp":%d,"webhookEventId":"01MEDIAE2EUNSEND0000000001","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"%s"},"unsend":{"messageId":"7005"}}`,
			time.Now().UnixMilli(), mediaUser),
	}
	for _, b := range bodies {
		b = strings.Replace(b, "REPLYTOKEN", api.IssueReplyToken("demo"), 1)
		body := `{"destination":"U0123456789abcdef0123456789abcdef","events":[` + b + `]}`
		if code := g.post(t, testSecret, []byte(body)); code != 200 {
			t.Fatalf("webhook = %d", code)
		}
	}
	waitMediaMetric(t, g, `linegate_media_records_total{outcome="kept"} 3`)
	waitIdle(t, g)
	time.Sleep(300 * time.Millisecond) // a checkpoint or two
	g.stop()

	// The ledger: a media record per content, sealed under the user's
	// key, with the content's SHA-256; the plain bytes are nowhere in the
	// database files.
	hashes := map[string]string{}
	photoSum := sha256.Sum256(photo)
	var photoSent bool
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindOutbound {
			var o record.Outbound
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatal(err)
			}
			if o.Rule == "photo" {
				photoSent = o.Outcome == "sent" && o.Extra["image_sha256:0"] == hex.EncodeToString(photoSum[:]) &&
					o.Extra["image_bytes:0"] == fmt.Sprint(len(photo))
				if !photoSent {
					t.Errorf("the image sent: outcome %q, extra %v; want sent, with the image's SHA-256", o.Outcome, o.Extra)
				}
			}
			continue
		}
		if r.leaf.Kind != ledger.KindMedia {
			continue
		}
		_, b, err := record.Decode(ledger.KindMedia, mustPayload(t, r.meta, r.body))
		if err != nil {
			t.Fatal(err)
		}
		m := b.(*record.Media)
		hashes[m.MessageID] = m.SHA256
		if len(r.subjects) != 1 || r.subjects[0] != "user:"+mediaUser {
			t.Errorf("media of %s sealed under %v", m.MessageID, r.subjects)
		}
	}
	if !photoSent {
		t.Error("no record of the image the photo rule sent")
	}
	for _, c := range mediaContent {
		want := sim.ContentBytes(c.id, c.typ, c.size)
		sum := sha256.Sum256(want)
		if hashes[c.id] != hex.EncodeToString(sum[:]) {
			t.Errorf("message %s: the ledger's SHA-256 %q is not the content's", c.id, hashes[c.id])
		}
		if rawContains(t, dir, want[1000:1064]) {
			t.Errorf("message %s: the database holds the content in the clear", c.id)
		}
	}
	var polls int
	for _, call := range api.Calls() {
		if strings.HasSuffix(call.Path, "/7003/content/transcoding") {
			polls++
		}
	}
	if polls < 3 {
		t.Errorf("%d transcoding polls of the video, want 3 or more (processing twice)", polls)
	}

	exports := map[string]string{}
	for _, f := range []string{"rsmf", "eml", "jsonl"} {
		out := filepath.Join(t.TempDir(), f)
		if code, o := runCLI(t, "export", "-config", g.cfgPath, "-format", f, "-out", out); code != 0 {
			t.Fatalf("export -format %s = %d:\n%s", f, code, o)
		}
		if code, o := runCLI(t, "verify-bundle", out); code != 0 || !strings.Contains(o, "OK ") {
			t.Fatalf("verify-bundle of the %s export = %d:\n%s", f, code, o)
		}
		exports[f] = out
	}
	checkJSONLines(t, exports["jsonl"])
	rsmfFiles := checkRSMF(t, exports["rsmf"])
	emlFiles := checkEML(t, exports["eml"])
	checkWithPython(t, rsmfFiles, emlFiles)

	// A changed media file, or a changed export, fails verify-bundle.
	contents, _ := filepath.Glob(filepath.Join(exports["rsmf"], "records", "*", "content"))
	if len(contents) != 3 {
		t.Fatalf("%d content files in the bundle, want 3", len(contents))
	}
	tamper := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		orig := slices.Clone(b)
		b[len(b)/2] ^= 1
		os.WriteFile(path, b, 0o600)
		if code, o := runCLI(t, "verify-bundle", exports["rsmf"]); code == 0 || !strings.Contains(o, "FAIL") {
			t.Errorf("verify-bundle passed with %s changed:\n%s", path, o)
		}
		os.WriteFile(path, orig, 0o600)
	}
	tamper(contents[0])
	tamper(rsmfFiles[0])
	if code, o := runCLI(t, "verify-bundle", exports["rsmf"]); code != 0 {
		t.Fatalf("verify-bundle after the files were restored = %d:\n%s", code, o)
	}

	// A shred of the user: the contents are gone for good.
	g = startGateway(t, dir, cfg)
	if code, b := adminDo(t, g, "/admin/subjects/user:"+mediaUser+"/shred", ""); code != 200 {
		t.Fatalf("shred = %d %s", code, b)
	}
	g.stop()
	media := 0
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindMedia {
			media++
			if r.body != nil {
				t.Errorf("a media record is still readable after the shred")
			}
		}
	}
	if media != 3 {
		t.Errorf("%d media records after the shred, want 3 (their leaves stay)", media)
	}
	for _, c := range mediaContent {
		want := sim.ContentBytes(c.id, c.typ, c.size)
		if rawContains(t, dir, want[1000:1064]) {
			t.Errorf("message %s: content in the database after the shred", c.id)
		}
	}
	out := filepath.Join(t.TempDir(), "after")
	if code, o := runCLI(t, "export", "-config", g.cfgPath, "-format", "jsonl", "-out", out); code != 0 {
		t.Fatalf("export after the shred = %d:\n%s", code, o)
	}
	if got, _ := filepath.Glob(filepath.Join(out, "records", "*", "content")); len(got) != 0 {
		t.Errorf("the export after the shred holds %d contents", len(got))
	}
	if code, o := runCLI(t, "verify", "-config", g.cfgPath); code != 0 {
		t.Errorf("verify = %d:\n%s", code, o)
	}
}

// rawContains reports whether the database holds b as it is: in SQLite's
// files, or in a payload of PostgreSQL's records table.
func rawContains(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	if !pgE2E {
		return rawFilesContain(t, dir, string(b))
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, gatewayDSN(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM records WHERE position($1::bytea in payload) > 0", b).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// mustPayload frames a decoded record's metadata and body again.
func mustPayload(t *testing.T, m *record.Meta, body []byte) []byte {
	p, err := record.EncodePayload(m, body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitMediaMetric waits until the admin listener's /metrics has line.
func waitMediaMetric(t *testing.T, g *gateway, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, b := g.get(t, g.admin+"/metrics"); strings.Contains(string(b), line) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, b := g.get(t, g.admin+"/metrics")
	var got []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "linegate_media") {
			got = append(got, l)
		}
	}
	t.Fatalf("/metrics never had %s; has:\n%s", line, strings.Join(got, "\n"))
}

func checkJSONLines(t *testing.T, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "exports", "linegate.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var sends, unsent int
	media := map[string]string{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var it struct {
			Kind     string     `json:"kind"`
			Unsent   bool       `json:"unsent"`
			UnsentAt *time.Time `json:"unsent_at"`
			Media    []struct {
				SHA256 string `json:"sha256"`
			} `json:"media"`
		}
		if err := json.Unmarshal(line, &it); err != nil {
			t.Fatalf("a line of the JSON lines export: %v", err)
		}
		var id struct {
			MessageID string `json:"message_id"`
		}
		json.Unmarshal(line, &id)
		if it.Kind == "send" {
			sends++
		}
		if it.Unsent {
			unsent++
			if id.MessageID != "7005" || it.UnsentAt == nil {
				t.Errorf("unsent: %s", line)
			}
		}
		for _, m := range it.Media {
			media[id.MessageID] = m.SHA256
		}
	}
	if unsent != 1 {
		t.Errorf("%d unsent messages in the JSON lines, want 1", unsent)
	}
	if sends == 0 {
		t.Error("no send in the JSON lines")
	}
	for _, c := range mediaContent {
		sum := sha256.Sum256(sim.ContentBytes(c.id, c.typ, c.size))
		if media[c.id] != hex.EncodeToString(sum[:]) {
			t.Errorf("JSON lines: message %s media %q", c.id, media[c.id])
		}
	}
}

// rsmfRequired is what the RSMF 2.0.0 specification requires (Relativity
// Short Message Format, "RSMF file specification" (the .rsmf file: RFC
// 5322, an X-RSMF-Version header, exactly one base64 attachment
// Content-Disposition attachment with filename "rsmf.zip") and its
// manifest schema, rsmf_schema_2_0_0.json ("The 2.0.0 version of the
// schema for the RSMF manifest file"): at the top level version (a string
// of at least 5 characters), participants, conversations and events; a
// participant's id; a conversation's id, platform and participants (each
// a participant's id; type, if given, direct or channel); an event's type
// (message, disclaimer, join, leave, history or unknown; participant and
// conversation, if given, must name a participant and a conversation;
// direction incoming or outgoing; timestamp ISO 8601); an attachment's
// id (the name of a file in rsmf.zip); a custom property's name and value
// (not empty).
var rsmfRequired = struct {
	top, participant, conversation, event, attachment, custom []string
	eventTypes, conversationTypes, directions                 []string
}{
	top:               []string{"version", "participants", "conversations", "events"},
	participant:       []string{"id"},
	conversation:      []string{"id", "platform", "participants"},
	event:             []string{"type"},
	attachment:        []string{"id"},
	custom:            []string{"name", "value"},
	eventTypes:        []string{"message", "disclaimer", "join", "leave", "history", "unknown"},
	conversationTypes: []string{"direct", "channel"},
	directions:        []string{"incoming", "outgoing"},
}

// checkRSMF reads every .rsmf of a bundle with net/mail and
// mime/multipart, checks its manifest against rsmfRequired, and its
// attachments against the content served; it returns the files.
func checkRSMF(t *testing.T, dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "exports", "rsmf", "*.rsmf"))
	if len(files) != 1 {
		t.Fatalf("%d .rsmf files, want 1 (one conversation, one day)", len(files))
	}
	msg, parts := readMIME(t, files[0])
	if v := msg.Header.Get("X-RSMF-Version"); v != "2.0.0" {
		t.Errorf("X-RSMF-Version %q", v)
	}
	for _, h := range []string{"X-RSMF-Generator", "X-RSMF-BeginDate", "X-RSMF-EndDate", "X-RSMF-EventCount"} {
		if msg.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	for _, h := range []string{"X-RSMF-BeginDate", "X-RSMF-EndDate"} {
		if _, err := time.Parse(time.RFC3339Nano, msg.Header.Get(h)); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	var zips []mimePart
	for _, p := range parts {
		if p.filename == "rsmf.zip" {
			zips = append(zips, p)
			if p.encoding != "base64" || p.disposition != "attachment" {
				t.Errorf("rsmf.zip: encoding %q disposition %q, want base64 attachment", p.encoding, p.disposition)
			}
		}
	}
	if len(zips) != 1 {
		t.Fatalf("%d rsmf.zip attachments, want exactly 1", len(zips))
	}
	zr, err := zip.NewReader(bytes.NewReader(zips[0].data), int64(len(zips[0].data)))
	if err != nil {
		t.Fatal(err)
	}
	inZip := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		inZip[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	var m map[string]any
	if err := json.Unmarshal(inZip["rsmf_manifest.json"], &m); err != nil {
		t.Fatalf("rsmf_manifest.json: %v", err)
	}
	has := func(where string, obj map[string]any, keys []string) {
		for _, k := range keys {
			if v, ok := obj[k]; !ok || v == nil || v == "" {
				t.Errorf("manifest %s: required %q missing", where, k)
			}
		}
	}
	list := func(v any) []map[string]any {
		arr, _ := v.([]any)
		var out []map[string]any
		for _, x := range arr {
			o, _ := x.(map[string]any)
			out = append(out, o)
		}
		return out
	}
	has("", m, rsmfRequired.top)
	if v, _ := m["version"].(string); len(v) < 5 {
		t.Errorf("manifest version %q", v)
	}
	participants := map[string]bool{}
	for _, p := range list(m["participants"]) {
		has("participant", p, rsmfRequired.participant)
		participants[p["id"].(string)] = true
	}
	conversations := map[string]bool{}
	for _, c := range list(m["conversations"]) {
		has("conversation", c, rsmfRequired.conversation)
		conversations[fmt.Sprint(c["id"])] = true
		if ty, ok := c["type"]; ok && !slices.Contains(rsmfRequired.conversationTypes, fmt.Sprint(ty)) {
			t.Errorf("conversation type %v", ty)
		}
		for _, p := range c["participants"].([]any) {
			if !participants[fmt.Sprint(p)] {
				t.Errorf("conversation participant %v is not a participant", p)
			}
		}
	}
	events := list(m["events"])
	if n := msg.Header.Get("X-RSMF-EventCount"); n != fmt.Sprint(len(events)) {
		t.Errorf("X-RSMF-EventCount %s, manifest %d events", n, len(events))
	}
	var deleted int
	attached := map[string]string{}
	for _, e := range events {
		has("event", e, rsmfRequired.event)
		if !slices.Contains(rsmfRequired.eventTypes, fmt.Sprint(e["type"])) {
			t.Errorf("event type %v", e["type"])
		}
		if p, ok := e["participant"]; ok && !participants[fmt.Sprint(p)] {
			t.Errorf("event participant %v is not a participant", p)
		}
		if c, ok := e["conversation"]; ok && !conversations[fmt.Sprint(c)] {
			t.Errorf("event conversation %v is not a conversation", c)
		}
		if d, ok := e["direction"]; ok && !slices.Contains(rsmfRequired.directions, fmt.Sprint(d)) {
			t.Errorf("event direction %v", d)
		}
		if ts, ok := e["timestamp"]; ok {
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ts)); err != nil {
				t.Errorf("event timestamp: %v", err)
			}
		}
		for _, c := range list(e["custom"]) {
			has("event custom", c, rsmfRequired.custom)
		}
		if e["deleted"] == true {
			deleted++
			if !strings.Contains(fmt.Sprint(e["custom"]), "unsent by the user") {
				t.Errorf("a deleted event that does not say it was unsent: %v", e)
			}
		}
		for _, a := range list(e["attachments"]) {
			has("attachment", a, rsmfRequired.attachment)
			data, ok := inZip[fmt.Sprint(a["id"])]
			if !ok {
				t.Errorf("attachment %v is not in rsmf.zip", a["id"])
			}
			sum := sha256.Sum256(data)
			attached[fmt.Sprint(a["display"])] = hex.EncodeToString(sum[:])
		}
	}
	if deleted != 1 {
		t.Errorf("%d deleted (unsent) events, want 1", deleted)
	}
	for _, c := range mediaContent {
		sum := sha256.Sum256(sim.ContentBytes(c.id, c.typ, c.size))
		if attached[c.name] != hex.EncodeToString(sum[:]) {
			t.Errorf("rsmf.zip: %s is not the content served (%q)", c.name, attached[c.name])
		}
	}
	return files
}

// checkEML reads every EML of a bundle with net/mail and mime/multipart:
// the subjects decode (Thai and Japanese), the attachments are the
// contents, the unsent message says so.
func checkEML(t *testing.T, dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "exports", "eml", "*.eml"))
	if len(files) < 5 {
		t.Fatalf("%d EML files, want a message each and the replies", len(files))
	}
	dec := new(mime.WordDecoder)
	var thai, unsent bool
	attached := map[string]string{}
	for _, f := range files {
		msg, parts := readMIME(t, f)
		subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
		if err != nil {
			t.Errorf("%s: subject: %v", f, err)
		}
		if _, err := mail.ParseAddress(msg.Header.Get("From")); err != nil {
			t.Errorf("%s: From: %v", f, err)
		}
		if _, err := msg.Header.Date(); err != nil {
			t.Errorf("%s: Date: %v", f, err)
		}
		if strings.Contains(subject, "สวัสดีครับ 見積もり") {
			thai = true
		}
		if msg.Header.Get("X-Linegate-Unsent") != "" {
			unsent = true
			if msg.Header.Get("X-Linegate-Message-Id") != "7005" || !strings.HasPrefix(subject, "[unsent]") {
				t.Errorf("%s: the unsent message: subject %q", f, subject)
			}
		}
		for _, p := range parts {
			if p.disposition == "attachment" {
				sum := sha256.Sum256(p.data)
				attached[p.filename] = hex.EncodeToString(sum[:])
			}
		}
	}
	if !thai {
		t.Error("no EML subject decodes to the Thai and Japanese text")
	}
	if !unsent {
		t.Error("no EML of the unsent message")
	}
	for _, c := range mediaContent {
		sum := sha256.Sum256(sim.ContentBytes(c.id, c.typ, c.size))
		if attached[c.name] != hex.EncodeToString(sum[:]) {
			t.Errorf("EML: attachment %s is not the content served", c.name)
		}
	}
	return files
}

type mimePart struct {
	contentType, encoding, disposition, filename string
	data                                         []byte
}

// readMIME parses an EML with net/mail and its multipart body with
// mime/multipart, decoding base64 parts.
func readMIME(t *testing.T, path string) (*mail.Message, []mimePart) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msg, err := mail.ReadMessage(f)
	if err != nil {
		t.Fatalf("%s: net/mail: %v", path, err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("%s: Content-Type %q: %v", path, msg.Header.Get("Content-Type"), err)
	}
	var parts []mimePart
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: mime/multipart: %v", path, err)
		}
		raw, _ := io.ReadAll(p)
		mp := mimePart{contentType: p.Header.Get("Content-Type"), encoding: p.Header.Get("Content-Transfer-Encoding")}
		if d, dp, err := mime.ParseMediaType(p.Header.Get("Content-Disposition")); err == nil {
			mp.disposition, mp.filename = d, dp["filename"]
		}
		if mp.encoding == "base64" {
			if mp.data, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(raw))); err != nil {
				t.Fatalf("%s: base64: %v", path, err)
			}
		} else {
			mp.data = raw
		}
		parts = append(parts, mp)
	}
	return msg, parts
}

// checkWithPython reads the exports with Python's email package (an
// independent parser): skipped without python3, unless
// LINEGATE_REQUIRE_PYTHON=1 (CI).
func checkWithPython(t *testing.T, rsmfFiles, emlFiles []string) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("LINEGATE_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 is not installed, and LINEGATE_REQUIRE_PYTHON=1")
		}
		t.Log("python3 is not installed: the exports were not read with Python's email package")
		return
	}
	args := append([]string{filepath.Join("..", "..", "internal", "review", "testdata", "read_exports.py")}, rsmfFiles...)
	args = append(args, emlFiles...)
	out, err := exec.Command(py, args...).Output()
	if err != nil {
		t.Fatalf("read_exports.py: %v", err)
	}
	var got map[string]struct {
		Subject     string            `json:"subject"`
		From        string            `json:"from"`
		Headers     map[string]string `json:"headers"`
		Defects     []string          `json:"defects"`
		Text        *string           `json:"text"`
		Attachments []struct {
			Filename string            `json:"filename"`
			SHA256   string            `json:"sha256"`
			Zip      map[string]string `json:"zip"`
			Manifest map[string]any    `json:"manifest"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("read_exports.py: %v\n%s", err, out)
	}
	hashes := map[string]string{}
	var thai, unsent bool
	for path, m := range got {
		if len(m.Defects) > 0 {
			t.Errorf("Python finds defects in %s: %v", path, m.Defects)
		}
		if m.Text == nil {
			t.Errorf("Python finds no text body in %s", path)
		}
		if strings.Contains(m.Subject, "สวัสดีครับ 見積もり") {
			thai = true
		}
		if strings.HasSuffix(path, ".eml") && m.Headers["X-Linegate-Unsent"] != "" && strings.HasPrefix(m.Subject, "[unsent]") {
			unsent = true
		}
		for _, a := range m.Attachments {
			hashes[a.Filename] = a.SHA256
			if a.Filename == "rsmf.zip" {
				if m.Headers["X-RSMF-Version"] != "2.0.0" || a.Manifest["version"] != "2.0.0" {
					t.Errorf("Python: %s: X-RSMF-Version %q, manifest version %v", path, m.Headers["X-RSMF-Version"], a.Manifest["version"])
				}
				if len(a.Zip) != len(mediaContent)+1 {
					t.Errorf("Python: rsmf.zip holds %d files, want %d", len(a.Zip), len(mediaContent)+1)
				}
			}
		}
	}
	if !thai || !unsent {
		t.Errorf("Python: Thai/Japanese subject decoded %v, unsent message %v", thai, unsent)
	}
	for _, c := range mediaContent {
		sum := sha256.Sum256(sim.ContentBytes(c.id, c.typ, c.size))
		if hashes[c.name] != hex.EncodeToString(sum[:]) {
			t.Errorf("Python: attachment %q is not the content served", c.name)
		}
	}
}
