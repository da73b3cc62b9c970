package review

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/linegate/linegate/internal/evidence"
)

// Formats are the formats Write knows.
var Formats = []string{"rsmf", "eml", "jsonl"}

// Options are what the exported files say of their maker.
type Options struct {
	// Generator names the program in X-RSMF-Generator and X-Mailer.
	Generator string
}

// Write writes the bundle's items in format under the bundle's exports/
// directory, and lists the files in exports.json with their SHA-256 and
// the records each was made from. It returns that list.
func Write(b *Bundle, format string, o Options) (*evidence.Exports, error) {
	files, ex, listing, err := build(b, format, o)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		p := filepath.Join(b.Dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(b.Dir, evidence.ExportsFile), listing, 0o600); err != nil {
		return nil, err
	}
	return ex, nil
}

// build makes the files of an export in memory, with nothing but the
// bundle's items and o: the same bundle gives the same bytes, which is
// what lets verify-bundle rebuild an export and compare it.
func build(b *Bundle, format string, o Options) ([]outFile, *evidence.Exports, []byte, error) {
	if o.Generator == "" {
		o.Generator = "linegate"
	}
	if err := checkGenerator(o.Generator); err != nil {
		return nil, nil, nil, err
	}
	var files []outFile
	var err error
	switch format {
	case "jsonl":
		files, err = jsonLines(b)
	case "eml":
		files, err = emls(b, o)
	case "rsmf":
		files, err = rsmfs(b, o)
	default:
		return nil, nil, nil, fmt.Errorf("unknown export format %q: want %s", format, strings.Join(Formats, ", "))
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if f, ok := undecodableList(b); ok {
		files = append(files, f)
	}
	ex := &evidence.Exports{Format: format, Generator: o.Generator, Files: []evidence.ExportedFile{}}
	for _, f := range files {
		sum := sha256.Sum256(f.data)
		ex.Files = append(ex.Files, evidence.ExportedFile{Path: f.path, Size: int64(len(f.data)), SHA256: hex.EncodeToString(sum[:]), Records: f.records})
	}
	j, err := json.MarshalIndent(ex, "", "  ")
	if err != nil {
		return nil, nil, nil, err
	}
	return files, ex, append(j, '\n'), nil
}

// checkGenerator accepts a generator name that can stand in a header as
// it is: printable ASCII, at most 100 characters.
func checkGenerator(g string) error {
	if len(g) > 100 {
		return errors.New("the generator name is longer than 100 characters")
	}
	for i := 0; i < len(g); i++ {
		if g[i] < ' ' || g[i] > '~' {
			return fmt.Errorf("the generator name %q holds a character other than printable ASCII", g)
		}
	}
	return nil
}

// boundary is a MIME boundary made from the file's path: the same file
// has the same boundary, and no line of a part (base64, or headers that
// begin with a name) can begin with "--".
func boundary(path string) string {
	sum := sha256.Sum256([]byte(path))
	return "linegate-" + hex.EncodeToString(sum[:16])
}

// outFile is one exported file: its path in the bundle, its bytes, and
// the records it shows.
type outFile struct {
	path    string
	data    []byte
	records []uint64
}

// jsonLines writes exports/linegate.jsonl: one JSON object per message,
// event and send.
func jsonLines(b *Bundle) ([]outFile, error) {
	var buf bytes.Buffer
	var recs []uint64
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, it := range b.Items {
		if err := enc.Encode(it); err != nil {
			return nil, err
		}
		recs = append(recs, it.Records()...)
	}
	for _, u := range b.Undecodable {
		line := struct {
			Kind       string `json:"kind"`
			Record     uint64 `json:"record"`
			RecordKind string `json:"record_kind"`
			Commitment string `json:"commitment"`
			BodySHA256 string `json:"body_sha256"`
			Reason     string `json:"reason"`
			Note       string `json:"note"`
		}{"undecodable", u.Record, u.Kind, u.Commitment, u.BodySHA256, u.Reason, fmt.Sprintf("record %d could not be decoded", u.Record)}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
		recs = append(recs, u.Record)
	}
	return []outFile{{path: "exports/linegate.jsonl", data: buf.Bytes(), records: sortedUnique(recs)}}, nil
}

// address is an RFC 5322 mailbox for a participant: LINE ids under the
// reserved .invalid domain, so that no mail can ever reach them.
func address(id string) string {
	return "<" + localPart(strings.NewReplacer(":", ".", "/", ".").Replace(id)) + "@line.invalid>"
}

// display names a participant for people.
func display(id string) string {
	if ch, ok := strings.CutPrefix(id, "bot:"); ok {
		return "LINE Official Account (channel " + ch + ")"
	}
	if ch, ok := strings.CutPrefix(id, "line:"); ok {
		return "LINE platform (channel " + ch + ")"
	}
	return "LINE user " + id
}

// header formats a header value from data a user or LINE sent: printable
// ASCII that holds no "=?" as it is; anything else wholly as RFC 2047
// encoded words in UTF-8 (base64), so that no text of a user can be read
// as an encoded word of its own, or break the header.
func header(s string) string {
	plain := !strings.Contains(s, "=?")
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= ' ' && s[i] <= '~'
	}
	if plain {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	// Words of at most 45 bytes (75 characters encoded, RFC 2047), split
	// between characters.
	var words []string
	for len(s) > 0 {
		n := 0
		for _, r := range s {
			l := utf8.RuneLen(r)
			if l < 0 {
				l = 3
			}
			if n > 0 && n+l > 45 {
				break
			}
			n += l
		}
		words = append(words, "=?utf-8?b?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, " ")
}

// localPart makes an id the local part of an address: ASCII letters,
// digits, dots, dashes and underscores; anything else becomes "_".
func localPart(id string) string {
	var b strings.Builder
	for _, r := range id {
		switch {
		case r < 128 && (r == '.' || r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// safeFileName is an attachment's file name as a mail reader may save it:
// its base name alone (no directory of either slash), no control
// characters, at most 100 characters, never "", "." or "..".
func safeFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToValidUTF8(name, "_")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == 0x7f || unicode.Is(unicode.Cf, r) {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if r := []rune(name); len(r) > 100 {
		name = string(r[:100])
	}
	if name == "" || strings.Trim(name, ".") == "" {
		return "file"
	}
	return name
}

// mailbox formats a participant as a mailbox with a display name.
func mailbox(id string) string {
	return header(display(id)) + " " + address(id)
}

// base64Lines encodes b in base64 lines of 76 characters (RFC 2045).
func base64Lines(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(enc) > 76 {
		out.WriteString(enc[:76])
		out.WriteString("\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	out.WriteString("\r\n")
	return out.Bytes()
}

// writeHeaders writes RFC 5322 headers in the order given.
func writeHeaders(w io.Writer, hs [][2]string) {
	for _, h := range hs {
		fmt.Fprintf(w, "%s: %s\r\n", h[0], h[1])
	}
}

// addPart adds a MIME part with a base64 body.
func addPart(mw *multipart.Writer, ctype, disposition string, body []byte) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", ctype)
	h.Set("Content-Transfer-Encoding", "base64")
	if disposition != "" {
		h.Set("Content-Disposition", disposition)
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	_, err = pw.Write(base64Lines(body))
	return err
}

// transcriptLine is an item as a line of a plain-text transcript.
func transcriptLine(it *Item) string {
	var s strings.Builder
	fmt.Fprintf(&s, "[%s] %s: %s", it.Time.UTC().Format(time.RFC3339), display(it.From), it.Text)
	if it.Kind == "event" {
		s.Reset()
		fmt.Fprintf(&s, "[%s] %s: (%s event)", it.Time.UTC().Format(time.RFC3339), display(it.From), it.Type)
	}
	if it.Unsent {
		fmt.Fprintf(&s, " (unsent by the user at %s)", it.UnsentAt.UTC().Format(time.RFC3339))
	}
	if it.Kind == "send" && it.Outcome != "sent" {
		fmt.Fprintf(&s, " (not sent: %s)", it.Outcome)
	}
	for _, a := range it.Media {
		fmt.Fprintf(&s, " [attachment %s, %d bytes, sha256 %s, %s]", a.Name, a.Size, a.SHA256, a.Outcome)
	}
	return s.String()
}

// emls writes one EML per message and send (exports/eml/...), each
// readable by any mail library: RFC 5322 headers with UTF-8 encoded words,
// a text/plain body, and the message's kept content as an attachment.
// Events other than messages are left to the JSON lines.
func emls(b *Bundle, o Options) ([]outFile, error) {
	var out []outFile
	for _, it := range b.Items {
		if it.Kind == "event" {
			continue
		}
		name := fmt.Sprintf("exports/eml/%s_%012d-%d-%s.eml", it.Time.UTC().Format("20060102T150405.000Z"), it.Record, it.Index, it.Kind)
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if err := mw.SetBoundary(boundary(name)); err != nil {
			return nil, err
		}
		to := "bot:" + it.Channel
		if it.Direction == "outgoing" {
			to = it.Conversation
		}
		subject := fmt.Sprintf("LINE %s %s", it.Type, truncate(it.Text, 60))
		if it.Unsent {
			subject = "[unsent] " + subject
		}
		hs := [][2]string{
			{"From", mailbox(it.From)},
			{"To", mailbox(to)},
			{"Subject", header(subject)},
			{"Date", it.Time.UTC().Format(time.RFC1123Z)},
			{"Message-ID", fmt.Sprintf("<%d.%d.%s@linegate.invalid>", it.Record, it.Index, localPart(it.Kind))},
			{"MIME-Version", "1.0"},
			{"X-Mailer", o.Generator},
			{"X-Linegate-Channel", header(it.Channel)},
			{"X-Linegate-Conversation", header(it.Conversation)},
			{"X-Linegate-Record", fmt.Sprint(it.Record)},
			{"X-Linegate-Kind", it.Kind},
		}
		if it.MessageID != "" {
			hs = append(hs, [2]string{"X-Linegate-Message-Id", header(it.MessageID)})
		}
		if it.Unsent {
			hs = append(hs, [2]string{"X-Linegate-Unsent", it.UnsentAt.UTC().Format(time.RFC3339Nano)})
		}
		if it.Kind == "send" {
			hs = append(hs, [2]string{"X-Linegate-Outcome", header(it.Outcome)})
			if len(it.RequestIDs) > 0 {
				hs = append(hs, [2]string{"X-Line-Request-Id", header(strings.Join(it.RequestIDs, ", "))})
			}
		}
		hs = append(hs, [2]string{"Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()})})
		writeHeaders(&buf, hs)
		buf.WriteString("\r\n")
		text := it.Text + "\r\n"
		if it.Unsent {
			text += "\r\n(This message was unsent by the user at " + it.UnsentAt.UTC().Format(time.RFC3339) + ".)\r\n"
		}
		for _, a := range it.Media {
			text += fmt.Sprintf("\r\nContent: %s, %d bytes, SHA-256 %s (%s)\r\n", a.Name, a.Size, a.SHA256, a.Outcome)
		}
		if err := addPart(mw, "text/plain; charset=utf-8", "", []byte(text)); err != nil {
			return nil, err
		}
		for _, a := range it.Media {
			if a.Content == nil {
				continue
			}
			ctype := a.ContentType
			if ctype == "" {
				ctype = "application/octet-stream"
			}
			if err := addPart(mw, ctype, mime.FormatMediaType("attachment", map[string]string{"filename": safeFileName(a.Name)}), a.Content); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
		out = append(out, outFile{path: name, data: buf.Bytes(), records: it.Records()})
	}
	return out, nil
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func sortedUnique(rs []uint64) []uint64 {
	out := slices.Clone(rs)
	slices.Sort(out)
	return slices.Compact(out)
}
