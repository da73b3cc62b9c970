package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/linegate/linegate/internal/proxy"
)

// ProxyConfig configures the Messaging API proxy: a listener of its own
// that speaks LINE's Messaging API to the account's other tools, carries
// their calls to LINE with the channel's token and records each one
// (docs/PROXY.md).
type ProxyConfig struct {
	// Listen is the proxy's address (required), such as 127.0.0.1:8090.
	Listen string `yaml:"listen"`
	// TLS, if set, makes the proxy serve HTTPS itself.
	TLS *TLSConfig `yaml:"tls"`
	// DataAPIBase is LINE's data API host, for message content and rich
	// menu images (default https://api-data.line.me; with line_api_base
	// set and this unset, line_api_base, as the simulator serves both).
	DataAPIBase string `yaml:"data_api_base"`
	// MaxBodyBytes caps a tool's request body (default 2 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ReplyOwners names, by channel id, the destination that owns the
	// channel's reply tokens: only a tool whose destination it is may
	// reply. A channel not named here takes no replies from tools.
	ReplyOwners map[string]string `yaml:"reply_owners"`
	// Tools are the tools that may call through the proxy.
	Tools []ProxyToolConfig `yaml:"tools"`
}

// ProxyToolConfig is one tool of the proxy.
type ProxyToolConfig struct {
	// Name names the tool in the ledger, logs and metrics.
	Name string `yaml:"name"`
	// The tool's proxy token, which it gives its SDK as the channel
	// access token: exactly one of token, token_env, token_file. Not the
	// channel's token: linegate keeps that.
	Token     string `yaml:"token"`
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
	// Channels are the ids of the channels the tool may act for. With
	// several, the tool's base URL names one: .../channels/{id}.
	Channels []string `yaml:"channels"`
	// Endpoints are the calls the tool may make, "METHOD /v2/bot/..."
	// with "*" for one path segment; default: the message sends (push,
	// reply, multicast, broadcast, narrowcast).
	Endpoints []string `yaml:"endpoints"`
	// Destination is the fan-out destination the tool is; it may reply
	// when that destination owns the channel's reply tokens.
	Destination string `yaml:"destination"`
	// PushClass is the consent class of the tool's pushes:
	// "transactional" (default) or "promotional" (only to users who
	// opted in).
	PushClass string `yaml:"push_class"`
	// AllowBroadcast lets the tool's broadcasts and narrowcasts through;
	// linegate cannot check their recipients' consent, so by default
	// they are refused.
	AllowBroadcast bool `yaml:"allow_broadcast"`
}

// checkProxy checks the proxy section and applies its defaults.
func (c *Config) checkProxy(p *configParser) {
	pc := c.Proxy
	if pc == nil {
		return
	}
	if _, port, err := net.SplitHostPort(pc.Listen); err != nil || port == "" {
		p.fail("proxy.listen", "%q: want host:port, such as 127.0.0.1:8090", pc.Listen)
	}
	if pc.TLS != nil && (pc.TLS.CertFile == "" || pc.TLS.KeyFile == "") {
		p.fail("proxy.tls", "cert_file and key_file are required with tls")
	}
	if pc.MaxBodyBytes < 0 {
		p.fail("proxy.max_body_bytes", "%d: want a positive number of bytes (default 2097152)", pc.MaxBodyBytes)
	}
	if pc.DataAPIBase != "" && !strings.HasPrefix(pc.DataAPIBase, "https://") && !strings.HasPrefix(pc.DataAPIBase, "http://") {
		p.fail("proxy.data_api_base", "%q: want a URL such as https://api-data.line.me", pc.DataAPIBase)
	}
	channels := map[string]bool{}
	for _, ch := range c.Channels {
		channels[ch.ID] = true
	}
	for ch := range pc.ReplyOwners {
		if !channels[ch] {
			p.fail("proxy.reply_owners."+ch, "no channel has this id")
		}
	}
	if len(pc.Tools) == 0 {
		p.fail("proxy.tools", "required: at least one tool, with its name, token and channels")
	}
	names := map[string]bool{}
	for i, t := range pc.Tools {
		at := fmt.Sprintf("proxy.tools[%d]", i)
		if t.Name == "" || names[t.Name] {
			p.fail(at+".name", "%q: required, and different from the other tools'", t.Name)
		}
		names[t.Name] = true
		if len(t.Channels) == 0 {
			p.fail(at+".channels", "required: the ids of the channels the tool acts for")
		}
		for _, ch := range t.Channels {
			if !channels[ch] {
				p.fail(at+".channels", "%q: no channel has this id", ch)
			}
		}
		switch t.PushClass {
		case "", "transactional", "promotional":
		default:
			p.fail(at+".push_class", "%q: want transactional or promotional", t.PushClass)
		}
		for _, e := range t.Endpoints {
			if err := proxy.CheckEndpoint(e); err != nil {
				p.fail(at+".endpoints", "%v", err)
			}
		}
	}
}

// proxyTools resolves the tools' tokens.
func (c *Config) proxyTools(getenv func(string) string) ([]proxy.Tool, error) {
	var tools []proxy.Tool
	for i, t := range c.Proxy.Tools {
		tok, err := (secretSource{"token", t.Token, t.TokenEnv, t.TokenFile}).resolve(getenv, true)
		if err != nil {
			return nil, c.site.locate(fmt.Sprintf("proxy.tools[%d]", i), err)
		}
		tools = append(tools, proxy.Tool{Name: t.Name, Token: tok, Channels: t.Channels, Endpoints: t.Endpoints,
			Destination: t.Destination, PromotionalPush: t.PushClass == "promotional", AllowBroadcast: t.AllowBroadcast})
	}
	return tools, nil
}
