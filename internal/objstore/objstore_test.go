package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/objstore/objstoretest"
)

func TestObjectLock(t *testing.T) {
	srv := objstoretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := srv.Bucket(t, "locked")
	if err := b.CheckBucket(ctx); err != nil {
		t.Fatalf("CheckBucket on a bucket with Object Lock: %v", err)
	}
	plain := srv.PlainBucket(t, "plain")
	if err := plain.CheckBucket(ctx); err == nil {
		t.Fatal("CheckBucket passed a bucket without Object Lock")
	}

	body := []byte("linegate checkpoint\n42\n")
	until := time.Now().Add(3 * 24 * time.Hour)
	if err := b.Put(ctx, "log/checkpoint-42", body, until); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := b.Get(ctx, "log/checkpoint-42")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Get = %q, %v; want %q", got, err, body)
	}
	ru, err := b.RetainUntil(ctx, "log/checkpoint-42")
	if err != nil {
		t.Fatalf("RetainUntil: %v", err)
	}
	if ru.Before(until.Truncate(time.Second)) || ru.After(until.Add(5*time.Second)) {
		t.Fatalf("retained until %s, asked %s", ru, until)
	}

	t.Run("put again, same bytes", func(t *testing.T) {
		if err := b.Put(ctx, "log/checkpoint-42", body, until); err != nil {
			t.Fatalf("a retried Put of the same bytes: %v", err)
		}
		if vs, err := b.Versions(ctx, "log/checkpoint-42"); err != nil || len(vs) != 1 {
			t.Fatalf("versions after a retried Put: %v, %v; want one", vs, err)
		}
	})
	t.Run("put other bytes", func(t *testing.T) {
		err := b.Put(ctx, "log/checkpoint-42", []byte("forged"), until)
		if !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("Put of other bytes over a locked key: %v; want ErrExists", err)
		}
		if got, _ := b.Get(ctx, "log/checkpoint-42"); !bytes.Equal(got, body) {
			t.Fatalf("the object changed: %q", got)
		}
	})
	t.Run("delete refused", func(t *testing.T) {
		err := b.Delete(ctx, "log/checkpoint-42")
		if !errors.Is(err, objstore.ErrLocked) {
			t.Fatalf("Delete of a locked object: %v; want ErrLocked", err)
		}
		if got, _ := b.Get(ctx, "log/checkpoint-42"); !bytes.Equal(got, body) {
			t.Fatalf("the object changed after a refused delete: %q", got)
		}
	})

	// What an insider with the bucket's credentials could try, by raw
	// requests.
	vs, err := b.Versions(ctx, "log/checkpoint-42")
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions: %v, %v", vs, err)
	}
	version := vs[0]
	key := aws.String(b.Key("log/checkpoint-42"))
	bucket := aws.String(b.Bucket())
	c := b.Client()
	t.Run("raw delete of the locked version, bypassing governance", func(t *testing.T) {
		_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: key, VersionId: aws.String(version),
			BypassGovernanceRetention: aws.Bool(true)})
		if err == nil {
			t.Fatal("the server deleted a version locked in compliance mode")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("raw shortening of the retention", func(t *testing.T) {
		_, err := c.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{Bucket: bucket, Key: key, VersionId: aws.String(version),
			Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(time.Now().Add(time.Minute))}})
		if err == nil {
			t.Fatal("the server shortened a compliance retention")
		}
		if ru2, _ := b.RetainUntil(ctx, "log/checkpoint-42"); !ru2.Equal(ru) {
			t.Fatalf("retain-until changed from %s to %s", ru, ru2)
		}
	})
	t.Run("raw change to governance mode", func(t *testing.T) {
		_, err := c.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{Bucket: bucket, Key: key, VersionId: aws.String(version),
			BypassGovernanceRetention: aws.Bool(true),
			Retention:                 &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeGovernance, RetainUntilDate: aws.Time(ru)}})
		if err == nil {
			t.Fatal("the server moved a compliance lock to governance")
		}
	})
	t.Run("raw conditional overwrite", func(t *testing.T) {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: key, Body: bytes.NewReader([]byte("forged")),
			IfNoneMatch: aws.String("*")})
		if err == nil {
			t.Fatal("the server took a conditional overwrite of an existing object")
		}
	})
	t.Run("raw unconditional overwrite leaves the locked version", func(t *testing.T) {
		// On a versioned bucket (Object Lock requires versioning), a PUT to
		// the same key adds a version: the locked one stays, byte for
		// byte, and cannot be removed.
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: key, Body: bytes.NewReader([]byte("forged"))}); err != nil {
			t.Logf("the server refused the overwrite: %v", err)
		}
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: key, VersionId: aws.String(version)})
		if err != nil {
			t.Fatalf("the locked version: %v", err)
		}
		got, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(got, body) {
			t.Fatalf("the locked version now holds %q", got)
		}
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: key, VersionId: aws.String(version)}); err == nil {
			t.Fatal("the locked version was deleted after an overwrite")
		}
		// Put notices that the key's current bytes are not the ones
		// published.
		if err := b.Put(ctx, "log/checkpoint-42", body, until); !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("Put over a key whose current version was replaced: %v; want ErrExists", err)
		}
	})

	t.Run("unlocked object deletes", func(t *testing.T) {
		// The same server does delete what is not locked: the refusals
		// above are the lock's.
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String("scratch"), Body: bytes.NewReader([]byte("x"))}); err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "scratch"); err != nil {
			t.Fatalf("Delete of an unlocked object: %v", err)
		}
		if _, err := b.Get(ctx, "scratch"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Get after Delete: %v; want ErrNotFound", err)
		}
	})

	t.Run("no lock on a plain bucket", func(t *testing.T) {
		err := plain.Put(ctx, "x", []byte("x"), until)
		if err == nil {
			t.Fatal("Put on a bucket without Object Lock succeeded")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("no retain-until: no lock of its own", func(t *testing.T) {
		if err := b.Put(ctx, "media/x", []byte("content"), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, "media/x"); err != nil || string(got) != "content" {
			t.Fatalf("Get = %q, %v", got, err)
		}
		if _, err := b.RetainUntil(ctx, "media/x"); !errors.Is(err, objstore.ErrNotLocked) {
			t.Fatalf("RetainUntil of an object put without a date: %v; want ErrNotLocked", err)
		}
	})
	t.Run("a retain-until in the past", func(t *testing.T) {
		if err := b.Put(ctx, "past", []byte("x"), time.Now().Add(-time.Hour)); err == nil {
			t.Fatal("Put with a past retain-until succeeded")
		}
	})
}
