package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/proxy"
)

// proxyServer is the Messaging API proxy's listener and server.
type proxyServer struct {
	ln  net.Listener
	srv *http.Server
}

// noteReplies wraps the pipeline's action so that the proxy knows which
// event each reply token came with (a tool's reply is then recorded under
// the conversation's subjects, linked to its event), in the registry of
// reply tokens that the rules, people and tools all claim from. Without a
// proxy it is the action itself.
func (g *instance) noteReplies(next pipeline.Action) pipeline.Action {
	if g.cfg.Proxy == nil {
		return next
	}
	tokens := g.sender.ReplyTokens()
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, ev *line.Event) error {
		if ev != nil && ev.ReplyToken != "" {
			tokens.Note(it.Channel, ev.ReplyToken, it.Key, it.Record, it.Subjects)
		}
		return next.Handle(ctx, it, ev)
	})
}

// startProxy builds the Messaging API proxy, when the config has one, and
// opens its listener. Its calls go through the responder's clients (the
// channels' tokens, fixed or issued), its switches, rate limits and quota
// budgets, and its records through the ledger's one writer.
func (g *instance) startProxy(e *env) error {
	pc := g.cfg.Proxy
	if pc == nil {
		return nil
	}
	tools, err := g.cfg.proxyTools(e.getenv)
	if err != nil {
		return err
	}
	channels := map[string]proxy.Channel{}
	for _, ch := range g.cfg.Channels {
		data := pc.DataAPIBase
		if data == "" {
			data = ch.LineAPIBase
		}
		if data == "" {
			data = g.cfg.LineAPIBase
		}
		channels[ch.ID] = proxy.Channel{Client: g.sender.Client(ch.ID), DataBase: data, Retention: ch.Retention}
	}
	p, err := proxy.New(proxy.Options{Tools: tools, Channels: channels, Gate: g.sender, Consent: g.store, Ledger: g.led,
		ReplyOwners: g.replyOwners(pc.ReplyOwners), Replies: g.sender.ReplyTokens(), MaxBody: pc.MaxBodyBytes, Logger: g.log})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	g.reg.MustRegister(p.Collectors()...)
	ln, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	srv := withTimeouts(&http.Server{Handler: p}, g.log)
	// A content download may take longer than a webhook.
	srv.WriteTimeout = 0
	if pc.TLS != nil {
		cert, err := tls.LoadX509KeyPair(pc.TLS.CertFile, pc.TLS.KeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("proxy.tls: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if pc.TLS.MinVersion == "1.3" {
			srv.TLSConfig.MinVersion = tls.VersionTLS13
		}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	g.proxy = &proxyServer{ln: ln, srv: srv}
	g.log.Info("proxy listening", "addr", ln.Addr().String(), "tls", pc.TLS != nil, "tools", len(tools))
	return nil
}

// serve serves the proxy until shutdown (nothing without a proxy).
func (s *proxyServer) serve() error {
	if s == nil {
		return nil
	}
	return serveUntilClosed(s.srv, s.ln)
}

// shutdown stops the proxy taking requests and waits for those in flight,
// which finish their records.
func (s *proxyServer) shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}
