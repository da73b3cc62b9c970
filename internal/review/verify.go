package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/linegate/linegate/internal/evidence"
)

// VerifyExports checks the exports of the bundle in dir, whose records
// evidence.Verify has checked (m is its manifest): it rebuilds every
// exported file from those records alone and requires the bundle's to be
// the same, byte for byte, and exports.json to be the one they make. A
// file under exports/ that the records do not make is refused, and so is
// a bundle whose manifest names an export format but holds no export. It
// returns the exports checked, or nil when the bundle has none.
func VerifyExports(dir string, m *evidence.Manifest) (*evidence.Exports, error) {
	bfs, closeFS, err := evidence.ReadBundle(dir)
	if err != nil {
		return nil, err
	}
	defer closeFS()
	listing, err := fs.ReadFile(bfs, evidence.ExportsFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", evidence.ExportsFile, err)
	}
	hasListing := err == nil
	onDisk, err := exportedFiles(bfs)
	if err != nil {
		return nil, err
	}
	if !hasListing {
		switch {
		case m.ExportFormat != "" && m.ExportFormat != "bundle":
			return nil, fmt.Errorf("manifest.json says the bundle holds an export in %s, but it has no %s", m.ExportFormat, evidence.ExportsFile)
		case len(onDisk) > 0:
			return nil, fmt.Errorf("%s: a file under exports/ without %s", onDisk[0], evidence.ExportsFile)
		}
		return nil, nil
	}
	var ex evidence.Exports
	if err := json.Unmarshal(listing, &ex); err != nil {
		return nil, fmt.Errorf("%s: %w", evidence.ExportsFile, err)
	}
	if !slices.Contains(Formats, ex.Format) {
		return nil, fmt.Errorf("%s: format %q: want %v", evidence.ExportsFile, ex.Format, Formats)
	}
	if m.ExportFormat != "" && m.ExportFormat != ex.Format {
		return nil, fmt.Errorf("%s: format %s, but manifest.json says %s", evidence.ExportsFile, ex.Format, m.ExportFormat)
	}
	if err := checkGenerator(ex.Generator); err != nil {
		return nil, fmt.Errorf("%s: %w", evidence.ExportsFile, err)
	}
	b, err := Load(dir)
	if err != nil {
		return nil, err
	}
	files, rebuilt, want, err := build(b, ex.Format, Options{Generator: ex.Generator})
	if err != nil {
		return nil, fmt.Errorf("rebuilding the %s export from the records: %w", ex.Format, err)
	}
	made := map[string]bool{}
	for _, f := range files {
		made[f.path] = true
		got, err := fs.ReadFile(bfs, f.path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: missing: the records make it, and the bundle does not hold it", f.path)
		}
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(got, f.data) {
			return nil, fmt.Errorf("%s: not the file the bundle's records make (it was changed)", f.path)
		}
	}
	for _, p := range onDisk {
		if !made[p] {
			return nil, fmt.Errorf("%s: not made from the bundle's records (a file added to the export)", p)
		}
	}
	if !bytes.Equal(listing, want) {
		return nil, fmt.Errorf("%s: not the list the bundle's records make (it was changed)", evidence.ExportsFile)
	}
	return rebuilt, nil
}

// exportedFiles lists the files under exports/, refusing anything but
// directories and regular files.
func exportedFiles(bfs fs.FS) ([]string, error) {
	var out []string
	err := fs.WalkDir(bfs, "exports", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "exports" && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		switch {
		case d.IsDir():
		case d.Type().IsRegular():
			out = append(out, p)
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
