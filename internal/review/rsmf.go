package review

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"mime/multipart"
	"slices"
	"strings"
	"time"
)

// RSMFVersion is the version of the Relativity Short Message Format the
// .rsmf files follow.
const RSMFVersion = "2.0.0"

// Manifest is rsmf_manifest.json (RSMF 2.0.0).
type Manifest struct {
	Version           string         `json:"version"`
	Participants      []Participant  `json:"participants"`
	Conversations     []Conversation `json:"conversations"`
	Events            []Event        `json:"events"`
	EventCollectionID string         `json:"eventcollectionid,omitempty"`
}

// Participant is an RSMF participant.
type Participant struct {
	ID        string   `json:"id"`
	Display   string   `json:"display,omitempty"`
	AccountID string   `json:"account_id,omitempty"`
	Custom    []Custom `json:"custom,omitempty"`
}

// Conversation is an RSMF conversation.
type Conversation struct {
	ID           string   `json:"id"`
	Display      string   `json:"display,omitempty"`
	Platform     string   `json:"platform"`
	Type         string   `json:"type"` // direct, channel
	Participants []string `json:"participants"`
	Custom       []Custom `json:"custom,omitempty"`
}

// Event is an RSMF event.
type Event struct {
	ID           string           `json:"id,omitempty"`
	Type         string           `json:"type"` // message, disclaimer, join, leave, history, unknown
	Body         string           `json:"body,omitempty"`
	Participant  string           `json:"participant,omitempty"`
	Conversation string           `json:"conversation,omitempty"`
	Timestamp    string           `json:"timestamp,omitempty"`
	Deleted      bool             `json:"deleted,omitempty"`
	Direction    string           `json:"direction,omitempty"` // incoming, outgoing
	Attachments  []RSMFAttachment `json:"attachments,omitempty"`
	Custom       []Custom         `json:"custom,omitempty"`
}

// RSMFAttachment names a file of rsmf.zip.
type RSMFAttachment struct {
	ID      string `json:"id"`
	Display string `json:"display,omitempty"`
	Size    int64  `json:"size,omitempty"`
}

// Custom is a name/value pair, both not empty.
type Custom struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// slice is the items of one conversation within one UTC day.
type slice struct {
	conv  string
	day   string
	items []*Item
}

