package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"mime"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/evidence"
)

// TestVerifyBundleRebuildsExports: verify-bundle proves an export from
// the bundle's records, not from exports.json. An export file changed
// and rehashed in exports.json, an EML removed with its entry, the whole
// export removed, a forged file added under exports/, and a content file
// beside a record that is not media each fail verify-bundle; the export
// as written passes, and exporting twice gives the same bytes. A
// record.json that no longer describes its record fails too.
func TestVerifyBundleRebuildsExports(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))
	w.replyTo(t, w.send(t, g, "U1", "message", "track"))
	w.send(t, g, "U1", "message", "สวัสดี =?utf-8?b?W3Vuc2VudF0=?= fake")
	waitIdle(t, g)
	time.Sleep(300 * time.Millisecond) // a checkpoint after everything
	g.stop()

	bundles := map[string]string{}
	for _, f := range []string{"jsonl", "eml", "rsmf"} {
		out := filepath.Join(t.TempDir(), f)
		if code, o := runCLI(t, "export", "-config", g.cfgPath, "-format", f, "-out", out); code != 0 {
			t.Fatalf("export -format %s = %d:\n%s", f, code, o)
		}
		if code, o := runCLI(t, "verify-bundle", out); code != 0 || !strings.Contains(o, "OK exports: "+f) {
			t.Fatalf("verify-bundle of the %s export = %d:\n%s", f, code, o)
		}
		bundles[f] = out
	}

	// The user's text that looks like an encoded word is read back as it
	// is, by net/mail's WordDecoder and by Python's email package.
	emls, _ := filepath.Glob(filepath.Join(bundles["eml"], "exports", "eml", "*-message.eml"))
	const forged = "LINE text สวัสดี =?utf-8?b?W3Vuc2VudF0=?= fake"
	var subjects []string
	for _, p := range emls {
		msg, _ := readMIME(t, p)
		sub, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, sub)
	}
	if !slices.Contains(subjects, forged) {
		t.Errorf("EML subjects read by net/mail: %q, want %q among them", subjects, forged)
	}
	if py, err := exec.LookPath("python3"); err == nil {
		out, err := exec.Command(py, append([]string{filepath.Join("..", "..", "internal", "review", "testdata", "read_exports.py")}, emls...)...).Output()
		if err != nil {
			t.Fatalf("read_exports.py: %v", err)
		}
		if !strings.Contains(string(out), `"subject": "`+forged+`"`) {
			t.Errorf("Python does not read the subject %q:\n%s", forged, out)
		}
	} else if os.Getenv("LINEGATE_REQUIRE_PYTHON") == "1" {
		t.Fatal("python3 is not installed, and LINEGATE_REQUIRE_PYTHON=1")
	}

	// fails copies the bundle of format f, spoils the copy, and wants
	// verify-bundle to fail saying want.
	fails := func(name, f, want string, spoil func(b string)) {
		t.Helper()
		b := filepath.Join(t.TempDir(), "b")
		copyDir(t, bundles[f], b)
		spoil(b)
		code, o := runCLI(t, "verify-bundle", b)
		if code == 0 || !strings.Contains(o, "FAIL") || !strings.Contains(o, want) {
			t.Errorf("%s: verify-bundle = %d, want FAIL with %q:\n%s", name, code, want, o)
		}
	}
	readEx := func(b string) evidence.Exports {
		var ex evidence.Exports
		j, err := os.ReadFile(filepath.Join(b, evidence.ExportsFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j, &ex); err != nil {
			t.Fatal(err)
		}
		return ex
	}
	writeEx := func(b string, ex evidence.Exports) {
		j, _ := json.MarshalIndent(ex, "", "  ")
		if err := os.WriteFile(filepath.Join(b, evidence.ExportsFile), append(j, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	fails("an edited JSON lines file, rehashed", "jsonl", "exports/linegate.jsonl", func(b string) {
		p := filepath.Join(b, "exports", "linegate.jsonl")
		data, _ := os.ReadFile(p)
		data = bytes.ReplaceAll(data, []byte("track"), []byte("TRACK"))
		os.WriteFile(p, data, 0o600)
		ex := readEx(b)
		sum := sha256.Sum256(data)
		ex.Files[0].SHA256, ex.Files[0].Size = hex.EncodeToString(sum[:]), int64(len(data))
		writeEx(b, ex)
	})
	fails("an EML removed with its entry", "eml", "missing", func(b string) {
		ex := readEx(b)
		os.Remove(filepath.Join(b, filepath.FromSlash(ex.Files[0].Path)))
		ex.Files = ex.Files[1:]
		writeEx(b, ex)
	})
	for _, f := range []string{"jsonl", "eml", "rsmf"} {
		fails("the "+f+" export removed", f, "has no exports.json", func(b string) {
			os.RemoveAll(filepath.Join(b, "exports"))
			os.Remove(filepath.Join(b, evidence.ExportsFile))
		})
	}
	fails("a forged EML added", "eml", "exports/eml/forged.eml", func(b string) {
		os.WriteFile(filepath.Join(b, "exports", "eml", "forged.eml"), []byte("Subject: forged\r\n\r\nforged\r\n"), 0o600)
	})
	fails("a content beside a webhook record", "jsonl", "not media", func(b string) {
		recs, _ := filepath.Glob(filepath.Join(b, "records", "*"))
		os.WriteFile(filepath.Join(recs[0], "content"), []byte("forged"), 0o600)
	})
	fails("another file in a record", "jsonl", "not part of the record", func(b string) {
		recs, _ := filepath.Glob(filepath.Join(b, "records", "*"))
		os.WriteFile(filepath.Join(recs[0], "note.txt"), []byte("forged"), 0o600)
	})
	fails("a record.json whose time was changed", "eml", "record.json does not describe", func(b string) {
		recs, _ := filepath.Glob(filepath.Join(b, "records", "*", "record.json"))
		data, _ := os.ReadFile(recs[0])
		var sum map[string]any
		json.Unmarshal(data, &sum)
		sum["time"] = "2020-01-01T00:00:00Z"
		data, _ = json.MarshalIndent(sum, "", "  ")
		os.WriteFile(recs[0], append(data, '\n'), 0o600)
	})
	fails("an export that names another generator", "eml", "it was changed", func(b string) {
		ex := readEx(b)
		ex.Generator = "someone else"
		writeEx(b, ex)
	})

	// The same records export to the same bytes (no time, no random
	// boundary): a second export of the same format is equal, file by file.
	for _, f := range []string{"eml", "rsmf"} {
		again := filepath.Join(t.TempDir(), f)
		if code, o := runCLI(t, "export", "-config", g.cfgPath, "-format", f, "-out", again); code != 0 {
			t.Fatalf("export again = %d:\n%s", code, o)
		}
		a, b := readEx(bundles[f]), readEx(again)
		if len(a.Files) == 0 || len(a.Files) != len(b.Files) {
			t.Fatalf("%s: %d files, then %d", f, len(a.Files), len(b.Files))
		}
		for i := range a.Files {
			if a.Files[i].Path != b.Files[i].Path || a.Files[i].SHA256 != b.Files[i].SHA256 {
				t.Errorf("%s: exported twice, %s differs", f, a.Files[i].Path)
			}
		}
	}
}
