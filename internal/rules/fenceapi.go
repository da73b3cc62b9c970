package rules

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// FencedClient returns an HTTP client for calls that must stay inside a
// fence (WithFence): it dials only the fenced host and port, through no
// proxy, and follows no redirect (a 3xx is the answer). Other packages'
// outbound calls (fan-out destinations) share the forwards' fences.
func FencedClient() *http.Client { return fencedClient() }

// WithFence returns ctx carrying the fence of a request to u: the request
// may dial u's host and port alone; with loopback, only on a loopback
// address.
func WithFence(ctx context.Context, u *url.URL, loopback bool) context.Context {
	return withFence(ctx, u, loopback)
}

// OutsideFence reports whether err is a call refused by its fence.
func OutsideFence(err error) bool { return errors.Is(err, errOutsideFence) }
