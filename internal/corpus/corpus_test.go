package corpus

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLocate(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "main")
	if err := os.MkdirAll(filepath.Join(parent, "shared", "line", "fixtures", "sdk-java"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := locate(root, SDKJava)
	if want := filepath.Join(parent, "shared", "line", "fixtures", "sdk-java"); err != nil || got != want {
		t.Errorf("locate(%s) = %q, %v; want %q", SDKJava, got, err, want)
	}
	if _, err := locate(root, "line/spec/webhook.yml"); !errors.Is(err, errAbsent) {
		t.Errorf("a missing part: %v", err)
	}
	if _, err := locate(filepath.Join(t.TempDir(), "main"), SDKJava); !errors.Is(err, errAbsent) {
		t.Errorf("no shared corpus: %v", err)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "corpus", "corpus.go")); err != nil {
		t.Errorf("module root %s: %v", root, err)
	}
}
