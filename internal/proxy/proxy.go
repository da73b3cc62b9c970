// Package proxy is linegate's Messaging API proxy: a listener that speaks
// LINE's Messaging API to the other tools of an Official Account (a CRM, a
// helpdesk, another bot), so that their sends pass linegate too. A tool
// points its SDK's base URL at the proxy and authenticates with a proxy
// token of its own; the proxy checks what the tool may call, applies the
// kill switch, dry-run, consent, the quota budget and the rate limit that
// linegate's own sends obey, calls LINE with the channel's real token
// (package outbound's client), records the request and LINE's answer in
// the ledger, and hands LINE's answer back to the tool.
//
// Every request a known tool makes is one ledger record (KindOutbound,
// with Tool set), written before the tool gets its answer, whether it was
// sent, held back, refused or failed. Requests with an unknown token are
// answered 401 and not recorded (they carry no tool to hold to account).
package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDataBase is LINE's data API host, which serves message content
// and rich menu images.
const DefaultDataBase = "https://api-data.line.me"

// DefaultMaxBody caps a tool's request body (LINE's own limit for message
// requests is 2 MiB).
const DefaultMaxBody = 2 << 20

// ReplyOwners says which fan-out destination owns the reply tokens of a
// channel's events: the one tool whose Destination it names may reply.
// Safe for concurrent use.
type ReplyOwners interface {
	// ReplyOwner returns the name of the destination that owns the
	// channel's reply tokens, "" when none does.
	ReplyOwner(channel string) string
}

// StaticReplyOwners is a ReplyOwners from the configuration: channel id to
// destination name.
type StaticReplyOwners map[string]string

// ReplyOwner implements ReplyOwners.
func (m StaticReplyOwners) ReplyOwner(channel string) string { return m[channel] }

// Gate is the switches and limits that linegate's own sends obey
// (*outbound.Sender). Its methods are safe for concurrent use.
type Gate interface {
	// KillSwitch reports whether every send is held back.
	KillSwitch() bool
	// DryRun reports whether the channel is in dry-run.
	DryRun(channel string) bool
	// Wait waits for the channel's rate limit, until ctx ends.
	Wait(ctx context.Context, channel string) error
	// QuotaHeld returns why a promotional send is held back by the
	// channel's quota budget, "" when it may go.
	QuotaHeld(ctx context.Context, channel string) string
	// CountQuota notes n messages sent on the channel.
	CountQuota(channel string, n int64)
}

// Consent reports a user's consent to promotional messages (the latest
// consent record is an opt-in).
type Consent interface {
	OptedIn(ctx context.Context, channel, user string) (bool, error)
}

// Tool is one tool that may call LINE through the proxy.
type Tool struct {
	// Name names the tool in records, logs and metrics.
	Name string
	// Token is the proxy token the tool sends as its bearer token.
	Token []byte
	// Channels are the channels the tool may act for.
	Channels []string
	// Endpoints are the calls the tool may make: "METHOD /path" patterns
	// where "*" stands for one path segment (see DefaultEndpoints).
	Endpoints []string
	// Destination is the fan-out destination the tool is: it may reply
	// with reply tokens when that destination owns them.
	Destination string
	// PromotionalPush makes the tool's pushes promotional: sent only to
	// users who opted in. Otherwise pushes are transactional.
	PromotionalPush bool
	// AllowBroadcast lets the tool's broadcasts and narrowcasts through,
	// whose recipients linegate cannot check for consent; without it they
	// are refused.
	AllowBroadcast bool
}

// DefaultEndpoints are the calls a tool may make when its configuration
// names none: message sends.
var DefaultEndpoints = []string{
	"POST /v2/bot/message/push",
	"POST /v2/bot/message/reply",
	"POST /v2/bot/message/multicast",
	"POST /v2/bot/message/broadcast",
	"POST /v2/bot/message/narrowcast",
}

// Channel is what the proxy needs of a channel.
type Channel struct {
	// Client calls LINE with the channel's token (a fixed one or one
	// linegate issues and renews).
	Client *outbound.Client
	// DataBase is the data API host (default DefaultDataBase).
	DataBase string
	// Retention is the retention class of the channel's records.
	Retention string
}

