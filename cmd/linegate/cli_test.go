package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runIn runs the linegate binary in dir, with env added to its
// environment, and returns its exit code, stdout and stderr.
func runIn(t testing.TB, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(linegateBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// filesIn lists what dir holds, recursively.
func filesIn(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var usageFlag = regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)

// TestHelpOfEveryCommand: -h, -help and --help on every command and
// subcommand print that command's usage, naming its own flags and no
// other command's, exit 0, and create nothing (run in an empty
// directory, where the built-in config's data directory would be).
func TestHelpOfEveryCommand(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string // flags the usage must list
		notWant []string // flags of other (sub)commands
		exact   bool     // and no other flags
	}{
		{args: nil},
		{args: []string{"serve"}, want: []string{"config", "exit-with-parent"}, exact: true},
		{args: []string{"config"}},
		{args: []string{"config", "check"}, want: []string{"config"}, exact: true},
		{args: []string{"tail"}, want: []string{"config", "channel", "user", "from", "n", "f", "json", "kek"}, exact: true},
		{args: []string{"verify"}, want: []string{"config", "data", "vkey", "kek"}, notWant: []string{"out", "subject", "reason"}},
		{args: []string{"keygen"}, want: []string{"out", "origin"}, exact: true},
		{args: []string{"export"}, want: []string{"config", "out", "from", "to", "channel", "user", "message-id", "format"}, exact: true},
		{args: []string{"verify-bundle"}, want: []string{"vkey", "witness-quorum", "witness-key"}, exact: true},
		{args: []string{"archive"}},
		{args: []string{"archive", "put-bundle"}, want: []string{"config", "name"}, exact: true},
		{args: []string{"purge"}, want: []string{"config", "dry-run"}, exact: true},
		{args: []string{"hold"}},
		{args: []string{"hold", "add"}, want: []string{"config", "channel", "subject", "from", "to", "reason"}, exact: true},
		{args: []string{"hold", "release"}, want: []string{"config", "id"}, exact: true},
		{args: []string{"hold", "list"}, want: []string{"config", "json"}, exact: true},
		{args: []string{"keys"}},
		{args: []string{"keys", "new-kek"}, want: []string{"out"}, exact: true},
		{args: []string{"keys", "rotate"}, want: []string{"config"}, exact: true},
		{args: []string{"keys", "shred"}, want: []string{"config", "subject"}, exact: true},
		{args: []string{"token"}},
		{args: []string{"token", "keygen"}, want: []string{"out"}, exact: true},
		{args: []string{"migrate-store"}, want: []string{"from", "to"}, exact: true},
		{args: []string{"acknowledge-rollback"}, want: []string{"config", "reason"}, exact: true},
		{args: []string{"sim"}},
		{args: []string{"sim", "api"}, want: []string{"listen", "config"}, notWant: []string{"user", "wait"}},
		{args: []string{"sim", "send"}, notWant: []string{"listen", "api-listen"}},
		{args: []string{"sim", "chat"}, want: []string{"api-listen", "user"}},
		{args: []string{"bench"}, want: []string{"quick", "json"}, notWant: []string{"config"}},
		{args: []string{"version"}, exact: true},
		{args: []string{"canary"}},
		{args: []string{"canary", "run"}, want: []string{"config", "admin", "channel", "timeout"}, exact: true},
		{args: []string{"console"}},
		{args: []string{"console", "hash-password"}, want: []string{"bcrypt"}, exact: true},
		{args: []string{"incident"}},
		{args: []string{"incident", "export"}, want: []string{"config", "from", "to", "out", "channel"}, exact: true},
	} {
		for _, h := range []string{"-h", "-help", "--help"} {
			args := append(slices.Clone(tc.args), h)
			name := strings.Join(args, " ")
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				code, stdout, stderr := runIn(t, dir, nil, args...)
				if code != 0 {
					t.Fatalf("exit %d, want 0:\n%s%s", code, stdout, stderr)
				}
				head := strings.TrimSpace("Usage: linegate " + strings.Join(tc.args, " "))
				if !strings.HasPrefix(stdout, head) {
					t.Errorf("usage on stdout does not start with %q:\n%s", head, stdout)
				}
				if strings.Contains(stdout+stderr, "help requested") || strings.Contains(stdout+stderr, "unknown") {
					t.Errorf("-h answered as an error:\n%s%s", stdout, stderr)
				}
				var got []string
				for _, m := range usageFlag.FindAllStringSubmatch(stdout, -1) {
					got = append(got, m[1])
				}
				for _, f := range tc.want {
					if !slices.Contains(got, f) {
						t.Errorf("usage does not list -%s; it lists %v:\n%s", f, got, stdout)
					}
				}
				for _, f := range got {
					if slices.Contains(tc.notWant, f) || tc.exact && !slices.Contains(tc.want, f) {
						t.Errorf("usage lists -%s, a flag of another command:\n%s", f, stdout)
					}
				}
				if files := filesIn(t, dir); len(files) > 0 {
					t.Errorf("created %v", files)
				}
			})
		}
	}
	// Mistakes are usage errors that name the subcommand to ask, and open
	// nothing either.
	for _, args := range [][]string{
		{"hold"}, {"hold", "frob"}, {"hold", "-config", "x.yaml"}, {"keys", "shread"}, {"hold", "add", "-id", "1"},
		{"keys", "new-kek", "-subject", "user:U1"}, {"verify-bundle"}, {"hlod"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			code, stdout, stderr := runIn(t, dir, nil, args...)
			if code != 2 || !strings.Contains(stderr, "-h' for") {
				t.Errorf("exit %d, want 2 with a hint to -h:\n%s%s", code, stdout, stderr)
			}
			if files := filesIn(t, dir); len(files) > 0 {
				t.Errorf("created %v", files)
			}
		})
	}
}

