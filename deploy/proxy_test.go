package deploy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and
// linegate.example.com into dir, and returns its files and a client that
// trusts it (LINE itself wants a CA's certificate; the test is its own CA).
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, client *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "linegate.example.com"},
		DNSNames:     []string{"linegate.example.com"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil}}
	return certFile, keyFile, client
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProxy runs a proxy command until the test ends, and waits until
// base answers over HTTPS.
func startProxy(t *testing.T, client *http.Client, base string, cmd *exec.Cmd) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited: %s", filepath.Base(cmd.Path), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer over HTTPS: %v\n%s", filepath.Base(cmd.Path), err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// throughProxy sends webhooks to the gateway through the proxy at base
// and checks what arrives: a signed webhook is answered 200 and recorded
// byte for byte (LINE's escaped emoji and all), with the proxy's headers
// saying it came over HTTPS; a bad signature is 401; the admin listener's
// paths are not public; a body over the cap ends at the proxy.
func throughProxy(t *testing.T, g *gateway, client *http.Client, base string) {
	t.Helper()
	body := fmt.Appendf(nil, `{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":"01PROXY0000000000000000001","deliveryContext":{"isRedelivery":false},"source":{"type":"user","userId":"U1"},"replyToken":"r1","message":{"id":"1","type":"text","text":"through the proxy \uD83E\uDD28","quoteToken":"q"}}]}`,
		time.Now().UnixMilli())
	post := func(sig string, b []byte) int {
		t.Helper()
		req, err := http.NewRequest("POST", base+"/webhook/shop", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("User-Agent", "LineBotWebhook/2.0")
		if sig != "" {
			req.Header.Set("X-Line-Signature", sig)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write(body)
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if code := post(sig, body); code != 200 {
		t.Fatalf("signed webhook through the proxy = %d, want 200", code)
	}
	if code := post("bm90IGEgc2lnbmF0dXJl", body); code != 401 {
		t.Errorf("bad signature through the proxy = %d, want 401", code)
	}
	for path, want := range map[string]int{"/readyz": 200, "/metrics": 404, "/log/checkpoint": 404, "/admin/status": 404} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s through the proxy = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A body over the cap ends at the proxy.
	resp, err := client.Post(base+"/webhook/shop", "application/json", bytes.NewReader(make([]byte, 2<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a 2 MiB body through the proxy = %d, want 413", resp.StatusCode)
	}
	g.stop()
	if strings.Contains(g.Logs(), `"class":"too_large"`) {
		t.Errorf("the 2 MiB body reached linegate: the proxy let it through")
	}
	recs := webhookRecords(t, g.dir)
	if len(recs) != 1 {
		t.Fatalf("%d webhook records, want 1", len(recs))
	}
	r := recs[0]
	if !bytes.Equal(r.body, body) {
		t.Errorf("recorded body differs from the one sent:\n got %s\nwant %s", r.body, body)
	}
	if r.meta.Channel != "shop" || r.meta.Verifier == "" {
		t.Errorf("record metadata: channel %q, verifier %q", r.meta.Channel, r.meta.Verifier)
	}
	if p := r.meta.Headers["X-Forwarded-Proto"]; len(p) != 1 || p[0] != "https" {
		t.Errorf("X-Forwarded-Proto = %q: want https, set by the proxy", p)
	}
}

// TestNginx: deploy/nginx/linegate.conf in front of linegate, over HTTPS.
func TestNginx(t *testing.T) {
	nginx := need(t, "nginx")
	dir := t.TempDir()
	g := startGateway(t, dir, installConfig(t, dir, nil))
	cert, key, client := selfSigned(t, dir)
	port, httpPort := freePort(t), freePort(t)
	b, err := os.ReadFile("nginx/linegate.conf")
	if err != nil {
		t.Fatal(err)
	}
	site := replaceAll(t, string(b),
		"listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d ssl;", port),
		"listen [::]:443 ssl;", "",
		"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort),
		"listen [::]:80;", "",
		"/etc/letsencrypt/live/linegate.example.com/fullchain.pem", cert,
		"/etc/letsencrypt/live/linegate.example.com/privkey.pem", key,
		"server 127.0.0.1:8080;", "server "+g.webhook+";",
	)
	ngx := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ngx, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ngx, "linegate.conf"), []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	// The rest of a system's nginx.conf, in the test's directory; one
	// process, as whoever runs the test.
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/linegate.conf;
}
`, ngx)
	if err := os.WriteFile(filepath.Join(ngx, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-t", "-p", ngx, "-c", filepath.Join(ngx, "nginx.conf"), "-e", "stderr").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	startProxy(t, client, base, exec.Command(nginx, "-p", ngx, "-c", filepath.Join(ngx, "nginx.conf"), "-e", "stderr"))
	throughProxy(t, g, client, base)
}

// TestCaddy: deploy/caddy/Caddyfile in front of linegate, over HTTPS.
func TestCaddy(t *testing.T) {
	caddy := need(t, "caddy")
	dir := t.TempDir()
	g := startGateway(t, dir, installConfig(t, dir, nil))
	cert, key, client := selfSigned(t, dir)
	port := freePort(t)
	b, err := os.ReadFile("caddy/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	cd := filepath.Join(dir, "caddy")
	site := replaceAll(t, string(b),
		// The test's certificate instead of one from a CA; no admin
		// endpoint, no redirect listener on port 80.
		"\tservers {", fmt.Sprintf("\tadmin off\n\tauto_https off\n\tstorage file_system %s\n\tservers {", cd),
		"linegate.example.com {", fmt.Sprintf("https://127.0.0.1:%d {\n\ttls %s %s", port, cert, key),
		"reverse_proxy 127.0.0.1:8080", "reverse_proxy "+g.webhook,
	)
	if err := os.MkdirAll(cd, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(cd, "Caddyfile")
	if err := os.WriteFile(file, []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+cd, "XDG_DATA_HOME="+cd, "XDG_CONFIG_HOME="+cd)
	validate := exec.Command(caddy, "validate", "--config", file, "--adapter", "caddyfile")
	validate.Env = env
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	run := exec.Command(caddy, "run", "--config", file, "--adapter", "caddyfile")
	run.Env = env
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	startProxy(t, client, base, run)
	throughProxy(t, g, client, base)
}
