package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/record"
)

// splitMediaFiles writes a media record's body as two files: "body", the
// JSON that describes the content (its message, type, size and SHA-256),
// and "content", the content itself, which reviewers open as it is.
// Together they are the payload that the leaf commits to.
func splitMediaFiles(files map[string][]byte) error {
	j, content, err := record.SplitMedia(files["body"])
	if err != nil {
		return err
	}
	files["body"] = j
	if len(content) > 0 {
		files["content"] = content
	}
	return nil
}

// joinMediaFiles rebuilds a media record's body from its two files, and
// checks the content against the SHA-256 and size the record holds.
func joinMediaFiles(j, content []byte) ([]byte, error) {
	var m record.Media
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("media body: %w", err)
	}
	switch {
	case m.Stored == "record":
		if err := m.CheckContent(content); err != nil {
			return nil, fmt.Errorf("media content of message %s: %w", m.MessageID, err)
		}
		return record.JoinMedia(j, content), nil
	case m.Stored == "blobs" && len(content) > 0:
		// Fetched from object storage for the bundle: not part of the
		// payload, and checked against the hash the payload holds.
		if err := m.CheckContent(content); err != nil {
			return nil, fmt.Errorf("media content of message %s (from object storage): %w", m.MessageID, err)
		}
		return record.JoinMedia(j, nil), nil
	case len(content) > 0:
		return nil, errors.New("a content file beside a media record that holds none")
	}
	return record.JoinMedia(j, nil), nil
}

// ExportsFile names the list of the files exported for review beside a
// bundle (rsmf, eml, jsonl), each with its SHA-256 and the records it
// was made from.
const ExportsFile = "exports.json"

// Exports is exports.json.
type Exports struct {
	Format string `json:"format"`
	// Generator is the program named in the files' headers, which
	// verify-bundle uses again to rebuild them.
	Generator string         `json:"generator,omitempty"`
	Files     []ExportedFile `json:"files"`
}

// ExportedFile is one exported file: its path in the bundle, its size and
// SHA-256, and the bundle's records it shows.
type ExportedFile struct {
	Path    string   `json:"path"`
	Size    int64    `json:"size"`
	SHA256  string   `json:"sha256"`
	Records []uint64 `json:"records"`
}

// verifyExports checks exports.json, when the bundle has one: every file
// it lists is in the bundle with its SHA-256, and comes from records the
// bundle holds (and so proves).
func verifyExports(bfs fs.FS, records []uint64) error {
	b, err := fs.ReadFile(bfs, ExportsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var ex Exports
	if err := json.Unmarshal(b, &ex); err != nil {
		return fmt.Errorf("%s: %w", ExportsFile, err)
	}
	for _, f := range ex.Files {
		if !fs.ValidPath(f.Path) || !strings.HasPrefix(f.Path, "exports/") {
			return fmt.Errorf("%s: %q is not a path under exports/", ExportsFile, f.Path)
		}
		data, err := fs.ReadFile(bfs, f.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", ExportsFile, err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Size {
			return fmt.Errorf("%s: %s was changed: its SHA-256 is not the one listed", ExportsFile, f.Path)
		}
		for _, r := range f.Records {
			if _, found := slices.BinarySearch(records, r); !found {
				return fmt.Errorf("%s: %s is made from record %d, which the bundle does not hold", ExportsFile, f.Path, r)
			}
		}
	}
	return nil
}
