package rules

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
)

func TestAllowedHostPorts(t *testing.T) {
	for _, tt := range []struct {
		entry, url string
		ok         bool
	}{
		{"orders.example", "https://orders.example/x", true},
		{"orders.example", "http://orders.example/x", true},
		{"orders.example", "https://orders.example:443/x", true},
		{"orders.example", "http://orders.example:80/x", true},
		{"orders.example", "https://orders.example:8443/x", false},
		{"orders.example", "http://orders.example:443/x", false},
		{"orders.example", "https://orders.example:80/x", false},
		{"orders.example:8443", "https://orders.example:8443/x", true},
		{"orders.example:8443", "https://orders.example/x", false},
		{"ORDERS.example.", "https://orders.EXAMPLE/x", true},
		{"127.0.0.1:19091", "http://127.0.0.1:19091/x", true},
		{"127.0.0.1:19091", "http://127.0.0.1/x", false},
		{"127.0.0.1:19091", "http://127.0.0.1:80/x", false},
		{"127.0.0.1:19091", "http://localhost:19091/x", false},
		{"[::1]:8080", "http://[::1]:8080/x", true},
		{"::1", "http://[::1]/x", true},
		{"[::1]", "http://[::1]:8080/x", false},
		{"orders.example", "https://orders.example.evil.example/x", false},
	} {
		e, err := parseHostEntry(tt.entry)
		if err != nil {
			t.Fatalf("%s: %v", tt.entry, err)
		}
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := allowedHost([]hostEntry{e}, u); got != tt.ok {
			t.Errorf("lookup_hosts [%s], %s: allowed %v, want %v", tt.entry, tt.url, got, tt.ok)
		}
	}
	for _, bad := range []string{"", "http://orders.example", "orders.example:0", "orders.example:http", "orders.example:65536",
		"orders.example/x", "user@orders.example", "[::1", "fe80::zz", "orders.example:08080"} {
		if err := CheckLookupHosts([]string{bad}); err == nil {
			t.Errorf("lookup_hosts entry %q accepted", bad)
		}
	}
}

// TestFenceAtDialTime: whatever URL a request carries, the client dials
// only the address of its fence, and a loopback fence connects only to
// loopback addresses.
func TestFenceAtDialTime(t *testing.T) {
	var hits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer other.Close()
	c := fencedClient()
	fenced := mustParse(t, "http://127.0.0.1:1/")
	for _, ctx := range []context.Context{context.Background(), withFence(context.Background(), fenced, false)} {
		req, err := http.NewRequestWithContext(ctx, "GET", other.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := c.Do(req); err == nil || !errors.Is(err, errOutsideFence) {
			if resp != nil {
				resp.Body.Close()
			}
			t.Errorf("a request outside its fence: %v", err)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the host outside the fence was called %d times", hits.Load())
	}
	// The name passes the dial check; what it resolves to is checked as
	// the socket connects (a rebinding DNS answer).
	for _, tt := range []struct {
		fence    fence
		resolved string
		ok       bool
	}{
		{fence{host: "localhost", port: "8080", loopback: true}, "127.0.0.1:8080", true},
		{fence{host: "localhost", port: "8080", loopback: true}, "[::1]:8080", true},
		{fence{host: "localhost", port: "8080", loopback: true}, "10.0.0.7:8080", false},
		{fence{host: "orders.example", port: "443"}, "10.0.0.7:443", true},
		{fence{host: "orders.example", port: "443"}, "10.0.0.7:22", false},
		{fence{host: "orders.example", port: "443"}, "127.0.0.1:443", false},
		{fence{host: "orders.example", port: "443"}, "169.254.169.254:443", false},
		{fence{host: "orders.example", port: "443"}, "[fe80::1]:443", false},
		{fence{host: "orders.example", port: "443"}, "0.0.0.0:443", false},
		{fence{host: "orders.example", port: "443"}, "[::ffff:169.254.169.254]:443", false},
		{fence{host: "169.254.169.254", port: "80"}, "169.254.169.254:80", true}, // listed by address
		{fence{host: "127.0.0.1", port: "8080"}, "127.0.0.2:8080", false},
		{fence{host: "127.0.0.1", port: "8080"}, "[::ffff:127.0.0.1]:8080", true},
	} {
		if err := tt.fence.checkResolved(tt.resolved); (err == nil) != tt.ok {
			t.Errorf("fence %+v, connecting to %s: %v, want ok %v", tt.fence, tt.resolved, err, tt.ok)
		}
	}
	req, err := http.NewRequestWithContext(withFence(context.Background(), mustParse(t, other.URL), true), "GET", other.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("a request inside its fence: %v", err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Errorf("%d calls inside the fence, want 1", hits.Load())
	}
}

func mustParse(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
