package review

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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
	if o.Generator == "" {
		o.Generator = "linegate"
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
		return nil, fmt.Errorf("unknown export format %q: want %s", format, strings.Join(Formats, ", "))
	}
	if err != nil {
		return nil, err
	}
	ex := &evidence.Exports{Format: format, Files: []evidence.ExportedFile{}}
	for _, f := range files {
		p := filepath.Join(b.Dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(f.data)
		ex.Files = append(ex.Files, evidence.ExportedFile{Path: f.path, Size: int64(len(f.data)), SHA256: hex.EncodeToString(sum[:]), Records: f.records})
	}
	j, _ := json.MarshalIndent(ex, "", "  ")
	if err := os.WriteFile(filepath.Join(b.Dir, evidence.ExportsFile), append(j, '\n'), 0o600); err != nil {
		return nil, err
	}
	return ex, nil
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
	return []outFile{{path: "exports/linegate.jsonl", data: buf.Bytes(), records: sortedUnique(recs)}}, nil
}

// address is an RFC 5322 mailbox for a participant: LINE ids under the
// reserved .invalid domain, so that no mail can ever reach them.
func address(id string) string {
	local := strings.NewReplacer(":", ".", "/", ".").Replace(id)
	return "<" + local + "@line.invalid>"
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

// header formats a header value: ASCII as it is, anything else as RFC 2047
// encoded words in UTF-8.
func header(s string) string {
	return mime.BEncoding.Encode("utf-8", s)
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
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
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
			{"Message-ID", fmt.Sprintf("<%d.%d.%s@linegate.invalid>", it.Record, it.Index, it.Kind)},
			{"MIME-Version", "1.0"},
			{"X-Mailer", o.Generator},
			{"X-Linegate-Channel", it.Channel},
			{"X-Linegate-Conversation", it.Conversation},
			{"X-Linegate-Record", fmt.Sprint(it.Record)},
			{"X-Linegate-Kind", it.Kind},
		}
		if it.MessageID != "" {
			hs = append(hs, [2]string{"X-Linegate-Message-Id", it.MessageID})
		}
		if it.Unsent {
			hs = append(hs, [2]string{"X-Linegate-Unsent", it.UnsentAt.UTC().Format(time.RFC3339Nano)})
		}
		if it.Kind == "send" {
			hs = append(hs, [2]string{"X-Linegate-Outcome", it.Outcome})
			if len(it.RequestIDs) > 0 {
				hs = append(hs, [2]string{"X-Line-Request-Id", strings.Join(it.RequestIDs, ", ")})
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
			if err := addPart(mw, ctype, mime.FormatMediaType("attachment", map[string]string{"filename": a.Name}), a.Content); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
		name := fmt.Sprintf("exports/eml/%s_%012d-%d-%s.eml", it.Time.UTC().Format("20060102T150405.000Z"), it.Record, it.Index, it.Kind)
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
