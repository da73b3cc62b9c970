package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// The outcomes of a media record.
const (
	// MediaKept: the content is kept (in this record, or in object
	// storage under BlobKey).
	MediaKept = "kept"
	// MediaExternal: the content is on the sender's own server
	// (contentProvider "external"); its URLs are recorded, and the
	// content too when fetching them is allowed.
	MediaExternal = "external"
	// MediaNotFound: LINE answered 404 (the content expired, or never
	// existed).
	MediaNotFound = "not_found"
	// MediaTooLarge: the content is larger than the configured bound; its
	// size is recorded, not its content.
	MediaTooLarge = "too_large"
	// MediaFailed: fetching failed after every retry, or LINE's
	// transcoding failed; Reason says which.
	MediaFailed = "failed"
)

// Media is the body of a media record: the content of one image, video,
// audio or file message event, fetched from LINE after the event was
// recorded, with its SHA-256, and where it is stored. It is sealed under
// the subjects of the event, so that it is retained, held, purged and
// shredded with the message it belongs to.
//
// The content travels in the payload after the JSON (Content), so that
// deleting the payload deletes the content and destroying a subject's key
// makes it unreadable; content larger than the store's bound is kept in
// object storage instead (BlobKey), sealed under the same subjects.
type Media struct {
	Record    uint64 `json:"webhook_record"` // the webhook record of the message
	Index     int    `json:"index"`          // the event's position in it
	EventKey  string `json:"event_key"`      // the event's dedup key
	MessageID string `json:"message_id"`
	Type      string `json:"type"` // image, video, audio, file
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason,omitempty"`
	// ContentType is the Content-Type LINE (or the external server)
	// answered with; Size and SHA256 (hex) are of the content in the
	// clear.
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
	FileName    string `json:"file_name,omitempty"`
	// Stored says where the content is: "record" (in this payload),
	// "blobs" (object storage, under BlobKey), or "" when it is not kept.
	Stored  string `json:"stored,omitempty"`
	BlobKey string `json:"blob_key,omitempty"`
	// BlobDEK is the key (base64, AES-256-GCM) that the blob is
	// encrypted with: it lives only here, in this record's payload, so
	// that deleting the payload (a purge) or destroying its subjects'
	// keys (a shred) makes the blob unreadable for good, whether or not
	// object storage lets it be deleted before its lock ends.
	BlobDEK string `json:"blob_dek,omitempty"`
	// For contentProvider "external": the URLs the sender gave.
	OriginalContentURL string `json:"original_content_url,omitempty"`
	PreviewImageURL    string `json:"preview_image_url,omitempty"`
	// RequestID is LINE's x-line-request-id of the content request.
	RequestID string `json:"x_line_request_id,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	FetchedMs int64  `json:"fetched_ms,omitempty"`

	// Content is the content in the clear when Stored is "record" (not
	// in the JSON: it follows it in the payload).
	Content []byte `json:"-"`
	// Subj are the subjects of the event (not encoded).
	Subj []string `json:"-"`
}

func (*Media) Kind() Kind           { return KindMedia }
func (m *Media) Subjects() []string { return m.Subj }

// CheckContent reports whether content is the content the record
// describes: its size and SHA-256.
func (m *Media) CheckContent(content []byte) error {
	if int64(len(content)) != m.Size {
		return fmt.Errorf("content is %d bytes, the record says %d", len(content), m.Size)
	}
	sum := sha256.Sum256(content)
	if hex.EncodeToString(sum[:]) != m.SHA256 {
		return errors.New("content does not match the SHA-256 in the record")
	}
	return nil
}

// encode frames a media body as
//
//	u32 big-endian length of the JSON | JSON | content
func (m *Media) encode() ([]byte, error) {
	j, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("record: encode media: %w", err)
	}
	b := make([]byte, 4, 4+len(j)+len(m.Content))
	binary.BigEndian.PutUint32(b, uint32(len(j)))
	b = append(b, j...)
	return append(b, m.Content...), nil
}

// SplitMedia splits a media record's body into its JSON and its content.
func SplitMedia(body []byte) (j, content []byte, err error) {
	if len(body) < 4 {
		return nil, nil, errors.New("record: malformed media body: short")
	}
	n := binary.BigEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, nil, errors.New("record: malformed media body: length")
	}
	return body[4 : 4+n], body[4+n:], nil
}

// JoinMedia frames a media body's JSON and content as the payload holds
// them (the inverse of SplitMedia).
func JoinMedia(j, content []byte) []byte {
	b := make([]byte, 4, 4+len(j)+len(content))
	binary.BigEndian.PutUint32(b, uint32(len(j)))
	b = append(b, j...)
	return append(b, content...)
}

func decodeMedia(body []byte) (*Media, error) {
	j, content, err := SplitMedia(body)
	if err != nil {
		return nil, err
	}
	var m Media
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("record: malformed media body: %w", err)
	}
	if len(content) > 0 {
		m.Content = content
	}
	return &m, nil
}
