// Package objstore keeps objects in S3-compatible storage under Object
// Lock in compliance mode: once written, an object can be neither
// overwritten nor deleted before its retain-until date, by anyone,
// the account's root included.
//
// The client is the AWS SDK for Go v2 (service/s3): it speaks Object Lock,
// conditional writes (If-None-Match) and SHA-256 checksums, works with
// path-style endpoints of other S3 implementations, and is kept by the
// makers of the protocol.
package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Blobs is object storage with retention locks.
//
// Put is durable when it returns nil: the object is stored, read back with
// its hash checked, and locked until retainUntil. A Put of a key that
// holds the same bytes already succeeds (a retry); of a key that holds
// other bytes, fails with ErrExists. Get returns ErrNotFound for a missing
// key. Delete fails (ErrLocked) on an object whose retention has not
// ended. Implementations are safe for concurrent use.
type Blobs interface {
	Put(ctx context.Context, key string, body []byte, retainUntil time.Time) error
	Get(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error // fails on a locked object
}

var (
	// ErrNotFound: no object has the key.
	ErrNotFound = errors.New("objstore: no such object")
	// ErrExists: the key holds other bytes than those put.
	ErrExists = errors.New("objstore: the key holds another object")
	// ErrLocked: the object is under retention and cannot be removed.
	ErrLocked = errors.New("objstore: the object is locked")
	// ErrNotLocked: the server stored the object without the lock asked
	// for (a bucket without Object Lock, or a server that ignores it).
	ErrNotLocked = errors.New("objstore: the server did not lock the object")
	// ErrMismatch: the object read back differs from the bytes put.
	ErrMismatch = errors.New("objstore: the object read back differs from the one written")
)

// Config locates a bucket and its credentials.
type Config struct {
	Endpoint  string // e.g. https://s3.ap-northeast-1.amazonaws.com; empty: AWS's default for Region
	Region    string
	Bucket    string
	Prefix    string // prepended to every key, e.g. "linegate/"
	PathStyle bool   // bucket in the path, as most non-AWS servers want
	AccessKey string
	SecretKey string
	// HTTP is the client to use; nil: a client with a 60 s timeout.
	HTTP *http.Client
}

// S3 is Blobs on an S3-compatible bucket with Object Lock enabled.
type S3 struct {
	c      *s3.Client
	bucket string
	prefix string
}

var _ Blobs = (*S3)(nil)

// New returns the bucket's Blobs. It makes no request.
func New(cfg Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("objstore: no bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	awsCfg := aws.Config{
		Region:      cfg.Region,
		HTTPClient:  hc,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		// The SDK retries throttling and 5xx answers itself, a few times.
		RetryMaxAttempts: 3,
	}
	c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// A checksum on every request that can carry one; Put sends its
		// SHA-256 explicitly.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &S3{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

func (s *S3) key(k string) string { return s.prefix + k }

// CheckBucket checks that the bucket exists and has Object Lock enabled,
// as a start-up check: without it, nothing put there would be locked.
func (s *S3) CheckBucket(ctx context.Context) error {
	out, err := s.c.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		return fmt.Errorf("objstore: bucket %q: object lock configuration: %w", s.bucket, err)
	}
	if out.ObjectLockConfiguration == nil || out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return fmt.Errorf("objstore: bucket %q: %w: Object Lock is not enabled on the bucket", s.bucket, ErrNotLocked)
	}
	return nil
}

