package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/line"
)

// nodeSDKDir holds the Node.js scripts built on LINE's Node.js SDK
// (@line/bot-sdk, installed by `npm ci` there).
var nodeSDKDir = filepath.Join("..", "..", "internal", "proxy", "testdata", "node")

// needNode skips the test when Node.js or the SDK is not installed, unless
// LINEGATE_REQUIRE_NODE=1 (CI), where it fails.
func needNode(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeSDKDir, "node_modules", "@line", "bot-sdk", "package.json"))
	}
	if err != nil {
		if os.Getenv("LINEGATE_REQUIRE_NODE") == "1" {
			t.Fatalf("LINEGATE_REQUIRE_NODE=1 but Node.js or @line/bot-sdk is missing (run npm ci in %s): %v", nodeSDKDir, err)
		}
		t.Skipf("Node.js or @line/bot-sdk missing (npm ci in %s): %v", nodeSDKDir, err)
	}
}

// runNode runs one of the Node.js scripts with extra environment and
// standard input, and returns its standard output.
func runNode(t *testing.T, script string, env []string, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Dir = nodeSDKDir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	return string(out)
}

// nodeVerifies reports whether LINE's Node.js SDK's webhook middleware
// accepts body with signature under secret.
func nodeVerifies(t *testing.T, secret string, body []byte, signature string) bool {
	t.Helper()
	needNode(t)
	switch out := strings.TrimSpace(runNode(t, "verify.js", nil, body, secret, signature)); out {
	case "valid":
		return true
	case "invalid":
		return false
	default:
		t.Fatalf("verify.js: %q", out)
		return false
	}
}

// TestNodeVerifies: the Node.js SDK's middleware accepts what linegate's
// signing function signs, and refuses another secret or a changed body.
func TestNodeVerifies(t *testing.T) {
	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":1,"source":{"type":"user","userId":"U1"},"webhookEventId":"01H","deliveryContext":{"isRedelivery":false},"message":{"id":"1","type":"text","text":"héllo ✓","quoteToken":"q"}}]}`)
	sig := line.Sign([]byte(testSecret), body)
	if !nodeVerifies(t, testSecret, body, sig) {
		t.Error("the Node.js SDK refused a body signed by line.Sign")
	}
	if nodeVerifies(t, "another-secret", body, sig) {
		t.Error("the Node.js SDK accepted the signature under another secret")
	}
	changed := bytes.Replace(body, []byte("héllo"), []byte("hello"), 1)
	if nodeVerifies(t, testSecret, changed, sig) {
		t.Error("the Node.js SDK accepted a changed body")
	}
}
