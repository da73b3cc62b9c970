// Package objstoretest runs a real S3-compatible server for tests:
// Versity Gateway (versitygw) on its POSIX backend, with versioning, on a
// loopback port and a temporary directory. The binary is named by
// LINEGATE_TEST_S3_BIN; without it the tests skip, unless
// LINEGATE_REQUIRE_S3=1 (CI), where they fail.
package objstoretest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/linegate/linegate/internal/objstore"
)

// Server is a running S3-compatible server.
type Server struct {
	Endpoint  string
	AccessKey string
	SecretKey string
}

// Start starts the server for t, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv("LINEGATE_TEST_S3_BIN")
	if bin == "" {
		if os.Getenv("LINEGATE_REQUIRE_S3") == "1" {
			t.Fatal("LINEGATE_REQUIRE_S3=1 but LINEGATE_TEST_S3_BIN names no S3 server binary (versitygw)")
		}
		t.Skip("no S3 server: set LINEGATE_TEST_S3_BIN to a versitygw binary")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LINEGATE_TEST_S3_BIN: %v", err)
	}
	dir := t.TempDir()
	data, versions := filepath.Join(dir, "data"), filepath.Join(dir, "versions")
	for _, d := range []string{data, versions} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	s := &Server{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), AccessKey: "linegatetest", SecretKey: "linegatetestsecret"}
	cmd := exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", "127.0.0.1:"+strconv.Itoa(port), "posix", "--versioning-dir", versions, data)
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			lines := strings.Split(string(b), "\n")
			t.Logf("versitygw log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not listen: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// Config returns a config for bucket on the server.
func (s *Server) Config(bucket string) objstore.Config {
	return objstore.Config{Endpoint: s.Endpoint, Region: "us-east-1", Bucket: bucket, PathStyle: true,
		AccessKey: s.AccessKey, SecretKey: s.SecretKey}
}

// Bucket creates a bucket with Object Lock enabled (and so versioning), and
// returns its Blobs.
func (s *Server) Bucket(t testing.TB, bucket string) *objstore.S3 {
	t.Helper()
	b, err := objstore.New(s.Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = b.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket), ObjectLockEnabledForBucket: aws.Bool(true)})
	if err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	return b
}

// PlainBucket creates a bucket without Object Lock.
func (s *Server) PlainBucket(t testing.TB, bucket string) *objstore.S3 {
	t.Helper()
	b, err := objstore.New(s.Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	return b
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// String names the server.
func (s *Server) String() string { return fmt.Sprintf("versitygw at %s", s.Endpoint) }
