package main

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// TestArchiveConfig: the archive and witnesses sections are checked with
// the key named, and get their defaults.
func TestArchiveConfig(t *testing.T) {
	const base = "log:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n"
	_, wkey, _ := note.GenerateKey(rand.Reader, "example.com/w1")
	_, wkey2, _ := note.GenerateKey(rand.Reader, "example.com/w2")
	for _, tc := range []struct{ name, yaml, want string }{
		{"no bucket", "archive: {endpoint: http://127.0.0.1:9000}\n", "archive.bucket: required"},
		{"bad endpoint", "archive: {bucket: b, endpoint: s3.example.com}\n", "archive.endpoint: \"s3.example.com\": want a URL"},
		{"short retention", "archive: {bucket: b, retention: {tiles: 10m}}\n", "archive.retention.tiles: 10m0s: want a lock period of an hour or more"},
		{"start check", "archive: {bucket: b, start_check: ignore}\n", "archive.start_check: \"ignore\": want refuse or warn"},
		{"no witnesses", "witnesses: {quorum: 1}\n", "witnesses.list: required"},
		{"bad key", "witnesses: {list: [{url: https://w.example.com, key: nonsense}]}\n", "witnesses.list[0].key:"},
		{"bad url", "witnesses: {list: [{url: w.example.com, key: " + wkey + "}]}\n", "witnesses.list[0].url:"},
		{"quorum", "witnesses: {quorum: 2, list: [{url: https://w.example.com, key: " + wkey + "}]}\n", "witnesses.quorum: 2: want between 1 and the number of witnesses (1)"},
		{"twice", "witnesses: {list: [{url: https://a.example.com, key: " + wkey + "}, {url: https://b.example.com, key: " + wkey + "}]}\n", "witnesses.list[1].key: witness \"example.com/w1\" is listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("bad.yaml", "", []byte(base+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant %q", err, tc.want)
			}
		})
	}
	c, err := parseConfig("good.yaml", "", []byte(base+"archive: {bucket: b}\nwitnesses: {list: [{url: https://a.example.com, key: "+wkey+"}, {url: https://b.example.com, key: "+wkey2+"}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Archive.Every != time.Minute || c.Archive.Retention.Bundles != 7*8760*time.Hour || c.Archive.StartCheck != "refuse" {
		t.Errorf("archive defaults: %+v", c.Archive)
	}
	if c.Witnesses.Quorum != 2 || c.Witnesses.Every != time.Minute {
		t.Errorf("witnesses defaults: %+v", c.Witnesses)
	}
}
