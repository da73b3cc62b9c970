package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// configCheck runs linegate config check on the config yaml, written in
// dir, with env added to the environment: its exit code and output.
func configCheck(t *testing.T, dir, yaml string, env ...string) (int, string) {
	t.Helper()
	p := filepath.Join(dir, "linegate.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(linegateBin, "config", "check", "-config", p)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestDestinationSecretNotAChannels: config check refuses a destination
// whose secret, once resolved (inline, env, file), equals a channel's
// secret or next secret, its own channel's or another's: that destination
// could sign webhooks linegate takes for LINE's. A rule's forward secret
// likewise. The output names the
// keys, never a secret; distinct secrets pass.
func TestDestinationSecretNotAChannels(t *testing.T) {
	dir := t.TempDir()
	const aSecret, aNext, bSecret = "chan-a-secret-5f1e", "chan-a-next-9c2d", "chan-b-secret-77ab"
	for name, v := range map[string]string{"a-next.secret": aNext + "\n", "d1.secret": aNext + "\n", "ok.secret": "dest-own-secret-0001\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(dests0, dests1 string, forwardEnv string) string {
		return "data_dir: " + filepath.Join(dir, "data") + `
log: {origin: example.com/t}
rules:
  - {name: ok-forward, when: {event: [message]}, forward: {url: "https://bot.example/cb", secret_env: OK_SECRET}}
  - {name: to-bot, when: {event: [message]}, forward: {url: "https://bot.example/cb", secret_env: ` + forwardEnv + `}}
channels:
  - id: a
    secret_env: CH_A_SECRET
    next_secret_file: a-next.secret
    access_token: t
    destinations:
` + dests0 + `  - id: b
    secret: ` + bSecret + `
    access_token: t
    destinations:
` + dests1
	}
	env := []string{"CH_A_SECRET=" + aSecret, "D2_SECRET=" + aSecret, "OK_SECRET=dest-own-secret-0002", "FWD_SECRET=" + bSecret,
		"FWD_OWN_SECRET=forward-own-secret"}
	bad := cfg(`      - {name: d1, url: "https://d1.example/", secret_file: d1.secret}
      - {name: ok1, url: "https://ok1.example/", secret_file: ok.secret}
`, `      - {name: d2, url: "https://d2.example/", secret_env: D2_SECRET}
      - {name: d3, url: "https://d3.example/", secret: `+bSecret+`}
      - {name: ok2, url: "https://ok2.example/", secret_env: OK_SECRET}
`, "FWD_SECRET")
	code, out := configCheck(t, dir, bad, env...)
	if code != 1 {
		t.Fatalf("config check = %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"channels[0].destinations[0]", "channels[1].destinations[0]", "channels[1].destinations[1]", `rule "to-bot"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, okPath := range []string{"channels[0].destinations[1]", "channels[1].destinations[2]", "ok-forward"} {
		if strings.Contains(out, okPath) {
			t.Errorf("output names %s, whose secret is its own:\n%s", okPath, out)
		}
	}
	for _, s := range []string{aSecret, aNext, bSecret} {
		if strings.Contains(out, s) {
			t.Errorf("the output holds a secret:\n%s", out)
		}
	}
	good := cfg(`      - {name: ok1, url: "https://ok1.example/", secret_file: ok.secret}
`, `      - {name: ok2, url: "https://ok2.example/", secret_env: OK_SECRET}
`, "FWD_OWN_SECRET")
	if code, out := configCheck(t, dir, good, env...); code != 0 {
		t.Fatalf("distinct secrets: config check = %d:\n%s", code, out)
	}
}
