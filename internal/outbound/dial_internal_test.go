package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestIsDialError classifies transport errors by their type: a request
// that could not resolve or connect never left; any later failure may
// have reached LINE.
func TestIsDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	// A real refusal, as the HTTP client reports it.
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, refused := hc.Post("http://"+addr+"/v2/bot/message/reply", "application/json", nil)
	if refused == nil {
		resp.Body.Close()
		t.Fatal("a closed port answered")
	}
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", refused, true},
		{"dial", &url.Error{Op: "Post", URL: "https://api.line.me", Err: dial}, true},
		{"proxy dial", &url.Error{Op: "Post", Err: &net.OpError{Op: "proxyconnect", Net: "tcp", Err: dial}}, true},
		{"no such host", &url.Error{Op: "Post", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.line.me", IsNotFound: true}}}, true},
		{"dns timeout", fmt.Errorf("resolve: %w", &net.DNSError{Err: "i/o timeout", IsTimeout: true}), true},
		{"read reset", &url.Error{Op: "Post", Err: &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}}, false},
		{"timeout", &url.Error{Op: "Post", Err: context.DeadlineExceeded}, false},
		{"text alone", errors.New("dial tcp: no such host"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isDialError(tt.err); got != tt.want {
				t.Errorf("isDialError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