// TestConfigMistakes: a config's mistakes are reported by config check and
// by serve with the file, the line and the key, the nearest known key and
// the form expected, never Go's type names; serve creates nothing (no
// data directory, no key) until the config and everything it names are
// good; config check creates nothing ever.
func TestConfigMistakes(t *testing.T) {
	const good = "log:\n  origin: example.com/t\nchannels:\n  - id: demo\n    secret: s\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty file", "", []string{"bad.yaml: the file is empty", "log.origin"}},
		{"only comments", "# nothing yet\n", []string{"bad.yaml: the file is empty"}},
		{"misspelt key", "listne: 127.0.0.1:8080\n" + good, []string{"bad.yaml:1: listne: unknown key at the top level; did you mean listen?"}},
		{"misspelt nested key", "log:\n  origin: example.com/t\n  checkpoint_intervl: 1s\nchannels: [{id: demo, secret: s}]\n",
			[]string{"bad.yaml:3: log.checkpoint_intervl: unknown key in log; did you mean checkpoint_interval?"}},
		{"key in the wrong place", "origin: example.com/t\nchannels: [{id: demo, secret: s}]\n", []string{"bad.yaml:1: origin: unknown key at the top level; did you mean log.origin?"}},
		{"duration", "log:\n  origin: example.com/t\n  checkpoint_interval: 1 second\nchannels: [{id: demo, secret: s}]\n",
			[]string{`bad.yaml:3: log.checkpoint_interval: "1 second" is not a duration: want a duration such as 500ms, 30s`}},
		{"number", "max_body_bytes: 1MiB\n" + good, []string{`bad.yaml:1: max_body_bytes: "1MiB" is not a whole number`}},
		{"list", "rules_files: rules.yaml\n" + good, []string{"bad.yaml:1: rules_files: want a list, such as [a, b]"}},
		{"enum", good + "    drift_policy: strict\n", []string{`bad.yaml:6: channels[0].drift_policy: "strict": want accept or quarantine`}},
		{"canary group", good + "    canary_group: U0123456789abcdef0123456789abcdef\n", []string{`bad.yaml:6: channels[0].canary_group: "U0123456789abcdef0123456789abcdef": want C and 32 hex digits`}},
		{"unset variable", "log: {origin: example.com/t}\nchannels:\n  - id: demo\n    secret_env: LINEGATE_TEST_UNSET_SECRET\n",
			[]string{"bad.yaml:4: channels[0].secret_env: environment variable LINEGATE_TEST_UNSET_SECRET is not set"}},
		{"missing rules file", "rules_files: [nowhere.yaml]\n" + good, []string{"bad.yaml:1: rules_files:", "nowhere.yaml"}},
		{"missing subjects file", good + "    retention: th-pdpa\n    audiences: [{name: tw, retention: tw-pipa, subjects_file: tw.txt}]\n",
			[]string{"bad.yaml:7: channels[0].audiences[0].subjects_file:", "tw.txt"}},
		{"twice", "log: {origin: example.com/t}\nlog: {origin: example.com/u}\nchannels: [{id: demo, secret: s}]\n", []string{"bad.yaml:2: log: given twice (first at line 1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]string{{"config", "check", "-config", cfg}, {"serve", "-config", cfg}} {
				code, stdout, stderr := runIn(t, dir, nil, cmd...)
				out := stdout + stderr
				if code != 1 {
					t.Errorf("%s: exit %d, want 1:\n%s", cmd[0], code, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("%s: output does not say %q:\n%s", cmd[0], w, out)
					}
				}
				for _, goName := range []string{"main.Config", "time.Duration", "!!str", "unmarshal"} {
					if strings.Contains(out, goName) {
						t.Errorf("%s: output names %q:\n%s", cmd[0], goName, out)
					}
				}
				if files := filesIn(t, dir); len(files) > 0 {
					t.Errorf("%s created %v", cmd[0], files)
				}
			}
		})
	}
}

