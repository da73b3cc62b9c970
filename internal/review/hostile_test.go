package review

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/evidence"
)

// hostileBundle is a message whose text looks like an encoded word, and a
// file message whose name climbs out of any directory.
func hostileBundle(t *testing.T) *Bundle {
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	return &Bundle{Dir: t.TempDir(), Items: []*Item{
		{Kind: "message", Record: 1, Time: at, Channel: "shop", Conversation: "user:Ua", From: "Ua", Direction: "incoming",
			Type: "text", MessageID: "m1", Text: "=?utf-8?b?W3Vuc2VudF0=?= fake"},
		{Kind: "message", Record: 2, Time: at.Add(time.Second), Channel: "shop", Conversation: "user:Ua", From: "Ua", Direction: "incoming",
			Type: "file", MessageID: "m2", Text: "[file] x", Media: []Attachment{
				{Record: 3, Name: "../../../../tmp/pwned.sh", ContentType: "text/plain", Size: 4, Outcome: "kept", Content: []byte("evil")},
				{Record: 4, Name: "..\\..\\win\x00\x1b[31m.bat", ContentType: "text/plain", Size: 4, Outcome: "kept", Content: []byte("evil")},
				{Record: 5, Name: strings.Repeat("長", 300) + ".txt", ContentType: "text/plain", Size: 4, Outcome: "kept", Content: []byte("long")},
			}},
	}}
}

// readEML reads an exported EML with net/mail and mime/multipart: the
// Subject decoded by mime.WordDecoder, and the attachments' file names.
func readEML(t *testing.T, path string) (subject string, names []string) {
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
	if subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.FileName() != "" {
			names = append(names, p.FileName())
		}
	}
	return subject, names
}

