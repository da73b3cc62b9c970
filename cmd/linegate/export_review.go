package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/media"
	"github.com/linegate/linegate/internal/review"
)

// checkExportFormat checks export's -format.
func checkExportFormat(f string) error {
	if f == "bundle" || slices.Contains(review.Formats, f) {
		return nil
	}
	return fmt.Errorf("%w: -format %q: want bundle, %s", errUsage, f, strings.Join(review.Formats, ", "))
}

// writeReviewExport completes the bundle just exported to dir: the
// content of its media records that is in object storage, then the files
// in format for review platforms (none for "bundle"). It checks the
// bundle first, so that the export is made from records that verify, and
// lists the files in the bundle's exports.json.
func writeReviewExport(ctx context.Context, e *env, cfg *Config, dir string, vkey []byte, format string) error {
	blobs, err := openMediaBlobs(cfg)
	if err != nil {
		return err
	}
	if blobs != nil {
		n, err := media.FillBundle(ctx, dir, blobs)
		if err != nil {
			return fmt.Errorf("media content from object storage: %w", err)
		}
		if n > 0 {
			fmt.Fprintf(e.stdout, "  %d media contents from object storage\n", n)
		}
	}
	if format == "bundle" {
		return nil
	}
	if _, err := evidence.Verify(dir, vkey); err != nil {
		return fmt.Errorf("the bundle does not verify, nothing exported for review: %w", err)
	}
	// The manifest says an export is there before it is written, so that
	// a bundle whose export is lost or removed fails verify-bundle.
	if err := evidence.SetExportFormat(dir, format); err != nil {
		return err
	}
	b, err := review.Load(dir)
	if err != nil {
		return err
	}
	ex, err := review.Write(b, format, review.Options{Generator: "linegate " + version()})
	if err != nil {
		return err
	}
	// What verify-bundle will do: rebuild the export from the records.
	m, err := evidence.Verify(dir, vkey)
	if err != nil {
		return err
	}
	if _, err := review.VerifyExports(dir, m); err != nil {
		return fmt.Errorf("the export written does not verify: %w", err)
	}
	fmt.Fprintf(e.stdout, "  %s: %d files under %s/exports, listed with their SHA-256 in %s (verify-bundle rebuilds them from the records)\n",
		format, len(ex.Files), dir, evidence.ExportsFile)
	for _, u := range b.Undecodable {
		fmt.Fprintf(e.stdout, "  record %d could not be decoded: listed in the export as such\n", u.Record)
	}
	return nil
}

// verifyBundleExports checks the exports of a verified bundle: rebuilt
// from its records, byte for byte (review.VerifyExports).
func verifyBundleExports(e *env, dir string, m *evidence.Manifest) error {
	ex, err := review.VerifyExports(dir, m)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL exports: %v\n", err)
		return errVerifyFailed
	}
	if ex != nil {
		fmt.Fprintf(e.stdout, "OK exports: %s, %d files rebuilt from the records, the same byte for byte\n", ex.Format, len(ex.Files))
	}
	return nil
}

// version is the module version of this binary, for the exports'
// generator headers.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// openMediaBlobs returns the object storage that keeps media content
// larger than media.store_max_bytes, or nil when none is configured: then
// every content is kept in the store.
func openMediaBlobs(cfg *Config) (media.Blobs, error) {
	if cfg.Archive == nil {
		return nil, nil
	}
	// The archive's bucket (objstore: Object Lock in compliance mode);
	// media's keys start with media/.
	b, err := cfg.openBucket(os.Getenv)
	if err != nil {
		return nil, err
	}
	return b, nil
}
