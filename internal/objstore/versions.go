package objstore

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Version is one version of an object, or a delete marker, as the bucket
// lists it.
type Version struct {
	Key          string // without the store's prefix
	ID           string
	Latest       bool
	DeleteMarker bool
	Modified     time.Time
	Size         int64
}

// ListVersions returns every version and delete marker of the keys under
// prefix: grouped by key in key order, each key's newest first (the
// order S3 lists them in).
func (s *S3) ListVersions(ctx context.Context, prefix string) ([]Version, error) {
	var out []Version
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(prefix))}
	for {
		page, err := s.c.ListObjectVersions(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("objstore: list versions under %s: %w", prefix, err)
		}
		for _, v := range page.Versions {
			out = append(out, Version{Key: strings.TrimPrefix(aws.ToString(v.Key), s.prefix), ID: aws.ToString(v.VersionId),
				Latest: aws.ToBool(v.IsLatest), Modified: aws.ToTime(v.LastModified), Size: aws.ToInt64(v.Size)})
		}
		for _, m := range page.DeleteMarkers {
			out = append(out, Version{Key: strings.TrimPrefix(aws.ToString(m.Key), s.prefix), ID: aws.ToString(m.VersionId),
				Latest: aws.ToBool(m.IsLatest), DeleteMarker: true, Modified: aws.ToTime(m.LastModified)})
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		in.KeyMarker, in.VersionIdMarker = page.NextKeyMarker, page.NextVersionIdMarker
	}
	return out, nil
}

// GetVersion returns one version of key.
func (s *S3) GetVersion(ctx context.Context, key, id string) ([]byte, error) {
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)), VersionId: aws.String(id)})
	if err != nil {
		if isCode(err, "NoSuchKey", "NotFound", "NoSuchVersion") {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("objstore: get %s version %s: %w", key, id, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("objstore: get %s version %s: %w", key, id, err)
	}
	return b, nil
}

// VersionRetainUntil returns the date until which one version of key is
// locked in compliance mode: ErrNotLocked for a version under no lock,
// under a governance-mode lock (which a privileged caller can lift), or
// under a lock that has ended.
func (s *S3) VersionRetainUntil(ctx context.Context, key, id string) (time.Time, error) {
	out, err := s.c.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)), VersionId: aws.String(id)})
	if err != nil {
		if isCode(err, "NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError") {
			return time.Time{}, fmt.Errorf("%w (no retention)", ErrNotLocked)
		}
		if isCode(err, "NotFound", "NoSuchKey", "NoSuchVersion") {
			return time.Time{}, ErrNotFound
		}
		return time.Time{}, fmt.Errorf("objstore: retention of %s version %s: %w", key, id, err)
	}
	r := out.Retention
	if r == nil || r.Mode != types.ObjectLockRetentionModeCompliance || r.RetainUntilDate == nil {
		mode := types.ObjectLockRetentionMode("")
		if r != nil {
			mode = r.Mode
		}
		return time.Time{}, fmt.Errorf("%w (mode %q)", ErrNotLocked, mode)
	}
	if !r.RetainUntilDate.After(time.Now()) {
		return time.Time{}, fmt.Errorf("%w (retention ended %s)", ErrNotLocked, r.RetainUntilDate.UTC().Format(time.RFC3339))
	}
	return *r.RetainUntilDate, nil
}
