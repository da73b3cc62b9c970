// Package corpus locates the webhook bodies and other reference data that
// tests read. There are two sources:
//
//   - The project's own webhook bodies, in testdata/webhooks beside this
//     file: realistic requests written from LINE's webhook specification,
//     one per event type and per message type, and a few batches. They are
//     part of the module, so every test can use them ([Webhooks]).
//   - The shared corpus beside the repository, at ../shared relative to the
//     module root: LINE's SDK fixtures, its specification and its
//     documented test vectors. It is someone else's and is not copied into
//     the module. Tests that read it ([Shared]) skip when it is absent, and
//     fail instead when LINEGATE_REQUIRE_CORPUS=1, as in CI.
//
// Only tests import this package.
package corpus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// RequireEnv is the environment variable that turns a missing shared
// corpus from a skip into a failure.
const RequireEnv = "LINEGATE_REQUIRE_CORPUS"

// SDKJava is the directory of LINE's Java SDK webhook fixtures in the
// shared corpus.
const SDKJava = "line/fixtures/sdk-java"

// Webhooks returns the absolute path of the directory of the project's own
// webhook bodies (*.json, one request each).
func Webhooks(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "internal", "corpus", "testdata", "webhooks")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("corpus: the module's webhook bodies are missing: %v", err)
	}
	return dir
}

// Shared returns the absolute path of rel (slash-separated, such as
// [SDKJava]) in the shared corpus beside the repository. When it is
// absent, the test is skipped, or fails if LINEGATE_REQUIRE_CORPUS=1.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path, err := locate(root, rel)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v, and %s=1", err, RequireEnv)
		}
		t.Skipf("%v (set %s=1 to make this a failure)", err, RequireEnv)
	}
	return path
}

// errAbsent says that the shared corpus, or the part asked for, is not
// there.
var errAbsent = errors.New("not beside the repository")

// locate returns the path of rel in the shared corpus of the module at
// root, or an error wrapping errAbsent.
func locate(root, rel string) (string, error) {
	path := filepath.Join(filepath.Dir(root), "shared", filepath.FromSlash(rel))
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("corpus: ../shared/%s (%s) is %w", rel, path, errAbsent)
	}
	return path, nil
}

// moduleRoot returns the directory of the nearest go.mod above the working
// directory: go test runs a package's tests in its source directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("corpus: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("corpus: no go.mod above the working directory")
		}
		dir = parent
	}
}
