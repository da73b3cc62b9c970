package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/linegate/linegate/internal/archive"
)

func runArchive(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "archive", []subcommand{
		{"put-bundle", "publish an evidence bundle (export, incident export) to the archive's bucket, locked", runArchivePutBundle},
	}, args)
}

// runArchivePutBundle publishes every file of a bundle directory as
// bundles/<directory name>/<path>, each locked in compliance mode for
// archive.retention.bundles, read back and checked.
func runArchivePutBundle(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "archive put-bundle", "[-config FILE] [-name NAME] DIR")
	configPath := flags.String("config", "", "the serve config, with its archive section")
	name := flags.String("name", "", "the bundle's name in the bucket (default: the directory's name)")
	if err := parseArgs(flags, args, 1, "the bundle directory"); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if cfg.Archive == nil {
		return errors.New("the config has no archive section: no bucket to publish to")
	}
	b, err := cfg.openBucket(e.getenv)
	if err != nil {
		return err
	}
	if err := b.CheckBucket(ctx); err != nil {
		return err
	}
	pub := archive.New(archive.Options{Bucket: b, Retention: archive.Retention{Bundles: cfg.Archive.Retention.Bundles}})
	dir := flags.Arg(0)
	if *name == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		*name = filepath.Base(abs)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		data, err := fs.ReadFile(root.FS(), p)
		if err != nil {
			return err
		}
		if err := pub.PublishBundle(ctx, *name+"/"+p, data); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "published %d files as bundles/%s/ in bucket %s, locked for %v\n", n, *name, cfg.Archive.Bucket, cfg.Archive.Retention.Bundles)
	return nil
}
