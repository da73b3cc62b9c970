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
	b, err := review.Load(dir)
	if err != nil {
		return err
	}
	ex, err := review.Write(b, format, review.Options{Generator: "linegate " + version()})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "  %s: %d files under %s/exports, listed with their SHA-256 in %s (verify-bundle checks them)\n",
		format, len(ex.Files), dir, evidence.ExportsFile)
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