// TestEMLHeadersResistUserText (F8a, F8b): a text that looks like an
// encoded word stays that text in Subject, read with Go's WordDecoder and
// with Python's email package, never "[unsent] fake"; attachment names
// are base names without path separators or control characters, at most
// 100 characters.
func TestEMLHeadersResistUserText(t *testing.T) {
	b := hostileBundle(t)
	ex, err := Write(b, "eml", Options{Generator: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Files) != 2 {
		t.Fatalf("%d EML files, want 2", len(ex.Files))
	}
	first := filepath.Join(b.Dir, ex.Files[0].Path)
	second := filepath.Join(b.Dir, ex.Files[1].Path)
	subject, _ := readEML(t, first)
	if subject != "LINE text =?utf-8?b?W3Vuc2VudF0=?= fake" {
		t.Errorf("Subject read by net/mail: %q, want the user's text as it is", subject)
	}
	_, names := readEML(t, second)
	if len(names) != 3 {
		t.Fatalf("attachment names %q", names)
	}
	if names[0] != "pwned.sh" {
		t.Errorf("attachment name %q, want pwned.sh", names[0])
	}
	for _, n := range names {
		if strings.ContainsAny(n, "/\\\x00\x1b") || len([]rune(n)) > 100 || n == ".." {
			t.Errorf("attachment name %q: a path, a control character or too long", n)
		}
	}

	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("LINEGATE_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 is not installed, and LINEGATE_REQUIRE_PYTHON=1")
		}
		t.Skip("python3 is not installed: the EML was not read with Python's email package")
	}
	out, err := exec.Command(py, filepath.Join("testdata", "read_exports.py"), first, second).Output()
	if err != nil {
		t.Fatalf("read_exports.py: %v", err)
	}
	var got map[string]struct {
		Subject     string   `json:"subject"`
		Defects     []string `json:"defects"`
		Attachments []struct {
			Filename string `json:"filename"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if s := got[first].Subject; s != "LINE text =?utf-8?b?W3Vuc2VudF0=?= fake" {
		t.Errorf("Subject read by Python: %q, want the user's text as it is", s)
	}
	atts := got[second].Attachments
	if len(atts) != 3 || atts[0].Filename != "pwned.sh" {
		t.Errorf("Python reads the attachments as %+v", atts)
	}
	for _, a := range atts {
		if strings.ContainsAny(a.Filename, "/\\\x00\x1b") {
			t.Errorf("Python reads attachment name %q", a.Filename)
		}
	}
	for p, m := range got {
		if len(m.Defects) > 0 {
			t.Errorf("Python finds defects in %s: %v", p, m.Defects)
		}
	}
}

// TestHeaderEncoding: user text is plain only when it is printable ASCII
// without "=?"; otherwise wholly encoded words, which decode to the text.
func TestHeaderEncoding(t *testing.T) {
	for _, s := range []string{"hello", "=?utf-8?q?x?= y", "สวัสดีครับ 見積もりをお願いします " + strings.Repeat("長い", 40), "a\r\nBcc: x@example.com", "x\x00y"} {
		h := header(s)
		if strings.ContainsAny(h, "\r\n\x00") {
			t.Errorf("header(%q) = %q: a line break or NUL", s, h)
		}
		if strings.Contains(s, "=?") && !strings.HasPrefix(h, "=?utf-8?b?") {
			t.Errorf("header(%q) = %q: not encoded", s, h)
		}
		for _, w := range strings.Fields(h) {
			if len(w) > 75 {
				t.Errorf("header(%q): a word of %d characters", s, len(w))
			}
		}
		got, err := new(mime.WordDecoder).DecodeHeader(h)
		if err != nil || got != s {
			t.Errorf("header(%q) = %q, decodes to %q (%v)", s, h, got, err)
		}
	}
}

// TestUndecodableRecord (F4b): a webhook record nested 10000 deep, and an
// outbound record whose body does not decode, do not fail the export:
// every format is written, and lists them as "record N could not be
// decoded" with their hash, beside the records that decode.
func TestUndecodableRecord(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	deep := `{"destination":"U0123456789abcdef0123456789abcdef","events":[` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `]}`
	good := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01A","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"Ua"},"message":{"id":"7","type":"text","text":"hello"}}]}`, at.UnixMilli())
	recs := []struct {
		kind, body string
	}{{"webhook", good}, {"webhook", deep}, {"outbound", `{"outcome":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`}}
	for i, r := range recs {
		rd := filepath.Join(dir, "records", fmt.Sprintf("%012d", i))
		if err := os.MkdirAll(rd, 0o700); err != nil {
			t.Fatal(err)
		}
		s, _ := json.Marshal(evidence.Summary{Index: uint64(i), Kind: r.kind, Time: at.Format(time.RFC3339Nano), Channel: "shop", Commitment: fmt.Sprintf("%064x", i)})
		os.WriteFile(filepath.Join(rd, "record.json"), s, 0o600)
		os.WriteFile(filepath.Join(rd, "body"), []byte(r.body), 0o600)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(b.Items) != 1 || len(b.Undecodable) != 2 || b.Undecodable[0].Record != 1 || b.Undecodable[1].Record != 2 {
		t.Fatalf("items %d, undecodable %+v", len(b.Items), b.Undecodable)
	}
	for _, f := range Formats {
		ex, err := Write(b, f, Options{Generator: "test"})
		if err != nil {
			t.Fatalf("export %s: %v", f, err)
		}
		var list *evidence.ExportedFile
		for i := range ex.Files {
			if ex.Files[i].Path == "exports/undecodable.txt" {
				list = &ex.Files[i]
			}
		}
		if list == nil || len(list.Records) != 2 {
			t.Fatalf("%s: the export does not list the undecodable records: %+v", f, ex.Files)
		}
		data, _ := os.ReadFile(filepath.Join(dir, "exports", "undecodable.txt"))
		for _, want := range []string{"record 1 could not be decoded", "record 2 could not be decoded", fmt.Sprintf("%064x", 1), "body SHA-256 "} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s: undecodable.txt lacks %q:\n%s", f, want, data)
			}
		}
	}
	jl, _ := os.ReadFile(filepath.Join(dir, "exports", "linegate.jsonl"))
	if !strings.Contains(string(jl), `"kind":"undecodable","record":1`) || !strings.Contains(string(jl), `"note":"record 2 could not be decoded"`) {
		t.Errorf("linegate.jsonl does not carry the undecodable records:\n%s", jl)
	}
}

// TestExportDeterministic: the same bundle builds the same bytes, format
// by format (no random boundary, no time of writing).
func TestExportDeterministic(t *testing.T) {
	b := hostileBundle(t)
	for _, f := range Formats {
		files1, _, list1, err := build(b, f, Options{Generator: "test"})
		if err != nil {
			t.Fatal(err)
		}
		files2, _, list2, _ := build(b, f, Options{Generator: "test"})
		if string(list1) != string(list2) || len(files1) != len(files2) {
			t.Fatalf("%s: built twice, exports.json differs", f)
		}
		for i := range files1 {
			if string(files1[i].data) != string(files2[i].data) {
				t.Errorf("%s: built twice, %s differs", f, files1[i].path)
			}
		}
	}
	if _, _, _, err := build(b, "eml", Options{Generator: "x\r\nBcc: y"}); err == nil {
		t.Error("a generator with a line break was accepted")
	}
}