// TestConfigCheck: config check passes a good config without creating
// anything, before the first start (noting that the KEK is not checked)
// and after it (checking that the KEK unwraps the stored data keys, read
// only); it fails naming encryption with a KEK that does not.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, gwConfig{})
	code, stdout, stderr := runIn(t, t.TempDir(), nil, "config", "check", "-config", cfgPath)
	if code != 0 || !strings.Contains(stdout, ": OK") || !strings.Contains(stdout, "no database yet") && !strings.Contains(stdout, "no ledger yet") {
		t.Fatalf("config check before the first start = %d:\n%s%s", code, stdout, stderr)
	}
	if files := filesIn(t, dir); !slices.Equal(files, []string{"linegate.yaml"}) {
		t.Fatalf("config check created %v", files)
	}
	g := startGateway(t, dir, gwConfig{})
	sendText(t, g, "U1", "", "hello")
	waitIdle(t, g)
	// Beside the running gateway, and after it stopped.
	code, stdout, stderr = runIn(t, t.TempDir(), nil, "config", "check", "-config", cfgPath)
	if code != 0 || !strings.Contains(stdout, "unwraps the database's data keys") {
		t.Errorf("config check beside serve = %d:\n%s%s", code, stdout, stderr)
	}
	g.stop()
	before := filesIn(t, dir)
	code, stdout, stderr = runIn(t, t.TempDir(), nil, "config", "check", "-config", cfgPath)
	if code != 0 || !strings.Contains(stdout, "unwraps the database's data keys") {
		t.Errorf("config check = %d:\n%s%s", code, stdout, stderr)
	}
	if after := filesIn(t, dir); !slices.Equal(before, after) {
		t.Errorf("config check changed the directory: %v, then %v", before, after)
	}
	other := filepath.Join(t.TempDir(), "other.kek")
	if code, out := runCLI(t, "keys", "new-kek", "-out", other); code != 0 {
		t.Fatalf("keys new-kek = %d: %s", code, out)
	}
	wrong := writeConfig(t, dir, gwConfig{extra: fmt.Sprintf("encryption: {kek_file: %s}\n", other)})
	code, stdout, stderr = runIn(t, t.TempDir(), nil, "config", "check", "-config", wrong)
	if code != 1 || !strings.Contains(stderr, "encryption") {
		t.Errorf("config check with another KEK = %d, want 1 naming encryption:\n%s%s", code, stdout, stderr)
	}
}

