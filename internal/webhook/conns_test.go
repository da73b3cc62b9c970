package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/webhook"
)

// TestSlowBodiesCannotStarve: a listener full of requests that send their
// bodies a byte at a time (with a read timeout far away) does not keep a
// signed webhook out: once their bodies have taken longer than
// webhook.BodyGrace, a new connection evicts the oldest of them.
func TestSlowBodiesCannotStarve(t *testing.T) {
	f := newFixture(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const max = 20
	lim := webhook.NewLimitListener(ln, webhook.ConnLimits{Max: max, PerClient: 2 * max})
	srv := &http.Server{Handler: f.h, ConnState: lim.Track, ConnContext: lim.ConnContext,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: time.Minute}
	go srv.Serve(lim)
	defer srv.Close()
	addr := ln.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	head := "POST /webhook/c1 HTTP/1.1\r\nHost: x\r\nX-Line-Signature: bad\r\nContent-Length: 100000\r\n\r\n{"
	for range max + max/2 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, head); err != nil {
			c.Close()
			continue // refused already
		}
		wg.Go(func() {
			defer c.Close()
			closed := make(chan struct{})
			go func() {
				io.Copy(io.Discard, c)
				close(closed)
			}()
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-closed:
					return
				case <-tick.C:
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // all accepted, or refused

	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	var lastErr error
	for time.Since(start) < 3*time.Second {
		req, err := http.NewRequest("POST", "http://"+addr+"/webhook/c1", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(line.SignatureHeader, line.Sign([]byte("s1"), body))
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err // refused: the listener is full
			time.Sleep(50 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("signed webhook = %d", resp.StatusCode)
		}
		t.Logf("signed webhook answered after %v", time.Since(start).Round(time.Millisecond))
		f.waitRecords(t, 1)
		return
	}
	t.Fatalf("a signed webhook beside %d slow bodies got no answer in %v: %v", max, time.Since(start).Round(time.Millisecond), lastErr)
}

// TestSlowBodyWithinGraceIsKept: a body that is still within
// webhook.BodyGrace is not cut for a new connection: the new one is
// refused, and the request completes.
func TestSlowBodyWithinGraceIsKept(t *testing.T) {
	f := newFixture(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := webhook.NewLimitListener(ln, webhook.ConnLimits{Max: 1, PerClient: 1})
	srv := &http.Server{Handler: f.h, ConnState: lim.Track, ConnContext: lim.ConnContext,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: time.Minute}
	go srv.Serve(lim)
	defer srv.Close()
	addr := ln.Addr().String()

	body := []byte(`{"destination":"U0123456789abcdef0123456789abcdef","events":[]}`)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /webhook/c1 HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s",
		line.SignatureHeader, line.Sign([]byte("s1"), body), len(body), body[:10])
	time.Sleep(100 * time.Millisecond)
	// A second connection finds the listener full of a body in its grace.
	c2, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Errorf("the second connection was not refused: %d bytes, %v", n, err)
	}
	c2.Close()
	if _, err := c.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status := make([]byte, 12)
	if _, err := io.ReadFull(c, status); err != nil || string(status) != "HTTP/1.1 200" {
		t.Fatalf("the first request = %q, %v", status, err)
	}
}
