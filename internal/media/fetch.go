package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultDataAPIBase is LINE's data API, which serves message content.
const DefaultDataAPIBase = "https://api-data.line.me"

// Channel is what the worker needs of a channel to fetch its content.
type Channel struct {
	// DataAPIBase is the base URL of the data API (default
	// DefaultDataAPIBase).
	DataAPIBase string
	// Token gives the channel access token; its error never holds one.
	Token func(ctx context.Context) ([]byte, error)
	// Unsend is the channel's policy for unsent messages: "keep" (the
	// default) or "delete".
	Unsend string
}

// errNotFound is LINE's 404 for content: expired, or never there.
var errNotFound = errors.New("content not found (404)")

// errTooLarge is content beyond the bound.
var errTooLarge = errors.New("content larger than the configured bound")

// errTranscodingFailed is LINE's transcoding status "failed".
var errTranscodingFailed = errors.New("LINE's transcoding failed")

// permanent marks an error that a retry cannot mend.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// fetched is content fetched, with what the answer said.
type fetched struct {
	content     []byte
	contentType string
	requestID   string
	size        int64 // the size announced, when the content was too large
}

// fetcher fetches content with a bounded body and no redirects.
type fetcher struct {
	http     *http.Client
	maxBytes int64
	poll     time.Duration // between transcoding polls
	wait     time.Duration // how long transcoding is waited for, at most
}

// newHTTPClient returns a client that never follows a redirect and times
// out.
func newHTTPClient(timeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if dial != nil {
		tr.DialContext = dial
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirect refused")
		},
	}
}

// lineContent fetches a message's content from LINE's data API: for video
// and audio it first waits until LINE's transcoding succeeded.
func (f *fetcher) lineContent(ctx context.Context, ch Channel, msgType, id string) (*fetched, error) {
	base := strings.TrimRight(ch.DataAPIBase, "/")
	if base == "" {
		base = DefaultDataAPIBase
	}
	if ch.Token == nil {
		return nil, permanent{errors.New("no channel access token")}
	}
	tok, err := ch.Token(ctx)
	if err != nil {
		return nil, err
	}
	path := base + "/v2/bot/message/" + url.PathEscape(id) + "/content"
	if msgType == "video" || msgType == "audio" {
		if err := f.transcoded(ctx, path+"/transcoding", tok); err != nil {
			return nil, err
		}
	}
	return f.get(ctx, path, tok)
}

// transcoded polls the transcoding status until it is "succeeded", within
// f.wait.
func (f *fetcher) transcoded(ctx context.Context, u string, tok []byte) error {
	deadline := time.Now().Add(f.wait)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return permanent{errors.New("bad content URL")}
		}
		req.Header.Set("Authorization", "Bearer "+string(tok))
		resp, err := f.http.Do(req)
		if err != nil {
			return fmt.Errorf("transcoding status: %s", scrub(err))
		}
		var st struct {
			Status string `json:"status"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&st)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return permanent{errNotFound}
		case resp.StatusCode != http.StatusOK:
			return statusError(resp.StatusCode)
		case err != nil:
			return errors.New("transcoding status: malformed answer")
		case st.Status == "succeeded":
			return nil
		case st.Status == "failed":
			return permanent{errTranscodingFailed}
		}
		if time.Now().Add(f.poll).After(deadline) {
			return fmt.Errorf("transcoding still %q after %s", st.Status, f.wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.poll):
		}
	}
}

// get fetches u (with a bearer token when tok is not nil), reading at most
// maxBytes.
func (f *fetcher) get(ctx context.Context, u string, tok []byte) (*fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, permanent{errors.New("bad content URL")}
	}
	if tok != nil {
		req.Header.Set("Authorization", "Bearer "+string(tok))
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("content: %s", scrub(err))
	}
	defer resp.Body.Close()
	out := &fetched{contentType: resp.Header.Get("Content-Type"), requestID: resp.Header.Get("X-Line-Request-Id")}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return out, permanent{errNotFound}
	case resp.StatusCode != http.StatusOK:
		return out, statusError(resp.StatusCode)
	}
	if resp.ContentLength > f.maxBytes {
		out.size = resp.ContentLength
		return out, permanent{errTooLarge}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return out, fmt.Errorf("content: %s", scrub(err))
	}
	if int64(len(b)) > f.maxBytes {
		return out, permanent{errTooLarge}
	}
	out.content = b
	return out, nil
}

// statusError is an HTTP status that is not success: 4xx other than 429
// are permanent, the rest may pass.
func statusError(code int) error {
	err := fmt.Errorf("HTTP status %d", code)
	if code/100 == 4 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout {
		return permanent{err}
	}
	return err
}

// scrub describes a transport error without its URL.
func scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// sum returns the hex SHA-256 of b.
func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Fence is the allow-list of hosts that external content may be fetched
// from: "host:port", or "host" for the scheme's default port. Redirects
// are never followed.
type Fence []string

// allows reports whether u is on the list.
func (f Fence) allows(u *url.URL) bool {
	if u.Scheme != "https" && u.Scheme != "http" {
		return false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	for _, e := range f {
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			h, p = e, map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
		if strings.EqualFold(strings.Trim(h, "[]"), host) && p == port {
			return true
		}
	}
	return false
}

// FetchURL fetches an image by its URL inside the fence, at most maxBytes,
// and returns its content, its Content-Type, or why not. For images that
// linegate sends, hashed at send time.
func FetchURL(ctx context.Context, fence Fence, raw string, maxBytes int64, timeout time.Duration) ([]byte, string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, "", errors.New("not a URL")
	}
	if !fence.allows(u) {
		return nil, "", errors.New("host not in the allowed hosts")
	}
	f := &fetcher{http: newHTTPClient(timeout, nil), maxBytes: maxBytes}
	got, err := f.get(ctx, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	return got.content, got.contentType, nil
}
