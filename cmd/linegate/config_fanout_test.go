package main

import (
	"os"
	"strings"
	"testing"
)

// TestFanoutConfig: destinations are checked with the config, each
// mistake named by its key, never its secret.
func TestFanoutConfig(t *testing.T) {
	base := `log: {origin: example.com/t}
channels:
  - id: demo
    secret: channel-secret
`
	dest := func(name, extra string) string {
		return "      - name: " + name + "\n        url: https://" + name + ".example/hook\n        secret: dest-secret-" + name + "\n" + extra
	}
	tests := []struct {
		name, yaml, want string // want "": accepted
	}{
		{"ok", base + "    destinations:\n" + dest("bot", "        role: reply_owner\n") + dest("crm", ""), ""},
		{"two owners", base + "    destinations:\n" + dest("bot", "        role: reply_owner\n") + dest("crm", "        role: reply_owner\n"),
			"channels[0].destinations[1].role"},
		{"unknown role", base + "    destinations:\n" + dest("bot", "        role: owner\n"), "want observer or reply_owner"},
		{"no secret", base + "    destinations:\n      - name: x\n        url: https://x.example/\n", "exactly one of secret"},
		{"two secrets", base + "    destinations:\n" + dest("bot", "        secret_env: X\n"), "exactly one of secret"},
		{"http to a host", base + "    destinations:\n      - name: x\n        url: http://x.example/\n        allow_http: true\n        secret: s\n", "loopback"},
		{"same name", base + "    destinations:\n" + dest("bot", "") + dest("bot", ""), "named twice"},
		{"misspelled key", base + "    destinations:\n" + dest("bot", "        evnet_types: [message]\n"), "evnet_types"},
		{"single url without bot ids", "fanout: {single_webhook_url: true}\n" + base, "bot_user_id"},
		{"single url, one bot id twice", "fanout: {single_webhook_url: true}\n" + base + "    bot_user_id: U0123456789abcdef0123456789abcdef\n" +
			"  - id: other\n    secret: other-secret\n    bot_user_id: U0123456789abcdef0123456789abcdef\n", "channels[1].bot_user_id"},
		{"one bot id twice", base + "    bot_user_id: U0123456789abcdef0123456789abcdef\n" +
			"  - id: other\n    secret: other-secret\n    bot_user_id: U0123456789abcdef0123456789abcdef\n", "channels[1].bot_user_id"},
		{"rules_when_owned", "fanout: {rules_when_owned: reply}\n" + base, "want none or push"},
		{"max cooldown below cooldown", "fanout: {breaker_cooldown: 2m, breaker_max_cooldown: 1m}\n" + base, "fanout.breaker_max_cooldown"},
		{"max cooldown below 30s", "fanout: {breaker_cooldown: 2s, breaker_max_cooldown: 8s}\n" + base, "want at least 30s (the larger of breaker_cooldown and 30s)"},
		{"linger over a second", "fanout: {linger: 2s}\n" + base, "fanout.linger"},
		{"proxy names another owner", "proxy:\n  listen: 127.0.0.1:8090\n  reply_owners: {demo: crm}\n  tools: [{name: t, token: x, channels: [demo]}]\n" +
			base + "    destinations:\n" + dest("bot", "        role: reply_owner\n"), `proxy.reply_owners names "crm"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig("test.yaml", "", []byte(tt.yaml))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Fanout.RulesWhenOwned != "none" || len(c.Channels[0].Destinations) != 2 {
					t.Errorf("defaults: %+v", c.Fanout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "dest-secret") {
				t.Errorf("the error holds a secret: %v", err)
			}
		})
	}
}

// TestFanoutExample: examples/fanout.yaml is a config serve accepts.
func TestFanoutExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/fanout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig("examples/fanout.yaml", "../../examples", b)
	if err != nil {
		t.Fatal(err)
	}
	ds := c.Channels[0].Destinations
	if len(ds) != 3 || ds[0].Role != "reply_owner" || !strings.HasSuffix(ds[1].SecretFile, "examples/secrets/crm-webhook-secret") {
		t.Errorf("destinations: %+v", ds)
	}
}

// TestDestinationSecretsChecked: config check resolves the destinations'
// secrets as serve will, naming the key of one that does not resolve.
func TestDestinationSecretsChecked(t *testing.T) {
	c, err := parseConfig("test.yaml", "", []byte(`log: {origin: example.com/t}
channels:
  - id: demo
    secret: s
    destinations:
      - {name: a, url: "https://a.example/", secret_env: DEST_A_SECRET}
      - {name: b, url: "https://b.example/", secret: inline-secret}
`))
	if err != nil {
		t.Fatal(err)
	}
	errs := c.Channels[0].checkDestinationSecrets(c, func(string) string { return "" })
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "destinations[0]") || !strings.Contains(errs[0].Error(), "DEST_A_SECRET is not set") {
		t.Fatalf("errors %v", errs)
	}
	if errs := c.Channels[0].checkDestinationSecrets(c, func(k string) string { return map[string]string{"DEST_A_SECRET": "x"}[k] }); len(errs) != 0 {
		t.Fatalf("with the variable set: %v", errs)
	}
}