// Appender records in the ledger; *ledger.Ledger implements it.
type Appender = outbound.Appender

// Options configures a Proxy.
type Options struct {
	Tools    []Tool
	Channels map[string]Channel
	Gate     Gate
	Consent  Consent
	Ledger   Appender
	// ReplyOwners says who may reply; nil: nobody.
	ReplyOwners ReplyOwners
	// Replies is the process's registry of reply tokens (the Sender's):
	// it links a reply to the event whose token it uses (its subjects and
	// event key, for exports), and a tool's reply claims the token there,
	// as linegate's rules and people's replies do. Default: one of the
	// proxy's own.
	Replies *outbound.ReplyTokens
	// MaxBody caps request bodies (default DefaultMaxBody).
	MaxBody int64
	Logger  *slog.Logger
	Now     func() time.Time
}

// Proxy is the Messaging API proxy's http.Handler.
type Proxy struct {
	o     Options
	tools []*tool

	requests *prometheus.CounterVec
	// fails writes the failures' log lines, at most one per class and
	// channel every few seconds, with counts: a tool that keeps failing
	// cannot flood the log.
	fails *oplog.Limiter
}

type tool struct {
	Tool
	sum      [32]byte // SHA-256 of the token
	channels map[string]bool
	allow    []pattern
}

// New checks the options and returns a Proxy.
func New(o Options) (*Proxy, error) {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Gate == nil || o.Consent == nil || o.Ledger == nil {
		return nil, errors.New("proxy: a gate, a consent source and a ledger are required")
	}
	if o.Replies == nil {
		o.Replies = outbound.NewReplyTokens(0)
	}
	p := &Proxy{o: o, fails: oplog.NewLimiter(o.Logger, oplog.Every)}
	names := map[string]bool{}
	for _, t := range o.Tools {
		if t.Name == "" || names[t.Name] {
			return nil, fmt.Errorf("proxy: tool name %q: empty or repeated", t.Name)
		}
		names[t.Name] = true
		if len(t.Token) == 0 {
			return nil, fmt.Errorf("proxy: tool %q: no token", t.Name)
		}
		tt := &tool{Tool: t, sum: sha256.Sum256(t.Token), channels: map[string]bool{}}
		for _, other := range p.tools {
			if other.sum == tt.sum {
				return nil, fmt.Errorf("proxy: tools %q and %q have the same token", other.Name, t.Name)
			}
		}
		if len(t.Channels) == 0 {
			return nil, fmt.Errorf("proxy: tool %q: no channel", t.Name)
		}
		for _, ch := range t.Channels {
			if _, ok := o.Channels[ch]; !ok {
				return nil, fmt.Errorf("proxy: tool %q: unknown channel %q", t.Name, ch)
			}
			tt.channels[ch] = true
		}
		eps := t.Endpoints
		if len(eps) == 0 {
			eps = DefaultEndpoints
		}
		for _, e := range eps {
			pt, err := parsePattern(e)
			if err != nil {
				return nil, fmt.Errorf("proxy: tool %q: %w", t.Name, err)
			}
			tt.allow = append(tt.allow, pt)
		}
		p.tools = append(p.tools, tt)
	}
	p.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linegate_proxy_requests_total",
		Help: "Requests of tools through the Messaging API proxy, by tool, endpoint and outcome (sent, forwarded, failed, suppressed, dry_run, blocked, held, refused).",
	}, []string{"tool", "endpoint", "outcome"})
	return p, nil
}

// Collectors returns the proxy's metrics.
func (p *Proxy) Collectors() []prometheus.Collector { return []prometheus.Collector{p.requests} }

// authenticate returns the tool whose token the request carries, or nil.
// Every tool's token is compared, in constant time, whatever matches.
func (p *Proxy) authenticate(r *http.Request) *tool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(tok))
	var found *tool
	for _, t := range p.tools {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			found = t
		}
	}
	return found
}

// lineError answers in the shape of LINE's ErrorResponse.
func lineError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