// Put stores body under key, locked in compliance mode until retainUntil,
// reads it back and checks its hash and its lock. A zero retainUntil (no
// end to the retention) puts the object without a lock of its own: the
// bucket's default retention, if it has one, applies.
func (s *S3) Put(ctx context.Context, key string, body []byte, retainUntil time.Time) error {
	if !retainUntil.IsZero() && !retainUntil.After(time.Now()) {
		return fmt.Errorf("objstore: put %s: the retain-until date must be in the future", key)
	}
	sum := sha256.Sum256(body)
	in := &s3.PutObjectInput{
		Bucket:         aws.String(s.bucket),
		Key:            aws.String(s.key(key)),
		Body:           bytes.NewReader(body),
		ContentLength:  aws.Int64(int64(len(body))),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		IfNoneMatch:    aws.String("*"), // never a new version over an object
	}
	if !retainUntil.IsZero() {
		in.ObjectLockMode = types.ObjectLockModeCompliance
		in.ObjectLockRetainUntilDate = aws.Time(retainUntil.UTC().Truncate(time.Second).Add(time.Second))
	}
	_, err := s.c.PutObject(ctx, in)
	if err != nil && !isCode(err, "PreconditionFailed", "ConditionalRequestConflict") {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	exists := err != nil
	got, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("objstore: read back %s: %w", key, err)
	}
	if sha256.Sum256(got) != sum {
		if exists {
			return fmt.Errorf("objstore: put %s: %w", key, ErrExists)
		}
		return fmt.Errorf("objstore: put %s: %w", key, ErrMismatch)
	}
	if retainUntil.IsZero() {
		return nil
	}
	until, err := s.RetainUntil(ctx, key)
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if until.Before(retainUntil.Truncate(time.Second)) {
		return fmt.Errorf("objstore: put %s: %w: retained until %s, asked %s", key, ErrNotLocked,
			until.UTC().Format(time.RFC3339), retainUntil.UTC().Format(time.RFC3339))
	}
	return nil
}

// RetainUntil returns the date until which the current version of key is
// locked in compliance mode. A version not in compliance mode is
// ErrNotLocked.
func (s *S3) RetainUntil(ctx context.Context, key string) (time.Time, error) {
	out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if err != nil {
		if isCode(err, "NotFound", "NoSuchKey") {
			return time.Time{}, ErrNotFound
		}
		return time.Time{}, fmt.Errorf("objstore: head %s: %w", key, err)
	}
	if out.ObjectLockMode != types.ObjectLockModeCompliance || out.ObjectLockRetainUntilDate == nil {
		return time.Time{}, fmt.Errorf("%w (mode %q)", ErrNotLocked, out.ObjectLockMode)
	}
	return *out.ObjectLockRetainUntilDate, nil
}

// Get returns the current version of key.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if err != nil {
		if isCode(err, "NoSuchKey", "NotFound") {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("objstore: get %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("objstore: get %s: %w", key, err)
	}
	return b, nil
}

// Delete removes every version of key. A version under retention is
// refused by the server: ErrLocked.
func (s *S3) Delete(ctx context.Context, key string) error {
	out, err := s.c.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(key))})
	if err != nil {
		return fmt.Errorf("objstore: delete %s: list versions: %w", key, err)
	}
	n := 0
	for _, v := range out.Versions {
		if aws.ToString(v.Key) != s.key(key) {
			continue
		}
		n++
		if err := s.DeleteVersion(ctx, key, aws.ToString(v.VersionId)); err != nil {
			return err
		}
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteVersion removes one version of key: ErrLocked while it is under
// retention.
func (s *S3) DeleteVersion(ctx context.Context, key, version string) error {
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))}
	if version != "" {
		in.VersionId = aws.String(version)
	}
	if _, err := s.c.DeleteObject(ctx, in); err != nil {
		if isCode(err, "AccessDenied", "InvalidRequest", "ObjectLocked") {
			return fmt.Errorf("objstore: delete %s: %w (%v)", key, ErrLocked, code(err))
		}
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	return nil
}

// Versions returns the version ids of key, newest first.
func (s *S3) Versions(ctx context.Context, key string) ([]string, error) {
	out, err := s.c.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(key))})
	if err != nil {
		return nil, fmt.Errorf("objstore: list versions of %s: %w", key, err)
	}
	var ids []string
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == s.key(key) {
			ids = append(ids, aws.ToString(v.VersionId))
		}
	}
	return ids, nil
}

// List returns the keys under prefix (without the store's own prefix), in
// key order.
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.key(prefix))})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("objstore: list %s: %w", prefix, err)
		}
		for _, o := range out.Contents {
			keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), s.prefix))
		}
	}
	return keys, nil
}

// Client returns the underlying S3 client, for tests that act as an
// attacker would (an overwrite by a raw request).
func (s *S3) Client() *s3.Client { return s.c }

// Bucket returns the bucket's name.
func (s *S3) Bucket() string { return s.bucket }

// Key returns the full object key of key.
func (s *S3) Key(key string) string { return s.key(key) }

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func isCode(err error, codes ...string) bool {
	c := code(err)
	for _, x := range codes {
		if c == x {
			return true
		}
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		for _, x := range codes {
			if x == "NotFound" || x == "NoSuchKey" {
				return true
			}
		}
	}
	return false
}
