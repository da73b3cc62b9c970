package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/objstore/objstoretest"
)

// waitBucketCheckpoint waits until the checkpoint the gateway serves is
// in the bucket, and returns its size.
func waitBucketCheckpoint(t *testing.T, g *gateway, bucket *objstore.S3) uint64 {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, cp := g.get(t, g.webhook+"/log/checkpoint")
		c, err := ledger.ParseCheckpoint(string(cp))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bucket.Get(context.Background(), fmt.Sprintf("checkpoint-%d", c.Size)); err == nil && bytes.Equal(got, cp) {
			return c.Size
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint-%d was not published", c.Size)
		}
	}
}

// TestArchiveStartTrustsLockedCheckpointsOnly: after a restore from an
// older backup, someone who can put objects in the bucket (as linegate
// itself can) tries to hide the bucket's newest checkpoint from serve's
// start-up check: an old checkpoint under a newer key, a new version of
// the newest key holding the old checkpoint, a delete marker over it, a
// garbage object under a key still newer. serve trusts only the oldest
// locked version of each key, of the size its key names: it still
// refuses to start, and names and counts each object it ignored.
func TestArchiveStartTrustsLockedCheckpointsOnly(t *testing.T) {
	if pgE2E {
		t.Skip("restores the SQLite database's files")
	}
	srv := objstoretest.Start(t)
	bucket := srv.Bucket(t, "ledger")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := generateKey(filepath.Join(dir, "data", "log.key"), testOrigin); err != nil {
		t.Fatal(err)
	}
	conf := gwConfig{public: true, extra: archiveConfig(t, srv, "ledger", nil)}
	g := startGateway(t, dir, conf)
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	waitBucketCheckpoint(t, g, bucket)
	g.stop()
	backup := t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup)
	old, err := os.ReadFile(filepath.Join(backup, "published", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}

	g = startGateway(t, dir, conf)
	for i := 20; i < 60; i++ {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 60)
	size := waitBucketCheckpoint(t, g, bucket)
	g.stop()
	newest := fmt.Sprintf("checkpoint-%d", size)

	restoreDB(t, backup, dir)
	for _, f := range []string{filepath.Join("published", "checkpoint"), "anchors"} {
		os.RemoveAll(filepath.Join(dir, "data", f))
	}
	cfgPath := writeConfig(t, dir, conf)
	ctx := context.Background()
	c := bucket.Client()
	put := func(key string, body []byte, lock bool) {
		t.Helper()
		in := &s3.PutObjectInput{Bucket: aws.String(bucket.Bucket()), Key: aws.String(bucket.Key(key)), Body: bytes.NewReader(body)}
		if lock {
			in.ObjectLockMode = types.ObjectLockModeCompliance
			in.ObjectLockRetainUntilDate = aws.Time(time.Now().Add(2 * time.Hour))
		}
		if _, err := c.PutObject(ctx, in); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	refuses := func(ignored string) {
		t.Helper()
		code, out := serveExit(t, cfgPath)
		if code == 0 || !strings.Contains(out, "bucket's "+newest+":") {
			t.Fatalf("serve = %d, want a refusal naming the bucket's %s:\n%s", code, newest, out)
		}
		if !strings.Contains(out, `"reason":"`+ignored+`"`) {
			t.Fatalf("serve does not report the ignored object (%s):\n%s", ignored, out)
		}
	}

	// (a) The old checkpoint, validly signed and locked, under a key of a
	// size it does not have.
	put("checkpoint-999999", old, true)
	refuses(archiveMismatch)
	// (b) A new version of the newest key holding the old checkpoint: the
	// locked original is what counts.
	put(newest, old, true)
	refuses(archiveNewer)
	// (c) A delete marker over the newest key.
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket.Bucket()), Key: aws.String(bucket.Key(newest))}); err != nil {
		t.Fatalf("delete marker: %v", err)
	}
	if _, err := bucket.Get(ctx, newest); err == nil {
		t.Fatal("the delete marker did not hide the key")
	}
	refuses(archiveDeleteMarker)
	// Garbage, unlocked, under a still newer key: ignored, not a reason to
	// refuse of its own.
	put("checkpoint-1000000", []byte("not a checkpoint"), false)
	refuses(archiveUnlocked)

	// acknowledge-rollback names the trusted checkpoint, and serve then
	// starts, still reporting what it ignored, in its metrics too.
	code, out := runCLI(t, "acknowledge-rollback", "-config", cfgPath, "-reason", "INC-2: restored from the nightly backup")
	if code != 0 || !strings.Contains(out, "bucket's "+newest) {
		t.Fatalf("acknowledge-rollback = %d:\n%s", code, out)
	}
	g = startGateway(t, dir, conf)
	defer g.stop()
	if !strings.Contains(g.Logs(), "the rollback was acknowledged") {
		t.Errorf("serve does not say it relied on the acknowledgement:\n%s", g.Logs())
	}
	_, m := g.get(t, g.admin+"/metrics")
	for _, want := range []string{`linegate_archive_untrusted_objects{reason="delete_marker"} 1`, `linegate_archive_untrusted_objects{reason="newer_version"} 1`,
		`linegate_archive_untrusted_objects{reason="mismatch"} 1`, `linegate_archive_untrusted_objects{reason="unlocked"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(m), "linegate_archive_"))
		}
	}
}

const (
	archiveMismatch     = "mismatch"
	archiveNewer        = "newer_version"
	archiveDeleteMarker = "delete_marker"
	archiveUnlocked     = "unlocked"
)