// TestConfigRelativePaths: the files a config names (rule files, their
// reply files and forward secrets, secret files, subjects files) are
// found relative to the config file, whatever the working directory.
func TestConfigRelativePaths(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"conf/linegate.yaml": `data_dir: ` + filepath.Join(dir, "data") + `
log: {origin: example.com/t}
rules_files: [rules/shop.yaml]
rules:
  - {name: inline, when: {event: [follow]}, reply_file: rules/welcome.json}
channels:
  - id: demo
    secret_file: secrets/channel.secret
    access_token_file: secrets/token
    retention: th-pdpa
    audiences: [{name: tw, retention: tw-pipa, subjects_file: tw.txt}]
`,
		"conf/rules/shop.yaml":        "rules:\n  - {name: card, when: {text: {exact: card}}, reply_file: card.json}\n  - {name: bot, when: {text: {prefix: \"bot \"}}, forward: {url: \"https://bot.example/cb\", secret_file: bot.secret}}\n",
		"conf/rules/card.json":        `[{"type": "text", "text": "a card"}]`,
		"conf/rules/welcome.json":     `[{"type": "text", "text": "welcome"}]`,
		"conf/rules/bot.secret":       "bot-secret\n",
		"conf/secrets/channel.secret": "channel-secret\n",
		"conf/secrets/token":          "token\n",
		"conf/tw.txt":                 "user:U1 # a customer\n",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "conf", "linegate.yaml")
	for _, wd := range []string{t.TempDir(), filepath.Join(dir, "conf", "rules"), "/"} {
		code, stdout, stderr := runIn(t, wd, nil, "config", "check", "-config", cfg)
		if code != 0 || !strings.Contains(stdout, "rules: 3") {
			t.Errorf("config check from %s = %d:\n%s%s", wd, code, stdout, stderr)
		}
	}
	// From the config's own directory, by a relative path.
	code, stdout, stderr := runIn(t, filepath.Join(dir, "conf"), nil, "config", "check", "-config", "linegate.yaml")
	if code != 0 {
		t.Errorf("config check -config linegate.yaml = %d:\n%s%s", code, stdout, stderr)
	}
	// The example config, from anywhere.
	example, err := filepath.Abs(filepath.Join("..", "..", "examples", "linegate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wd := t.TempDir()
	code, stdout, stderr = runIn(t, wd, nil, "config", "check", "-config", example)
	if code != 0 || !strings.Contains(stdout, "data_dir: "+filepath.Join(wd, "data")) {
		t.Errorf("config check of the example from elsewhere = %d:\n%s%s", code, stdout, stderr)
	}
}

// TestOperatorCommandsSayWhatHappened: export selects the same records
// for -user U... and -user user:U..., refuses an empty range (exit 2), and
// writes "open" for an open end of the range; hold takes a bare user id
// and prints readable times, and so does purge; keys shred says when no
// key existed.
func TestOperatorCommandsSayWhatHappened(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{})
	sendText(t, g, "U1", "", "one")
	sendText(t, g, "U2", "", "two")
	sendText(t, g, "U1", "", "three")
	waitIdle(t, g)
	waitIntegrated(t, g)

	manifest := func(args ...string) (records []uint64, raw string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "bundle")
		code, stdout, stderr := runIn(t, dir, nil, append([]string{"export", "-config", g.cfgPath, "-out", out}, args...)...)
		if code != 0 || !strings.Contains(stdout, "selected: records from") {
			t.Fatalf("export %v = %d:\n%s%s", args, code, stdout, stderr)
		}
		b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m struct{ Records []uint64 }
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m.Records, string(b)
	}
	bare, raw := manifest("-user", "U1")
	prefixed, _ := manifest("-user", "user:U1")
	if len(bare) < 2 || !slices.Equal(bare, prefixed) {
		t.Errorf("-user U1 exported %v, -user user:U1 %v: want the same, at least the two webhooks", bare, prefixed)
	}
	if strings.Contains(raw, "0001-01-01") || !strings.Contains(raw, `"from": "open"`) || !strings.Contains(raw, `"to": "open"`) {
		t.Errorf("manifest.json of an open range:\n%s", raw)
	}
	code, stdout, stderr := runIn(t, dir, nil, "export", "-config", g.cfgPath, "-out", filepath.Join(t.TempDir(), "b"), "-from", "2026-12-01", "-to", "2026-11-01")
	if code != 2 || !strings.Contains(stderr, "is not before") {
		t.Errorf("export with -from after -to = %d, want 2:\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = runIn(t, dir, nil, "hold", "add", "-config", g.cfgPath, "-subject", "U1", "-from", "2026-01-01", "-reason", "case 7")
	if code != 0 || !strings.Contains(stdout, "user:U1") || !strings.Contains(stdout, "2026-01-01T00:00:00Z") || !strings.Contains(stdout, "to open") {
		t.Errorf("hold add -subject U1 = %d:\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, dir, nil, "hold", "list", "-config", g.cfgPath)
	if code != 0 || !strings.Contains(stdout, "user:U1") || !strings.Contains(stdout, "case 7") || !strings.Contains(stdout, "2026-01-01T00:00:00Z") {
		t.Errorf("hold list = %d:\n%s%s", code, stdout, stderr)
	}
	if ms := regexp.MustCompile(`\b1[0-9]{12}\b`).FindString(stdout); ms != "" {
		t.Errorf("hold list prints epoch milliseconds (%s):\n%s", ms, stdout)
	}
	code, stdout, _ = runIn(t, dir, nil, "hold", "list", "-config", g.cfgPath, "-json")
	var holds []struct {
		ID      int64
		Subject string
		From    *string
		To      *string
		Created string
	}
	if err := json.Unmarshal([]byte(stdout), &holds); code != 0 || err != nil || len(holds) != 1 {
		t.Fatalf("hold list -json = %d, %v:\n%s", code, err, stdout)
	}
	if h := holds[0]; h.Subject != "user:U1" || h.From == nil || *h.From != "2026-01-01T00:00:00Z" || h.To != nil {
		t.Errorf("hold list -json: %+v", h)
	} else if _, err := time.Parse(time.RFC3339, h.Created); err != nil {
		t.Errorf("hold list -json: created %q: %v", h.Created, err)
	}
	code, stdout, stderr = runIn(t, dir, nil, "hold", "release", "-config", g.cfgPath, "-id", "999999")
	if code != 1 || !strings.Contains(stderr, "no hold 999999") {
		t.Errorf("hold release of no hold = %d:\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = runIn(t, dir, nil, "purge", "-config", g.cfgPath, "-dry-run")
	if code != 0 || !regexp.MustCompile(`^would delete 0 payloads past their retention at \d{4}-\d\d-\d\dT[0-9:.]+Z`).MatchString(stdout) {
		t.Errorf("purge -dry-run = %d:\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, dir, nil, "keys", "shred", "-config", g.cfgPath, "-subject", "U404")
	if code != 0 || !strings.Contains(stdout, "no data key exists for user:U404") || strings.Contains(stdout, "destroyed the") {
		t.Errorf("keys shred of an unknown subject = %d:\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, dir, nil, "keys", "shred", "-config", g.cfgPath, "-subject", "U2")
	if code != 0 || !strings.Contains(stdout, "destroyed the data key of user:U2") {
		t.Errorf("keys shred -subject U2 = %d:\n%s%s", code, stdout, stderr)
	}
	g.stop()
}

// TestVersion: linegate version names the module version, the VCS commit
// the build recorded, and the Go version.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, stderr := runIn(t, t.TempDir(), nil, args...)
		if code != 0 || !strings.HasPrefix(stdout, "linegate ") || !strings.Contains(stdout, runtime.Version()) {
			t.Errorf("%s = %d:\n%s%s", args[0], code, stdout, stderr)
		}
		out, err := exec.Command("go", "version", "-m", linegateBin).Output()
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`vcs\.revision=([0-9a-f]+)`).FindSubmatch(out); m != nil && !strings.Contains(stdout, "commit "+string(m[1])) {
			t.Errorf("%s does not name the commit %s:\n%s", args[0], m[1], stdout)
		}
	}
}

// TestServeExitsWithItsParent: serve started by a process that is then
// killed (go run, killed with SIGKILL) drains and stops by itself.
func TestServeExitsWithItsParent(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gwConfig{})
	logFile := filepath.Join(dir, "serve.log")
	sh := exec.Command("sh", "-c", `"$0" serve -config "$1" 2>"$2" & echo $!; wait`, linegateBin, cfg, logFile)
	stdout, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	logs := func() string {
		b, _ := os.ReadFile(logFile)
		return string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs(), `"msg":"ready"`) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := sh.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sh.Wait()
	killed := time.Now()
	for !strings.Contains(logs(), `"msg":"stopped"`) || alive(pid) {
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("serve still runs 5s after its parent was killed:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs(), "the process that started serve exited") {
		t.Errorf("serve did not say why it stopped:\n%s", logs())
	}
}

// alive reports whether a process runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestTail: tail -n prints the last records, one readable line each in
// local time (webhooks with their events, outcomes, replies with LINE's
// request id, sends held back), or JSON; tail follows new records beside
// the running gateway within a second or two, without its lock.
func TestTail(t *testing.T) {
	dir := t.TempDir()
	w := newReplyWorld(t)
	g := startGateway(t, dir, w.config(t, dir))
	long := strings.Repeat("x", 100)
	w.replyTo(t, w.send(t, g, "U1", "message", "hello tail"))
	w.send(t, g, "U2", "message", "deals") // promotional, no consent: held back
	w.replyTo(t, w.send(t, g, "U1", "message", long))
	waitIdle(t, g)

	code, stdout, stderr := runIn(t, dir, nil, "tail", "-config", g.cfgPath, "-n", "100")
	if code != 0 {
		t.Fatalf("tail -n = %d:\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		`message text from U1 "hello tail"`,
		`(message): processed`,
		"reply by rule default for #",
		": sent, HTTP 200, x-line-request-id ",
		"by rule deals for #",
		"held back, blocked",
		`"` + strings.Repeat("x", 80) + `…"`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("tail -n does not say %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, strings.Repeat("x", 81)) {
		t.Errorf("a text is not cut at 80 characters:\n%s", stdout)
	}
	if zone, _ := time.Now().Zone(); !strings.Contains(stdout, " "+zone+" ") {
		t.Errorf("tail does not print local times (%s):\n%s", zone, stdout)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	code, stdout, stderr = runIn(t, dir, nil, "tail", "-config", g.cfgPath, "-n", "2")
	if got := strings.Split(strings.TrimSpace(stdout), "\n"); code != 0 || !slices.Equal(got, lines[len(lines)-2:]) {
		t.Errorf("tail -n 2 = %d, want the last two lines of tail -n 100:\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, dir, nil, "tail", "-config", g.cfgPath, "-n", "100", "-user", "U2", "-json")
	if code != 0 {
		t.Fatalf("tail -json = %d:\n%s%s", code, stdout, stderr)
	}
	kinds := map[string]int{}
	for line := range strings.Lines(stdout) {
		var l struct {
			Index    uint64
			Kind     string
			Time     string
			Subjects []string
			Summary  string
			Body     json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("tail -json line %q: %v", line, err)
		}
		if !slices.Contains(l.Subjects, "user:U2") || len(l.Body) == 0 || l.Summary == "" {
			t.Errorf("tail -json -user U2: %s", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
			t.Errorf("tail -json time: %v", err)
		}
		kinds[l.Kind]++
	}
	if kinds["webhook"] != 1 || kinds["event"] != 1 || kinds["outbound"] != 1 {
		t.Errorf("tail -json -user U2: records by kind %v, want a webhook, its outcome and the send held back", kinds)
	}

	// Following, beside the gateway.
	cmd := exec.Command(linegateBin, "tail", "-config", g.cfgPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	time.Sleep(500 * time.Millisecond) // tail has read where the ledger is
	sent := time.Now()
	w.send(t, g, "U3", "message", "followed")
	timeout := time.After(3 * time.Second)
	for found := false; !found; {
		select {
		case l, ok := <-got:
			if !ok {
				t.Fatal("tail exited")
			}
			found = strings.Contains(l, `message text from U3 "followed"`)
		case <-timeout:
			t.Fatal("tail did not print the new webhook within 3s")
		}
	}
	t.Logf("tail printed the webhook %v after it was sent", time.Since(sent).Round(time.Millisecond))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("tail on SIGTERM: %v", err)
	}
	// The gateway never noticed.
	w.replyTo(t, w.send(t, g, "U1", "message", "still answered"))
	g.stop()
}
