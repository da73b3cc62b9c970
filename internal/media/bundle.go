package media

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/record"
)

// FillBundle writes, beside each media record of the evidence bundle in
// dir whose content is in object storage, that content (records/N/content),
// decrypted with the key the record holds and checked against its
// SHA-256; verify-bundle checks it against the record again. Content
// that can no longer be read (its record's payload was deleted, so the
// bundle does not hold the record) is not written. It returns how many
// contents it wrote.
func FillBundle(ctx context.Context, dir string, b Blobs) (int, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "records"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		rd := filepath.Join(dir, "records", e.Name())
		var s evidence.Summary
		sj, err := os.ReadFile(filepath.Join(rd, "record.json"))
		if err != nil || json.Unmarshal(sj, &s) != nil || s.Kind != record.KindMedia.String() {
			continue
		}
		j, err := os.ReadFile(filepath.Join(rd, "body"))
		if err != nil {
			return n, err
		}
		var m record.Media
		if err := json.Unmarshal(j, &m); err != nil || m.Stored != "blobs" {
			continue
		}
		content, err := OpenBlob(ctx, b, &m)
		if err != nil {
			return n, fmt.Errorf("record %d: content of message %s: %w", s.Index, m.MessageID, err)
		}
		if err := os.WriteFile(filepath.Join(rd, "content"), content, 0o600); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
