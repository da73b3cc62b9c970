package console

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr is the address of the person behind the request: the peer's,
// or, when the peer is a trusted proxy (Options.TrustedProxies), the
// right-most address of X-Forwarded-For that is not itself a trusted
// proxy. proxy is the peer's address when the client's was taken from the
// header ("" otherwise). The header of a peer that is not trusted is
// never read.
func (c *Console) clientAddr(r *http.Request) (client, proxy string) {
	peer := remoteHost(r)
	if len(c.o.TrustedProxies) == 0 {
		return peer, ""
	}
	ip, err := netip.ParseAddr(peer)
	if err != nil || !c.trusted(ip) {
		return peer, ""
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	last := ip // the nearest trusted hop
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // not an address: the hop that added it is the client
		}
		a = a.Unmap()
		if !c.trusted(a) {
			return a.String(), peer
		}
		last = a
	}
	if last == ip {
		return peer, ""
	}
	return last.String(), peer
}

func (c *Console) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// remote adds the request's remote address to an action's detail: the
// client's, and the proxy's that told it.
func (c *Console) remote(r *http.Request, detail map[string]any) {
	client, proxy := c.clientAddr(r)
	if proxy == "" {
		detail["remote"] = r.RemoteAddr
		return
	}
	detail["remote"], detail["proxy"] = client, proxy
}

// ParseTrustedProxies reads CIDRs (or single addresses) of trusted
// proxies.
func ParseTrustedProxies(l []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range l {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, &net.ParseError{Type: "CIDR or address", Text: s}
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, &net.ParseError{Type: "CIDR", Text: s}
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
