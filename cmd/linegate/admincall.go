package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// adminClient is a command's way to a running gateway's admin API: the
// listener's URL and the admin token, from the gateway's config or the
// -admin flag.
type adminClient struct {
	base  string
	token []byte
}

// newAdminClient reads the gateway's config at configPath (default: the
// built-in example) for its admin token and listener; adminURL, if set,
// names the listener instead.
func newAdminClient(e *env, configPath, adminURL string) (*adminClient, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	token, err := cfg.adminToken(e.getenv)
	if err != nil {
		return nil, err
	}
	base := adminURL
	if base == "" {
		base = adminBase(cfg.AdminListen)
	}
	base = strings.TrimSuffix(base, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("%w: -admin %q: want http:// or https://", errUsage, base)
	}
	return &adminClient{base: base, token: token}, nil
}

// post sends in as JSON to path and decodes a 200 answer into out; any
// other status is an error quoting the answer.
func (a *adminClient) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	u := a.base + path
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: -admin: %v", errUsage, err)
	}
	req.Header.Set("Authorization", "Bearer "+string(a.token))
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("the gateway's admin listener: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	return nil
}

// adminBase is the URL of an admin listener address: a wildcard host is
// this machine.
func adminBase(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
