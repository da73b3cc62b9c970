package archive_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/linegate/linegate/internal/archive"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore/objstoretest"
	"golang.org/x/mod/sumdb/note"
)

// TestTrustedCosigned: the cosigned checkpoints in the bucket are held to
// the same rule as the checkpoints: the oldest locked version of each
// key counts, of the size its key names, and the newest of either kind
// is what the database's tree must extend. A version put over the
// cosigned checkpoint, a delete marker and a locked object of another
// size under a newer key are ignored and reported.
func TestTrustedCosigned(t *testing.T) {
	srv := objstoretest.Start(t)
	bucket := srv.Bucket(t, "cosigned")
	skey, vkey, _ := note.GenerateKey(rand.Reader, origin)
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	ctx := context.Background()
	until := time.Now().Add(2 * time.Hour)

	l := newLog(t, s, "honest", 300)
	head := l.head(t)
	small := newLog(t, s, "honest", 100)
	smallHead := small.head(t)
	// The checkpoint stream is behind (size 100); the cosigned one at 300.
	if err := bucket.Put(ctx, "checkpoint-100", smallHead.Checkpoint, until); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Put(ctx, "checkpoint-300.cosigned", head.Checkpoint, until); err != nil {
		t.Fatal(err)
	}
	c := bucket.Client()
	put := func(key string, body []byte) {
		t.Helper()
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket.Bucket()), Key: aws.String(bucket.Key(key)),
			Body: bytes.NewReader(body), ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: aws.Time(until)}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("checkpoint-300.cosigned", smallHead.Checkpoint)
	put("checkpoint-900.cosigned", smallHead.Checkpoint)
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket.Bucket()), Key: aws.String(bucket.Key("checkpoint-300.cosigned"))}); err != nil {
		t.Fatal(err)
	}

	got, found, ignored, err := archive.Newest(ctx, bucket, v, origin)
	if err != nil || !found || got.Key != "checkpoint-300.cosigned" || got.Size != 300 || !bytes.Equal(got.Signed, head.Checkpoint) {
		t.Fatalf("Newest = %s (size %d), %v, %v; want the original checkpoint-300.cosigned", got.Key, got.Size, found, err)
	}
	reasons := map[string]string{}
	for _, x := range ignored {
		reasons[x.Key+" "+x.Reason] = x.Detail
	}
	for _, want := range []string{"checkpoint-300.cosigned newer_version", "checkpoint-300.cosigned delete_marker", "checkpoint-900.cosigned mismatch"} {
		if _, ok := reasons[want]; !ok {
			t.Errorf("not reported: %s (reported: %v)", want, reasons)
		}
	}

	// The database at 100 extends the checkpoint stream but not the
	// cosigned checkpoint: refused, naming it.
	pub := archive.New(archive.Options{Bucket: bucket, Store: small, Head: func() ledger.TreeHead { return smallHead },
		Verifier: v, Origin: origin, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_, err = pub.CheckBucket(ctx, smallHead, nil)
	var be *archive.BucketError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "checkpoint-300.cosigned") {
		t.Fatalf("CheckBucket of a tree behind the cosigned checkpoint: %v", err)
	}
	full := archive.New(archive.Options{Bucket: bucket, Store: l, Head: func() ledger.TreeHead { return head },
		Verifier: v, Origin: origin, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if n, err := full.CheckBucket(ctx, head, nil); err != nil || n != 300 {
		t.Fatalf("CheckBucket of the tree of size 300 = %d, %v", n, err)
	}
}
