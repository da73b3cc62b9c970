package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/linegate/linegate/internal/archive"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/witness"
	"golang.org/x/mod/sumdb/note"
)

// ArchiveConfig publishes the ledger to S3-compatible object storage with
// Object Lock in compliance mode: each object is locked until its kind's
// retention ends, and nobody, the bucket's owner included, can delete or
// overwrite it before then. The bucket must be created with Object Lock
// enabled (which turns versioning on).
type ArchiveConfig struct {
	// Endpoint is the S3 endpoint URL (default: AWS's for region).
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region (default us-east-1).
	Region string `yaml:"region"`
	// Bucket is the bucket's name (required).
	Bucket string `yaml:"bucket"`
	// Prefix is prepended to every key, such as "linegate/prod/".
	Prefix string `yaml:"prefix"`
	// PathStyle puts the bucket in the URL's path, as most S3-compatible
	// servers other than AWS want.
	PathStyle bool `yaml:"path_style"`
	// The access key id and secret: one of the value, an environment
	// variable (_env) or a file (_file) each.
	AccessKey     string `yaml:"access_key"`
	AccessKeyEnv  string `yaml:"access_key_env"`
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKey     string `yaml:"secret_key"`
	SecretKeyEnv  string `yaml:"secret_key_env"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Every is how often new checkpoints, tiles and anchors are published
	// (default 1m): each published checkpoint is an object kept for its
	// retention, so not every one the ledger signs.
	Every time.Duration `yaml:"every"`
	// Retention is how long each kind of object is locked (each default
	// 61320h, seven years; set them to what your rules require).
	Retention ArchiveRetention `yaml:"retention"`
	// StartCheck is what serve does when the bucket's newest checkpoint
	// is not extended by the database's tree: "refuse" (default) does not
	// start; "warn" starts, logs the error and stops publishing.
	StartCheck string `yaml:"start_check"`
}

// ArchiveRetention is the lock period of each kind of object.
type ArchiveRetention struct {
	Checkpoints time.Duration `yaml:"checkpoints"`
	Tiles       time.Duration `yaml:"tiles"`
	Anchors     time.Duration `yaml:"anchors"`
	Bundles     time.Duration `yaml:"bundles"`
}

// WitnessesConfig lists the witnesses that cosign each new checkpoint
// (C2SP tlog-witness), and the quorum of them a checkpoint needs.
type WitnessesConfig struct {
	// Quorum is how many of the witnesses must cosign (default: all).
	Quorum int `yaml:"quorum"`
	// List names the witnesses.
	List []WitnessConfig `yaml:"list"`
	// Every is how often the latest checkpoint is sent (default 1m).
	Every time.Duration `yaml:"every"`
}

// WitnessConfig is one witness.
type WitnessConfig struct {
	// URL is the base of its tlog-witness API (POST URL/add-checkpoint).
	URL string `yaml:"url"`
	// Key is its note verifier key, such as
	// witness.example.com+8a9f2c1d+AQ...; its name is the witness's.
	Key string `yaml:"key"`
}

const defaultArchiveRetention = 7 * 8760 * time.Hour

// checkArchive checks the archive and witnesses sections, and applies
// their defaults.
func (c *Config) checkArchive(p *configParser) {
	if a := c.Archive; a != nil {
		if a.Bucket == "" {
			p.fail("archive.bucket", "required: the name of a bucket created with Object Lock enabled")
		}
		if a.Endpoint != "" {
			if u, err := url.Parse(a.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				p.fail("archive.endpoint", "%q: want a URL such as https://s3.ap-northeast-1.amazonaws.com", a.Endpoint)
			}
		}
		if a.Every == 0 {
			a.Every = time.Minute
		}
		if a.Every < 0 {
			p.fail("archive.every", "%v: want a positive duration such as 1m", a.Every)
		}
		for key, d := range map[string]*time.Duration{"checkpoints": &a.Retention.Checkpoints, "tiles": &a.Retention.Tiles,
			"anchors": &a.Retention.Anchors, "bundles": &a.Retention.Bundles} {
			if *d == 0 {
				*d = defaultArchiveRetention
			}
			if *d < time.Hour {
				p.fail("archive.retention."+key, "%v: want a lock period of an hour or more, such as 61320h (seven years)", *d)
			}
		}
		switch a.StartCheck {
		case "":
			a.StartCheck = "refuse"
		case "refuse", "warn":
		default:
			p.fail("archive.start_check", "%q: want refuse or warn", a.StartCheck)
		}
	}
	if w := c.Witnesses; w != nil {
		if len(w.List) == 0 {
			p.fail("witnesses.list", "required: at least one witness (url and key)")
		}
		names := map[string]bool{}
		for i, wc := range w.List {
			at := fmt.Sprintf("witnesses.list[%d]", i)
			if u, err := url.Parse(wc.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				p.fail(at+".url", "%q: want the witness's base URL, such as https://witness.example.com", wc.URL)
			}
			v, err := witness.NewVerifier(wc.Key)
			if err != nil {
				p.fail(at+".key", "%v: want a note verifier key, such as witness.example.com+8a9f2c1d+AQ...", err)
				continue
			}
			if names[v.Name()] {
				p.fail(at+".key", "witness %q is listed twice", v.Name())
			}
			names[v.Name()] = true
		}
		if w.Quorum == 0 {
			w.Quorum = len(w.List)
		}
		if w.Quorum < 0 || w.Quorum > len(w.List) {
			p.fail("witnesses.quorum", "%d: want between 1 and the number of witnesses (%d)", w.Quorum, len(w.List))
		}
		if w.Every == 0 {
			w.Every = time.Minute
		}
		if w.Every < 0 {
			p.fail("witnesses.every", "%v: want a positive duration such as 1m", w.Every)
		}
	}
}

// witnesses returns the configured witnesses and quorum (none: nil, 0).
func (c *Config) witnesses() ([]witness.Witness, int, error) {
	if c.Witnesses == nil {
		return nil, 0, nil
	}
	var ws []witness.Witness
	for _, wc := range c.Witnesses.List {
		w, err := witness.New(wc.URL, wc.Key)
		if err != nil {
			return nil, 0, err
		}
		ws = append(ws, w)
	}
	return ws, c.Witnesses.Quorum, nil
}

// openBucket returns the archive's bucket.
func (c *Config) openBucket(getenv func(string) string) (*objstore.S3, error) {
	a := c.Archive
	ak, err := (secretSource{"archive.access_key", a.AccessKey, a.AccessKeyEnv, a.AccessKeyFile}).resolve(getenv, true)
	if err != nil {
		return nil, c.site.locate("", err)
	}
	sk, err := (secretSource{"archive.secret_key", a.SecretKey, a.SecretKeyEnv, a.SecretKeyFile}).resolve(getenv, true)
	if err != nil {
		return nil, c.site.locate("", err)
	}
	return objstore.New(objstore.Config{Endpoint: a.Endpoint, Region: a.Region, Bucket: a.Bucket, Prefix: a.Prefix,
		PathStyle: a.PathStyle, AccessKey: string(ak), SecretKey: string(sk)})
}

// cosignedFile is the file of the latest cosigned checkpoint, beside the
// checkpoint file.
func cosignedFile(publishDir string) string { return filepath.Join(publishDir, "checkpoint.cosigned") }

// archiveStore is what the archive needs of the store.
type archiveStore interface {
	archive.Store
}

// openArchive opens the archive's bucket, when configured, and checks
// that it has Object Lock enabled: before anything is created.
func (g *instance) openArchive(ctx context.Context, e *env) error {
	if g.cfg.Archive == nil {
		return nil
	}
	b, err := g.cfg.openBucket(e.getenv)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.CheckBucket(cctx); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	g.bucket = b
	return nil
}

// newPublisher returns the publisher to the bucket and the witnesses.
func (g *instance) newPublisher(led *ledger.Ledger) (*archive.Publisher, error) {
	cfg := g.cfg
	st, ok := g.store.(archiveStore)
	if !ok {
		return nil, errors.New("archive: the store keeps no publication state")
	}
	o := archive.Options{Store: st, Head: led.Head, Verifier: g.verifier, Origin: cfg.Log.Origin,
		Active: led.Sequencing, Logger: g.log.With("component", "archive"), CosignedFile: cosignedFile(cfg.Log.PublishDir)}
	ws, quorum, err := cfg.witnesses()
	if err != nil {
		return nil, err
	}
	if len(ws) > 0 {
		proofs := func(ctx context.Context, old, n uint64) ([][32]byte, error) {
			return ledger.ConsistencyProof(ctx, g.store, old, n)
		}
		o.Cosigner = witness.NewCosigner(ws, quorum, &http.Client{Timeout: 30 * time.Second}, proofs, st, g.log.With("component", "witness"))
	}
	if a := cfg.Archive; a != nil && g.bucket != nil {
		o.Bucket = g.bucket
		o.AnchorsDir = cfg.Log.AnchorsDir
		o.Retention = archive.Retention{Checkpoints: a.Retention.Checkpoints, Tiles: a.Retention.Tiles,
			Anchors: a.Retention.Anchors, Bundles: a.Retention.Bundles}
	}
	return archive.New(o), nil
}

// holdToBucket holds the stored tree to the bucket's newest checkpoint,
// before the ledger starts and signs anything: serve refuses to start
// when the tree does not extend it (unless a rollback acknowledgement
// names it), or with archive.start_check: warn, reports it and does not
// publish.
func (g *instance) holdToBucket(ctx context.Context, led *ledger.Ledger) error {
	if g.cfg.Archive == nil && g.cfg.Witnesses == nil {
		return nil
	}
	pub, err := g.newPublisher(led)
	if err != nil {
		return err
	}
	g.archive = pub
	if g.bucket == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	acked := func(signed []byte) (bool, error) {
		if slices.ContainsFunc(led.Acknowledged(), func(a []byte) bool { return bytes.Equal(a, signed) }) {
			return true, nil
		}
		return ledger.Acknowledges(cctx, g.store, g.ring, signed)
	}
	newest, err := pub.CheckBucket(cctx, led.Head(), acked)
	var be *archive.BucketError
	switch {
	case errors.As(err, &be) && g.cfg.Archive.StartCheck == "warn":
		g.log.Error("archive: the database's tree does not extend the bucket's newest checkpoint: not publishing (archive.start_check: warn)",
			"bucket_size", newest, "tree_size", led.Head().Size, "err", err)
		g.bucket = nil
		if g.archive, err = g.newPublisher(led); err != nil {
			return err
		}
		return nil
	case err != nil:
		return fmt.Errorf("%w (restored from an older backup, or the log forked: see acknowledge-rollback in the runbook; archive.start_check: warn starts without publishing)", err)
	}
	g.log.Info("archive: the database's tree extends the bucket's newest checkpoint", "bucket_size", newest, "tree_size", led.Head().Size)
	return nil
}

// startArchive starts the publisher (to the bucket, and the witnesses),
// with its metrics.
func (g *instance) startArchive() {
	if g.archive == nil {
		return
	}
	every := time.Minute
	if g.cfg.Witnesses != nil {
		every = g.cfg.Witnesses.Every
	}
	if g.cfg.Archive != nil {
		every = min(every, g.cfg.Archive.Every)
	}
	g.reg.MustRegister(g.archive.Collectors()...)
	pub := g.archive
	g.bg.Go(func() { pub.Run(g.bgCtx, every) })
}

// cosignedRoute serves the latest cosigned checkpoint at
// /log/checkpoint.cosigned beside the log's read side, when witnesses are
// configured.
func (g *instance) cosignedRoute(log http.Handler) http.Handler {
	if log == nil || g.cfg.Witnesses == nil {
		return log
	}
	file := cosignedFile(g.cfg.Log.PublishDir)
	mux := http.NewServeMux()
	mux.Handle("/", log)
	mux.HandleFunc("GET /checkpoint.cosigned", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(file)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(b)
	})
	return mux
}

// bucketCheckpoint returns the archive's bucket's newest trusted
// checkpoint (archive.NewestTrusted), for acknowledge-rollback to name
// when the restored tree does not extend it.
func bucketCheckpoint(ctx context.Context, e *env, cfg *Config, v note.Verifier) ([]ledger.External, error) {
	if cfg.Archive == nil {
		return nil, nil
	}
	b, err := cfg.openBucket(e.getenv)
	if err != nil {
		return nil, err
	}
	t, found, ignored, err := archive.Newest(ctx, b, v, cfg.Log.Origin)
	for _, x := range ignored {
		fmt.Fprintf(e.stderr, "archive: ignored the bucket's %s version %s (%s) %s\n", x.Key, x.Version, x.Reason, x.Detail)
	}
	if err != nil || !found {
		return nil, err
	}
	return []ledger.External{{Name: "bucket's " + t.Key, Signed: t.Signed}}, nil
}