// rsmfs writes one .rsmf file per conversation and UTC day
// (exports/rsmf/...): an EML with the X-RSMF headers, a plain-text
// transcript, and one attachment rsmf.zip (stored, not compressed, with
// no times: the same records make the same bytes) holding rsmf_manifest.json and
// the messages' content.
func rsmfs(b *Bundle, o Options) ([]outFile, error) {
	var all []*slice
	index := map[string]*slice{}
	for _, it := range b.Items {
		if it.Conversation == "" {
			continue
		}
		day := it.Time.UTC().Format("2006-01-02")
		k := it.Conversation + "|" + day
		s := index[k]
		if s == nil {
			s = &slice{conv: it.Conversation, day: day}
			index[k] = s
			all = append(all, s)
		}
		s.items = append(s.items, it)
	}
	var out []outFile
	for _, s := range all {
		f, err := rsmfFile(s, o)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// rsmfEventType maps a LINE event to an RSMF event type.
func rsmfEventType(it *Item) string {
	switch {
	case it.Kind == "message" || it.Kind == "send":
		return "message"
	case it.Type == "follow" || it.Type == "join" || it.Type == "memberJoined":
		return "join"
	case it.Type == "unfollow" || it.Type == "leave" || it.Type == "memberLeft":
		return "leave"
	}
	return "unknown"
}

func rsmfFile(s *slice, o Options) (outFile, error) {
	m := Manifest{Version: RSMFVersion, EventCollectionID: s.conv}
	seen := map[string]bool{}
	var recs []uint64
	var zipFiles []struct {
		name string
		data []byte
	}
	convType := "direct"
	if !strings.HasPrefix(s.conv, "user:") {
		convType = "channel"
	}
	channel := ""
	for i, it := range s.items {
		channel = it.Channel
		if !seen[it.From] {
			seen[it.From] = true
			p := Participant{ID: it.From, Display: display(it.From)}
			if !strings.Contains(it.From, ":") {
				p.AccountID = it.From
			}
			m.Participants = append(m.Participants, p)
		}
		ev := Event{ID: fmt.Sprintf("e%d", i+1), Type: rsmfEventType(it), Participant: it.From, Conversation: s.conv,
			Timestamp: it.Time.UTC().Format(time.RFC3339Nano), Direction: it.Direction}
		ev.Custom = append(ev.Custom, Custom{"linegate record", fmt.Sprint(it.Record)}, Custom{"LINE event type", it.Type})
		if it.MessageID != "" {
			ev.Custom = append(ev.Custom, Custom{"LINE message id", it.MessageID})
		}
		if ev.Type == "message" {
			ev.Body = it.Text
		} else {
			ev.Body = "(" + it.Type + " event)"
		}
		if it.Unsent {
			ev.Deleted = true
			ev.Custom = append(ev.Custom, Custom{"unsent by the user at", it.UnsentAt.UTC().Format(time.RFC3339Nano)})
		}
		if it.Kind == "send" {
			ev.Custom = append(ev.Custom, Custom{"send outcome", it.Outcome})
			if len(it.RequestIDs) > 0 {
				ev.Custom = append(ev.Custom, Custom{"x-line-request-id", strings.Join(it.RequestIDs, ", ")})
			}
		}
		for j, a := range it.Media {
			if a.SHA256 != "" {
				ev.Custom = append(ev.Custom, Custom{fmt.Sprintf("content %d sha256", j+1), a.SHA256})
			}
			if a.Content == nil {
				ev.Custom = append(ev.Custom, Custom{fmt.Sprintf("content %d", j+1), a.Outcome})
				continue
			}
			id := fmt.Sprintf("%012d-%s", a.Record, asciiName(a.Name))
			zipFiles = append(zipFiles, struct {
				name string
				data []byte
			}{id, a.Content})
			ev.Attachments = append(ev.Attachments, RSMFAttachment{ID: id, Display: safeFileName(a.Name), Size: int64(len(a.Content))})
		}
		m.Events = append(m.Events, ev)
		recs = append(recs, it.Records()...)
	}
	conv := Conversation{ID: s.conv, Display: "LINE " + s.conv + " (channel " + channel + ")", Platform: "LINE", Type: convType,
		Custom: []Custom{{"channel", channel}}}
	for _, p := range m.Participants {
		conv.Participants = append(conv.Participants, p.ID)
	}
	m.Conversations = []Conversation{conv}

	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return outFile{}, err
	}
	add := func(name string, data []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store, Modified: time.Unix(0, 0).UTC()})
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	if err := add("rsmf_manifest.json", mj); err != nil {
		return outFile{}, err
	}
	for _, f := range zipFiles {
		if err := add(f.name, f.data); err != nil {
			return outFile{}, err
		}
	}
	if err := zw.Close(); err != nil {
		return outFile{}, err
	}

	name := fmt.Sprintf("exports/rsmf/%s_%s.rsmf", asciiName(strings.NewReplacer(":", "-").Replace(s.conv)), s.day)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary(boundary(name)); err != nil {
		return outFile{}, err
	}
	var to []string
	for _, p := range m.Participants {
		to = append(to, mailbox(p.ID))
	}
	first, last := s.items[0].Time.UTC(), s.items[len(s.items)-1].Time.UTC()
	writeHeaders(&buf, [][2]string{
		{"From", mailbox(s.items[0].From)},
		{"To", strings.Join(to, ", ")},
		{"Subject", header(fmt.Sprintf("LINE conversation %s, %s (UTC)", s.conv, s.day))},
		{"Date", first.Format(time.RFC1123Z)},
		{"Message-ID", fmt.Sprintf("<%s.%s@linegate.invalid>", localPart(strings.NewReplacer(":", ".").Replace(s.conv)), s.day)},
		{"MIME-Version", "1.0"},
		{"X-RSMF-Version", RSMFVersion},
		{"X-RSMF-Generator", o.Generator},
		{"X-RSMF-Application", "LINE"},
		{"X-RSMF-BeginDate", first.Format(time.RFC3339Nano)},
		{"X-RSMF-EndDate", last.Format(time.RFC3339Nano)},
		{"X-RSMF-EventCount", fmt.Sprint(len(m.Events))},
		{"X-RSMF-AttachmentCount", fmt.Sprint(len(zipFiles))},
		{"X-RSMF-Participants", header(strings.Join(conv.Participants, ", "))},
		{"X-RSMF-EventCollectionID", header(s.conv)},
		{"Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()})},
	})
	buf.WriteString("\r\n")
	var transcript strings.Builder
	for _, it := range s.items {
		transcript.WriteString(transcriptLine(it))
		transcript.WriteString("\r\n")
	}
	if err := addPart(mw, "text/plain; charset=utf-8", "", []byte(transcript.String())); err != nil {
		return outFile{}, err
	}
	if err := addPart(mw, "application/zip", `attachment; filename="rsmf.zip"`, zb.Bytes()); err != nil {
		return outFile{}, err
	}
	if err := mw.Close(); err != nil {
		return outFile{}, err
	}
	slices.Sort(recs)
	return outFile{path: name, data: buf.Bytes(), records: slices.Compact(recs)}, nil
}

// asciiName keeps a file name's ASCII letters, digits, dots, dashes and
// underscores, for names inside archives and on disk.
func asciiName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 128 && (r == '.' || r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "file"
	}
	return b.String()
}
