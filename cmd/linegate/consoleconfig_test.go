package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/console"
)

// TestConsoleExampleConfig: examples/console.yaml loads, and each demo
// user's password in its comment matches the user's hash.
func TestConsoleExampleConfig(t *testing.T) {
	cfg, err := loadConfig("../../examples/console.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../examples/console.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table := regexp.MustCompile(`(?m)^#   (\w+)\s+(agent|auditor|operator|admin)\s+(\S+)$`).FindAllStringSubmatch(string(raw), -1)
	if cfg.Console == nil || len(table) != 4 || len(cfg.Console.Users) != 4 {
		t.Fatalf("%d users in the comment's table, want 4 as in the config", len(table))
	}
	for _, row := range table {
		found := false
		for _, u := range cfg.Console.Users {
			if u.Name == row[1] {
				found = true
				if u.Role != row[2] || !console.CheckPassword(u.PasswordHash, row[3]) {
					t.Errorf("%s: role %s, or the documented password does not match its hash", u.Name, u.Role)
				}
			}
		}
		if !found {
			t.Errorf("%s is in the comment, not in the config", row[1])
		}
	}
}

func TestConsoleConfigErrors(t *testing.T) {
	h, err := console.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	base := "data_dir: ./d\nlog: {origin: example.com/x}\nchannels:\n  - {id: demo, secret: s, access_token: t}\nconsole:\n"
	for name, tc := range map[string]struct{ yaml, want string }{
		"ok":           {"  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", ""},
		"no users":     {"  users: []\n", "console.users"},
		"plain":        {"  users: [{name: a, role: admin, password_hash: hunter2}]\n", "password_hash"},
		"role":         {"  users: [{name: a, role: root, password_hash: \"" + h + "\"}]\n", "role"},
		"agent":        {"  users: [{name: a, role: agent, password_hash: \"" + h + "\"}]\n", "channels"},
		"channel":      {"  users: [{name: a, role: agent, channels: [shop], password_hash: \"" + h + "\"}]\n", "shop"},
		"unknown key":  {"  users: [{name: a, role: admin, password: x}]\n", "password"},
		"public_url":   {"  public_url: console.example.com\n  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", "public_url"},
		"proxies ok":   {"  trusted_proxies: [10.0.0.0/8, \"::1\", 192.0.2.7]\n  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", ""},
		"bad proxy":    {"  trusted_proxies: [10.0.0.0/33]\n  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", "trusted_proxies"},
		"min free":     {"  bundle_min_free_mb: -5\n  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", "bundle_min_free_mb"},
		"bad duration": {"  idle_timeout: -1m\n  users: [{name: a, role: admin, password_hash: \"" + h + "\"}]\n", "idle_timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig("test.yaml", "", []byte(base+tc.yaml))
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("parseConfig = %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error holds the password: %v", err)
			}
		})
	}
}

// TestConsoleHashPassword: the password comes from standard input, the
// hash checks, an empty input is a usage error.
func TestConsoleHashPassword(t *testing.T) {
	old := stdin
	defer func() { stdin = old }()
	for _, tc := range []struct {
		args   []string
		prefix string
	}{{nil, "$argon2id$v=19$"}, {[]string{"-bcrypt"}, "$2a$"}} {
		stdin = strings.NewReader("tr0ub4dor&3\n")
		code, out, errOut := runInProcess(append([]string{"console", "hash-password"}, tc.args...)...)
		h := strings.TrimSpace(out)
		if code != 0 || !strings.HasPrefix(h, tc.prefix) || !console.CheckPassword(h, "tr0ub4dor&3") || console.CheckPassword(h, "tr0ub4dor&3\n") {
			t.Errorf("hash-password %v = %d %q %q", tc.args, code, out, errOut)
		}
		if strings.Contains(out+errOut, "tr0ub4dor") {
			t.Error("the password is printed")
		}
	}
	stdin = strings.NewReader("")
	if code, _, errOut := runInProcess("console", "hash-password"); code != 2 || !strings.Contains(errOut, "no password") {
		t.Errorf("empty input: %d %q", code, errOut)
	}
	stdin = strings.NewReader("pw")
	if code, _, _ := runInProcess("console", "hash-password", "pw"); code != 2 {
		t.Errorf("a password as an argument: %d, want a usage error", code)
	}
}
