package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/objstore/objstoretest"
	"github.com/linegate/linegate/internal/witness/witnesstest"
)

// archiveConfig returns the archive and witnesses sections for a bucket
// and a witness.
func archiveConfig(t *testing.T, srv *objstoretest.Server, bucket string, w *witnesstest.Witness) string {
	y := ""
	if srv != nil {
		secret := filepath.Join(t.TempDir(), "s3secret")
		if err := os.WriteFile(secret, []byte(srv.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		y += fmt.Sprintf(`archive:
  endpoint: %s
  bucket: %s
  path_style: true
  access_key: %s
  secret_key_file: %s
  every: 200ms
  retention: {checkpoints: 2h, tiles: 3h, anchors: 4h, bundles: 5h}
`, srv.Endpoint, bucket, srv.AccessKey, secret)
	}
	if w != nil {
		y += fmt.Sprintf("witnesses:\n  quorum: 1\n  every: 200ms\n  list:\n    - url: %s\n      key: %s\n", w.URL, w.VKey)
	}
	return y
}

// waitObject polls the bucket until key is there.
func waitObject(t *testing.T, b *objstore.S3, key string) []byte {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		got, err := b.Get(ctx, key)
		if err == nil {
			return got
		}
		if !errors.Is(err, objstore.ErrNotFound) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s was not published", key)
	return nil
}

// TestArchive: serve publishes checkpoints, full tiles and entry bundles,
// anchors and cosigned checkpoints to a bucket under Object Lock, and has
// a real witness cosign; verify requires the quorum. Then an insider
// rolls the database back and forks the log: serve refuses to start
// against the bucket, the witness refuses the forked checkpoint and serve
// reports it, and verify with the quorum fails.
func TestArchive(t *testing.T) {
	srv := objstoretest.Start(t)
	bucket := srv.Bucket(t, "ledger")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	vkey, err := generateKey(filepath.Join(dir, "data", "log.key"), testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	wit := witnesstest.Start(t, "example.com/witness-1", testOrigin, vkey)
	conf := gwConfig{public: true, logExtra: anchorsEverySecond, extra: archiveConfig(t, srv, "ledger", wit)}

	ctx := context.Background()
	g := startGateway(t, dir, conf)
	for i := range 100 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 100)
	g.stop()
	backup := t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup)

	g = startGateway(t, dir, conf)
	for i := 100; i < 300; i++ {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 300)
	// The served checkpoint, once the tree is still, is the bucket's.
	var size uint64
	var published []byte
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, cp := g.get(t, g.webhook+"/log/checkpoint")
		c, err := ledger.ParseCheckpoint(string(cp))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bucket.Get(ctx, fmt.Sprintf("checkpoint-%d", c.Size)); err == nil {
			if !bytes.Equal(got, cp) {
				t.Fatalf("the bucket's checkpoint-%d differs from the served checkpoint", c.Size)
			}
			size, published = c.Size, got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint-%d was not published", c.Size)
		}
	}

	// Full tiles and bundles, byte for byte as served (tlog-tiles).
	for _, key := range []string{"tile/0/000", "tile/entries/000"} {
		got := waitObject(t, bucket, key)
		_, served := g.get(t, g.webhook+"/log/"+key)
		if !bytes.Equal(got, served) || len(got) == 0 {
			t.Fatalf("%s: the bucket's copy (%d bytes) differs from the served one (%d bytes)", key, len(got), len(served))
		}
	}
	cosigned := waitObject(t, bucket, fmt.Sprintf("checkpoint-%d.cosigned", size))
	if !bytes.HasPrefix(cosigned, published) || !strings.Contains(string(cosigned), "— example.com/witness-1 ") {
		t.Fatalf("cosigned checkpoint:\n%s", cosigned)
	}
	if code, served := g.get(t, g.webhook+"/log/checkpoint.cosigned"); code != 200 || !strings.Contains(string(served), "— example.com/witness-1 ") {
		t.Fatalf("GET /log/checkpoint.cosigned = %d:\n%s", code, served)
	}
	var anchors []string
	for deadline := time.Now().Add(20 * time.Second); len(anchors) == 0; time.Sleep(100 * time.Millisecond) {
		if anchors, err = bucket.List(context.Background(), "anchors/"); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no anchor was published")
		}
	}

	// Locked, for the configured periods, and the server refuses to
	// remove them.
	for key, d := range map[string]time.Duration{fmt.Sprintf("checkpoint-%d", size): 2 * time.Hour, "tile/0/000": 3 * time.Hour, anchors[0]: 4 * time.Hour} {
		until, err := bucket.RetainUntil(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if left := time.Until(until); left < d-time.Minute || left > d+time.Minute {
			t.Errorf("%s: locked for %v, configured %v", key, left, d)
		}
		if err := bucket.Delete(ctx, key); !errors.Is(err, objstore.ErrLocked) {
			t.Errorf("delete %s: %v; want ErrLocked", key, err)
		}
	}
	metrics := func(g *gateway) string { _, b := g.get(t, g.admin+"/metrics"); return string(b) }
	if m := metrics(g); !strings.Contains(m, `linegate_archive_published_size{stream="checkpoint"}`) ||
		!strings.Contains(m, `linegate_witness_quorum_met 1`) {
		t.Fatalf("metrics lack the archive's:\n%s", grepLines(m, "linegate_archive_", "linegate_witness_"))
	}
	g.stop()

	code, out := runCLI(t, "verify", "-config", g.cfgPath, "-witness-quorum", "1")
	if code != 0 || !strings.Contains(out, "OK witnesses:") {
		t.Fatalf("verify -witness-quorum 1 = %d:\n%s", code, out)
	}
	code, out = runCLI(t, "verify", "-config", g.cfgPath, "-witness-quorum", "1", "-witness-key", vkeyOf(t, "example.com/witness-1"))
	if code != 1 || !strings.Contains(out, "FAIL witnesses") {
		t.Fatalf("verify with another witness key = %d:\n%s", code, out)
	}

	// An evidence bundle carries the cosigned checkpoint; verify-bundle
	// requires the quorum with the witnesses' keys.
	bundle := filepath.Join(t.TempDir(), "bundle")
	if code, out := runCLI(t, "export", "-config", g.cfgPath, "-out", bundle); code != 0 || !strings.Contains(out, "cosigned checkpoint") {
		t.Fatalf("export = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "verify-bundle", "-witness-quorum", "1", "-witness-key", wit.VKey, bundle); code != 0 || !strings.Contains(out, "OK witnesses:") {
		t.Fatalf("verify-bundle -witness-quorum 1 = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "verify-bundle", "-witness-quorum", "1", "-witness-key", vkeyOf(t, "example.com/witness-1"), bundle); code != 1 || !strings.Contains(out, "FAIL witnesses") {
		t.Fatalf("verify-bundle with another witness key = %d:\n%s", code, out)
	}

	// The bundle goes to the bucket too, locked.
	if code, out := runCLI(t, "archive", "put-bundle", "-config", g.cfgPath, "-name", "case-1", bundle); code != 0 || !strings.Contains(out, "bundles/case-1/") {
		t.Fatalf("archive put-bundle = %d:\n%s", code, out)
	}
	want, err := os.ReadFile(filepath.Join(bundle, "witness", "checkpoint.cosigned"))
	if err != nil {
		t.Fatal(err)
	}
	if got := waitObject(t, bucket, "bundles/case-1/witness/checkpoint.cosigned"); !bytes.Equal(got, want) {
		t.Fatal("the bucket's copy of the bundle differs")
	}
	if until, err := bucket.RetainUntil(ctx, "bundles/case-1/manifest.json"); err != nil || time.Until(until) < 5*time.Hour-time.Minute {
		t.Fatalf("bundle retained until %v, %v; want 5h", until, err)
	}

	if pgE2E {
		return // the rest restores the SQLite database's files
	}

	// The insider: the database back to size 100, the files that would
	// tell removed. The bucket still tells: serve refuses to start.
	restoreDB(t, backup, dir)
	for _, f := range []string{filepath.Join("published", "checkpoint"), "anchors"} {
		os.RemoveAll(filepath.Join(dir, "data", f))
	}
	code, out = serveExit(t, writeConfig(t, dir, conf))
	if code == 0 || !strings.Contains(out, "bucket's checkpoint-") {
		t.Fatalf("serve against a bucket ahead of the database = %d:\n%s", code, out)
	}

	// Without the bucket in its config, the forked log grows past the
	// size the witness cosigned, with other records: the witness refuses
	// it, and serve reports it.
	fork := gwConfig{public: true, extra: archiveConfig(t, nil, "", wit)}
	g = startGateway(t, dir, fork)
	for i := range 250 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"forked":%d}`, i))
	}
	g.waitTreeSize(t, 350)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(metrics(g), `linegate_witness_forked{witness="example.com/witness-1"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not report the fork:\n%s", grepLines(metrics(g), "linegate_witness_"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := metrics(g); !strings.Contains(m, "linegate_witness_quorum_met 0") {
		t.Errorf("quorum reported met on a forked log:\n%s", grepLines(m, "linegate_witness_"))
	}
	if !strings.Contains(g.Logs(), "refused this log's checkpoint") {
		t.Errorf("no log line of the fork:\n%s", g.Logs())
	}
	g.stop()
	// The cosigned file is still the honest one: the forked tree does not
	// extend it.
	code, out = runCLI(t, "verify", "-config", g.cfgPath, "-witness-quorum", "1", "-no-published")
	if code != 1 || !strings.Contains(out, "cosigned checkpoint") {
		t.Fatalf("verify of the forked log = %d:\n%s", code, out)
	}
	// A bundle of the forked log carries the honest cosigned checkpoint,
	// which its checkpoint does not extend.
	forked := filepath.Join(t.TempDir(), "bundle")
	if code, out := runCLI(t, "export", "-config", g.cfgPath, "-out", forked); code != 0 {
		t.Fatalf("export = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "verify-bundle", "-witness-quorum", "1", "-witness-key", wit.VKey, forked); code != 1 || !strings.Contains(out, "FAIL witnesses: the bundle's checkpoint") {
		t.Fatalf("verify-bundle of the forked log = %d:\n%s", code, out)
	}
	// Nor can the insider put the forked checkpoint in its place: no
	// witness cosigned it.
	if err := os.WriteFile(cosignedFile(filepath.Join(dir, "data", "published")), g.waitTreeSizeFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = runCLI(t, "verify", "-config", g.cfgPath, "-witness-quorum", "1", "-no-published")
	if code != 1 || !strings.Contains(out, "FAIL witnesses") {
		t.Fatalf("verify with the forked checkpoint as the cosigned one = %d:\n%s", code, out)
	}

	// Had it been a restore meant and owned, acknowledge-rollback names the
	// bucket's checkpoint too, on the record, and serve starts with the
	// bucket again; the witness still refuses the other tree.
	cfgPath := writeConfig(t, dir, conf)
	code, out = runCLI(t, "acknowledge-rollback", "-config", cfgPath, "-reason", "INC-1: restored from the nightly backup")
	if code != 0 || !strings.Contains(out, "bucket's checkpoint-") {
		t.Fatalf("acknowledge-rollback = %d:\n%s", code, out)
	}
	g = startGateway(t, dir, conf)
	if !strings.Contains(g.Logs(), "the rollback was acknowledged") {
		t.Errorf("serve does not say it relied on the acknowledgement:\n%s", g.Logs())
	}
	g.stop()
}

// waitTreeSizeFile returns the checkpoint file the stopped gateway
// published last.
func (g *gateway) waitTreeSizeFile(t *testing.T) []byte {
	b, err := os.ReadFile(filepath.Join(g.dir, "data", "published", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vkeyOf returns a new verifier key named name.
func vkeyOf(t *testing.T, name string) string {
	dir := t.TempDir()
	v, err := generateKey(filepath.Join(dir, "k"), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// grepLines returns the lines of s that start with one of the prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
