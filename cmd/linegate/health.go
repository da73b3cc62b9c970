package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// health is a probe for container health checks: a distroless or scratch
// image has no curl and no shell, so the binary probes itself. It is
// registered here, beside its code, rather than in main's table.
func init() {
	commands = append(commands, command{"health", "probe a running gateway's /readyz, for container health checks (exit 0: ready)", runHealth})
}

func runHealth(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "health", "[-url URL] [-timeout D]")
	url := fs.String("url", "http://127.0.0.1:8081/readyz",
		"what to probe: the admin listener's /readyz (the ledger takes a write) or /healthz (the process lives)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
		return fmt.Errorf("%w: -url %q: want http:// or https://", errUsage, *url)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", *url, nil)
	if err != nil {
		return fmt.Errorf("%w: -url: %v", errUsage, err)
	}
	// No proxy: the probe is for this machine's (or container's) gateway.
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("not healthy: %w", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 512)).ReadString('\n')
	line = strings.TrimSpace(line)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not healthy: %s answered %s: %s", *url, resp.Status, line)
	}
	fmt.Fprintln(e.stdout, line)
	return nil
}
