package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/sim"
)

// startSimAPI runs `linegate sim api` on addr with the channels of a
// config and waits until it answers; it returns its base URL.
func startSimAPI(t *testing.T, addr, configPath string, args ...string) string {
	t.Helper()
	cmd := exec.Command(linegateBin, append([]string{"sim", "api", "-listen", addr, "-config", configPath}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := httpClient.Get(base + "/_sim/calls"); err == nil {
			resp.Body.Close()
			return base
		}
	}
	t.Fatal("the simulator did not start")
	return ""
}

// simJSON decodes a GET of the simulator into v.
func simJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// simReplies returns the statuses of the replies the simulator received,
// in order, by channel ("" for those it could not authenticate).
func simReplies(t *testing.T, api string) []sim.Call {
	t.Helper()
	var calls []sim.Call
	simJSON(t, api+"/_sim/calls?path=/v2/bot/message/reply", &calls)
	return calls
}

func simTokens(t *testing.T, api, channel string) []sim.IssuedToken {
	t.Helper()
	var all, out []sim.IssuedToken
	simJSON(t, api+"/_sim/tokens", &all)
	for _, it := range all {
		if it.Channel == channel {
			out = append(out, it)
		}
	}
	return out
}

// waitUntil polls cond for up to 20 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// metricValue returns the value of the sample of /metrics whose name and
// labels are given as they print ("name{a=\"b\"}"), or -1.
func metricValue(metrics, sample string) float64 {
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// tokenChannels are the channels of TestChannelTokens beside demo: one
// with stateless tokens (its id and secret), one with tokens v2.1 (its id
// and an assertion signing key) that live 3 seconds.
const tokenChannels = `  - id: stateless
    secret: "stateless-channel-secret"
    channel_id: "1000000001"
  - id: assert
    secret: "assert-channel-secret"
    channel_id: "1000000002"
    assertion_key_file: assertion.key.json
    assertion_kid: test-kid
    token_lifetime: 3s
    token_renew_before: 1s
`

// TestChannelTokens runs the gateway with two channels that give no
// access token: one gives its channel id and secret (stateless tokens),
// one its channel id and an assertion signing key made by `linegate token
// keygen` (tokens v2.1). Both answer webhooks through the simulator with
// tokens the simulator issued; the short lifetimes show renewals; a token
// revoked behind linegate's back is replaced after LINE's 401 and the
// reply goes through; shutdown revokes the v2.1 token in hand. Every token
// issued and revoked is an admin record naming it by its hash, as the
// simulator does; the metrics show the expiry and the renewals; no log
// line and no record holds a token, a secret or the private key.
func TestChannelTokens(t *testing.T) {
	dir := t.TempDir()
	if code, out := runCLI(t, "token", "keygen", "-out", dir); code != 0 || !strings.Contains(out, "assertion_kid") {
		t.Fatalf("token keygen = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "token", "keygen", "-out", dir); code != 1 || !strings.Contains(out, "not overwriting") {
		t.Errorf("token keygen over an existing key = %d:\n%s", code, out)
	}
	var priv map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "assertion.key.json"))
	if err != nil || json.Unmarshal(b, &priv) != nil || priv["d"] == nil {
		t.Fatalf("assertion.key.json is no private JWK: %v: %s", err, b)
	}
	apiAddr := freePort(t)
	c := gwConfig{
		extra:     "line_api_base: http://" + apiAddr + "\nrules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n",
		chanExtra: tokenChannels,
	}
	cfgPath := writeConfig(t, dir, c)
	if code, out := runCLI(t, "config", "check", "-config", cfgPath); code != 0 {
		t.Fatalf("config check = %d:\n%s", code, out)
	}
	// The simulator's stateless tokens live 4 seconds here, not 15 minutes.
	api := startSimAPI(t, apiAddr, cfgPath, "-stateless-token-ttl", "4s")
	g := startGateway(t, dir, c)

	// send posts n text messages to the channel, each with a reply token
	// that the simulator issued for it.
	send := func(channel string, n int) {
		t.Helper()
		for range n {
			var rt struct{ ReplyToken string }
			resp, err := httpClient.Post(api+"/_sim/reply-tokens?channel="+channel, "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&rt)
			resp.Body.Close()
			seq := eventSeq.Add(1)
			body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,`+
				`"webhookEventId":"01TOKEN%019d","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U%032d"},`+
				`"replyToken":%q,"message":{"id":"%d","type":"text","text":"hello","quoteToken":"q"}}]}`, time.Now().UnixMilli(), seq, seq, rt.ReplyToken, seq)
			hdr := map[string]string{"X-Line-Signature": line.Sign([]byte(channel+"-channel-secret"), body), "Content-Type": "application/json"}
			if code := postRaw(t, httpClient, g.webhook+"/webhook/"+channel, hdr, body); code != 200 {
				t.Fatalf("webhook to %s = %d", channel, code)
			}
		}
	}
	replied := func(channel string) (ok, refused int) {
		for _, c := range simReplies(t, api) {
			switch {
			case c.Channel == channel && c.Status == 200:
				ok++
			case c.Channel == "" && c.Status == 401:
				refused++
			}
		}
		return ok, refused
	}
	for _, ch := range []string{"stateless", "assert"} {
		send(ch, 3)
		waitUntil(t, ch+"'s replies", func() bool { ok, _ := replied(ch); return ok == 3 })
		if len(simTokens(t, api, ch)) == 0 {
			t.Fatalf("the simulator issued no token for %s", ch)
		}
	}
	// Renewals: a v2.1 token of 3s is replaced after 2s, a stateless one
	// of 4s after about 2.7s.
	waitUntil(t, "renewals", func() bool {
		return len(simTokens(t, api, "assert")) >= 3 && len(simTokens(t, api, "stateless")) >= 2
	})
	for _, it := range simTokens(t, api, "stateless") {
		if it.Type != sim.TokenStateless {
			t.Errorf("stateless channel got a %s token", it.Type)
		}
	}
	for _, it := range simTokens(t, api, "assert") {
		if it.Type != sim.TokenV21 || it.AssertionKID != "test-kid" || it.KeyID == "" {
			t.Errorf("assert channel's token: %+v", it)
		}
	}

	// A token revoked behind linegate's back: LINE answers 401, linegate
	// issues a new token at once and the reply goes through. (A renewal
	// between the revocation and the reply would hide the 401: then again.)
	sawRefusal := false
	for try := 0; try < 3 && !sawRefusal; try++ {
		req, _ := http.NewRequest("DELETE", api+"/_sim/tokens?channel=assert", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rev struct{ Revoked int }
		json.NewDecoder(resp.Body).Decode(&rev)
		resp.Body.Close()
		if rev.Revoked == 0 {
			t.Fatal("the simulator revoked no token of the assert channel")
		}
		okBefore, refusedBefore := replied("assert")
		send("assert", 1)
		waitUntil(t, "the reply after a revocation", func() bool { ok, _ := replied("assert"); return ok == okBefore+1 })
		_, refused := replied("assert")
		sawRefusal = refused == refusedBefore+1
	}
	if !sawRefusal {
		t.Error("no reply was refused with a revoked token")
	}
	if !strings.Contains(g.Logs(), "LINE refused the channel access token") {
		t.Error("no log line for the refused token")
	}

	_, metrics := g.get(t, g.admin+"/metrics")
	now := float64(time.Now().Unix())
	for _, ch := range []string{"stateless", "assert"} {
		exp := metricValue(string(metrics), `linegate_channel_token_expiry_timestamp_seconds{channel="`+ch+`"}`)
		if exp < now-1 || exp > now+5 {
			t.Errorf("%s: token expiry %v, now %v", ch, exp, now)
		}
	}
	if n := metricValue(string(metrics), `linegate_channel_token_renewals_total{channel="assert",outcome="ok"}`); n < 4 {
		t.Errorf("assert: %v tokens issued, want 4 or more", n)
	}
	if n := metricValue(string(metrics), `linegate_channel_token_renewals_total{channel="demo",outcome="ok"}`); n != -1 {
		t.Errorf("demo, which gives its token, has renewals: %v", n)
	}

	g.stop()
	if !strings.Contains(g.Logs(), `"reason":"shutdown"`) {
		t.Error("no token revoked on shutdown")
	}
	// Every v2.1 token is revoked; stateless ones cannot be.
	issued := map[string]map[string]bool{}
	for _, ch := range []string{"stateless", "assert"} {
		issued[ch] = map[string]bool{}
		for _, it := range simTokens(t, api, ch) {
			issued[ch][it.SHA256] = true
			if (it.RevokedAt != nil) != (ch == "assert") {
				t.Errorf("%s: token %s revoked at %v", ch, it.SHA256, it.RevokedAt)
			}
		}
	}

	// The ledger names each token the simulator issued, once, by the
	// same hash, and each v2.1 token's revocation.
	recorded := map[string]map[string]map[string]bool{"token_issued": {}, "token_revoked": {}}
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind != ledger.KindAdmin {
			continue
		}
		var a struct {
			Action string
			Detail map[string]any
		}
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatal(err)
		}
		if recorded[a.Action] == nil {
			continue
		}
		ch, _ := a.Detail["channel"].(string)
		if r.leaf.Channel != ch {
			t.Errorf("%s record of channel %q in the leaf of channel %q", a.Action, ch, r.leaf.Channel)
		}
		if recorded[a.Action][ch] == nil {
			recorded[a.Action][ch] = map[string]bool{}
		}
		h, _ := a.Detail["token_sha256"].(string)
		if recorded[a.Action][ch][h] {
			t.Errorf("%s %s recorded twice", a.Action, h)
		}
		recorded[a.Action][ch][h] = true
	}
	for _, ch := range []string{"stateless", "assert"} {
		if !sameKeys(recorded["token_issued"][ch], issued[ch]) {
			t.Errorf("%s: token_issued records %v, the simulator issued %v", ch, recorded["token_issued"][ch], issued[ch])
		}
	}
	if !sameKeys(recorded["token_revoked"]["assert"], issued["assert"]) || len(recorded["token_revoked"]["stateless"]) != 0 {
		t.Errorf("token_revoked records %v; v2.1 tokens issued %v", recorded["token_revoked"], issued["assert"])
	}

	// Nothing secret in the log or the ledger.
	logs := g.Logs()
	var bodies strings.Builder
	for _, r := range readLedger(t, dir) {
		bodies.Write(r.body)
	}
	for what, text := range map[string]string{"log": logs, "ledger": bodies.String()} {
		for _, secret := range []string{"stateless-channel-secret", "assert-channel-secret", priv["d"].(string), priv["p"].(string)} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds a secret", what)
			}
		}
		if tok := tokenLike(text); tok != "" {
			t.Errorf("the %s holds what looks like a token: %.8s...", what, tok)
		}
	}
}

// tokenLike returns a run of 64 or more base64url characters that is not
// hex (a hash), as the simulator's tokens are, or "".
func tokenLike(s string) string {
	for _, m := range regexp.MustCompile(`[A-Za-z0-9_-]{64,}`).FindAllString(s, -1) {
		if !regexp.MustCompile(`^[0-9a-f]+$`).MatchString(m) {
			return m
		}
	}
	return ""
}

func sameKeys(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// TestTokenConfigCheck: `linegate config check` refuses a channel's token
// keys given wrong, naming the key and never the key's material.
func TestTokenConfigCheck(t *testing.T) {
	dir := t.TempDir()
	writeKey := func(name string, bits int, kid string) string {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "RS256", Use: "sig"})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	good := writeKey("good.json", 2048, "")
	writeKey("withkid.json", 2048, "kid-in-file")
	short := writeKey("short.json", 1024, "k")
	os.WriteFile(filepath.Join(dir, "junk.json"), []byte("not a key"), 0o600)
	// PEM: PKCS #8 and PKCS #1.
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "pkcs8.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "pkcs1.pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(pk)}), 0o600)
	os.WriteFile(filepath.Join(dir, "public.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&pk.PublicKey)}), 0o600)
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &pk.PublicKey, KeyID: "k", Algorithm: "RS256"})
	os.WriteFile(filepath.Join(dir, "public.json"), pub, 0o600)
	ch := func(lines string) string {
		return "  - id: t\n    secret: s\n" + lines
	}
	for _, tc := range []struct {
		name, chanExtra string
		want            []string // in the output; nil: the config is good
	}{
		{"stateless", ch("    channel_id: \"123\"\n"), nil},
		{"v2.1", ch("    channel_id: \"123\"\n    assertion_key_file: good.json\n    assertion_kid: k1\n    token_lifetime: 1h\n    token_renew_before: 10m\n"), nil},
		{"kid in the key", ch("    channel_id: \"123\"\n    assertion_key_file: withkid.json\n"), nil},
		{"PEM, PKCS #8", ch("    channel_id: \"123\"\n    assertion_key_file: pkcs8.pem\n    assertion_kid: k\n"), nil},
		{"PEM, PKCS #1", ch("    channel_id: \"123\"\n    assertion_key_file: pkcs1.pem\n    assertion_kid: k\n"), nil},
		{"public PEM", ch("    channel_id: \"123\"\n    assertion_key_file: public.pem\n    assertion_kid: k\n"), []string{"assertion_key_file", "want a private key"}},
		{"public JWK", ch("    channel_id: \"123\"\n    assertion_key_file: public.json\n"), []string{"assertion_key_file", "give the private half"}},
		{"token and channel id", "    channel_id: \"123\"\n", []string{"channels[0].channel_id", "not both"}},
		{"channel id not digits", ch("    channel_id: abc\n"), []string{"channels[1].channel_id", "digits"}},
		{"key without channel id", ch("    assertion_key_file: good.json\n    assertion_kid: k\n"), []string{"assertion_key_file", "needs channel_id"}},
		{"kid without key", ch("    channel_id: \"123\"\n    assertion_kid: k\n"), []string{"assertion_kid", "without assertion_key_file"}},
		{"lifetime of stateless", ch("    channel_id: \"123\"\n    token_lifetime: 1h\n"), []string{"token_lifetime", "stateless tokens live 15 minutes"}},
		{"lifetime too long", ch("    channel_id: \"123\"\n    assertion_key_file: good.json\n    assertion_kid: k\n    token_lifetime: 800h\n"), []string{"token_lifetime", "30 days"}},
		{"renew after expiry", ch("    channel_id: \"123\"\n    assertion_key_file: good.json\n    assertion_kid: k\n    token_lifetime: 1h\n    token_renew_before: 2h\n"), []string{"token_renew_before", "shorter than token_lifetime"}},
		{"renew of a given token", "    token_renew_before: 1m\n", []string{"token_renew_before", "channel_id"}},
		{"no kid", ch("    channel_id: \"123\"\n    assertion_key_file: good.json\n"), []string{"assertion_kid", "missing"}},
		{"two kids", ch("    channel_id: \"123\"\n    assertion_key_file: withkid.json\n    assertion_kid: other\n"), []string{"assertion_kid", "differs"}},
		{"short key", ch("    channel_id: \"123\"\n    assertion_key_file: short.json\n"), []string{"assertion_key_file", "1024 bits", "2048"}},
		{"not a key", ch("    channel_id: \"123\"\n    assertion_key_file: junk.json\n    assertion_kid: k\n"), []string{"assertion_key_file", "neither a JWK"}},
		{"missing key file", ch("    channel_id: \"123\"\n    assertion_key_file: none.json\n    assertion_kid: k\n"), []string{"assertion_key_file", "no such file"}},
		{"key in env and file", ch("    channel_id: \"123\"\n    assertion_key_file: good.json\n    assertion_key_env: K\n    assertion_kid: k\n"), []string{"assertion_key", "more than once"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, dir, gwConfig{chanExtra: tc.chanExtra})
			code, out := runCLI(t, "config", "check", "-config", p)
			if tc.want == nil {
				if code != 0 {
					t.Fatalf("config check = %d:\n%s", code, out)
				}
				return
			}
			if code != 1 {
				t.Fatalf("config check = %d, want 1:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			var k map[string]any
			for _, key := range []string{good, short} {
				json.Unmarshal([]byte(key), &k)
				if strings.Contains(out, k["d"].(string)) || strings.Contains(out, k["n"].(string)[:40]) {
					t.Errorf("the output holds the key:\n%s", out)
				}
			}
		})
	}
}

// TestChannelTokensDuringSecretRotation: while the config holds the old
// secret and the next one, and LINE (the simulator) knows only the next
// (the console has reissued it), stateless tokens are issued with the
// next secret, and the channel answers.
func TestChannelTokensDuringSecretRotation(t *testing.T) {
	dir := t.TempDir()
	apiAddr := freePort(t)
	simCfg := filepath.Join(dir, "sim.yaml")
	if err := os.WriteFile(simCfg, []byte(`log: {origin: example.com/sim}
channels:
  - {id: rotating, secret: new-channel-secret, channel_id: "1000000003"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	api := startSimAPI(t, apiAddr, simCfg)
	c := gwConfig{
		extra: "line_api_base: http://" + apiAddr + "\nrules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n",
		chanExtra: `  - id: rotating
    secret: old-channel-secret
    next_secret: new-channel-secret
    channel_id: "1000000003"
`,
	}
	g := startGateway(t, dir, c)
	var rt struct{ ReplyToken string }
	resp, err := httpClient.Post(api+"/_sim/reply-tokens?channel=rotating", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&rt)
	resp.Body.Close()
	body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,`+
		`"webhookEventId":"01ROTATE000000000000000001","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U%032d"},`+
		`"replyToken":%q,"message":{"id":"1","type":"text","text":"hello","quoteToken":"q"}}]}`, time.Now().UnixMilli(), 1, rt.ReplyToken)
	hdr := map[string]string{"X-Line-Signature": line.Sign([]byte("new-channel-secret"), body)}
	if code := postRaw(t, httpClient, g.webhook+"/webhook/rotating", hdr, body); code != 200 {
		t.Fatalf("webhook = %d", code)
	}
	waitUntil(t, "the reply", func() bool {
		for _, c := range simReplies(t, api) {
			if c.Channel == "rotating" && c.Status == 200 {
				return true
			}
		}
		return false
	})
	if toks := simTokens(t, api, "rotating"); len(toks) != 1 || toks[0].Type != sim.TokenStateless {
		t.Errorf("tokens issued: %+v", toks)
	}
	g.stop()
	for _, s := range []string{"old-channel-secret", "new-channel-secret"} {
		if strings.Contains(g.Logs(), s) {
			t.Error("the log holds a secret")
		}
	}
}

// TestChannelTokensUnavailable: a gateway whose channel cannot get a
// token (LINE unreachable) starts all the same, acknowledges and records
// the channel's webhooks, and logs the failed sends as no_access_token.
func TestChannelTokensUnavailable(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir, gwConfig{
		extra:     "line_api_base: http://" + closedPort(t) + "\nrules:\n  - name: hello\n    reply: [{type: text, text: hi}]\n",
		chanExtra: "  - id: issued\n    secret: issued-channel-secret\n    channel_id: \"1000000004\"\n",
	})
	body := textWebhook(1, "U"+strings.Repeat("1", 32), "hello")
	hdr := map[string]string{"X-Line-Signature": line.Sign([]byte("issued-channel-secret"), body)}
	if code := postRaw(t, httpClient, g.webhook+"/webhook/issued", hdr, body); code != 200 {
		t.Fatalf("webhook = %d", code)
	}
	waitUntil(t, "the failed send's log line", func() bool {
		return strings.Contains(g.Logs(), `"class":"no_access_token"`)
	})
	logs := g.Logs()
	if !strings.Contains(logs, "no channel access token: sends of this channel fail until one is issued") {
		t.Errorf("no log line for the token that failed at start:\n%s", logs)
	}
	_, metrics := g.get(t, g.admin+"/metrics")
	if n := metricValue(string(metrics), `linegate_channel_token_renewals_total{channel="issued",outcome="failed"}`); n < 1 {
		t.Errorf("failed renewals: %v", n)
	}
	g.stop()
	var webhooks, failed int
	for _, r := range readLedger(t, dir) {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			webhooks++
		case ledger.KindOutbound:
			var o struct {
				Outcome  string
				Attempts []struct {
					Status int
					Error  string
				}
			}
			json.Unmarshal(r.body, &o)
			if o.Outcome == "failed" && len(o.Attempts) > 0 && o.Attempts[0].Status == 0 &&
				strings.HasPrefix(o.Attempts[0].Error, "no channel access token: ") {
				failed++
			}
		}
	}
	if webhooks != 1 || failed != 1 {
		t.Errorf("%d webhooks and %d failed sends recorded, want 1 and 1", webhooks, failed)
	}
}
