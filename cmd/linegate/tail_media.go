package main

import (
	"fmt"

	"github.com/linegate/linegate/internal/record"
)

// summarizeMedia says in a line what a media record holds.
func summarizeMedia(m *record.Media) string {
	s := fmt.Sprintf("%s of message %s (event %d of #%d): %s", m.Type, m.MessageID, m.Index, m.Record, m.Outcome)
	if m.Size > 0 {
		s += fmt.Sprintf(", %d bytes", m.Size)
	}
	if m.ContentType != "" {
		s += ", " + m.ContentType
	}
	if m.SHA256 != "" {
		s += ", sha256 " + m.SHA256[:16] + "..."
	}
	if m.Stored == "blobs" {
		s += ", in object storage"
	}
	if m.Reason != "" {
		s += ": " + m.Reason
	}
	return s
}
