package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMediaConfigMistakes: the media section and the unsend policy are
// checked like the rest of the config, each mistake named with its line
// and key.
func TestMediaConfigMistakes(t *testing.T) {
	const good = "log:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unsend", good + "    unsend: erase\n", `bad.yaml:6: channels[0].unsend: "erase": want keep (the default) or delete`},
		{"fetch external without hosts", "media:\n  fetch_external: true\n" + good, "bad.yaml:2: media.fetch_external: on, but media.external_hosts is empty"},
		{"bad host", "media:\n  sent_image_hosts: [\"http://x\"]\n" + good, `media.sent_image_hosts: "http://x": want host or host:port`},
		{"negative", "media:\n  max_bytes: -1\n" + good, "media: store_max_bytes, max_bytes"},
		{"misspelt", "media:\n  enabeld: true\n" + good, "media.enabeld: unknown key in media; did you mean enabled?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfg)
			if code != 1 || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("config check = %d, want 1 saying %q:\n%s%s", code, tc.want, stdout, stderr)
			}
		})
	}
	ok := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(ok, []byte("media:\n  enabled: true\n  sent_image_hosts: [images.example.com, \"cdn.example.com:8443\"]\nlog:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n    unsend: delete\n"), 0o600)
	if code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", ok); code != 0 {
		t.Errorf("a good media config: config check = %d:\n%s%s", code, stdout, stderr)
	}
}

// TestMediaExampleConfig: examples/media.yaml is a good config.
func TestMediaExampleConfig(t *testing.T) {
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", "media.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", p); code != 0 {
		t.Errorf("config check examples/media.yaml = %d:\n%s%s", code, stdout, stderr)
	}
}
