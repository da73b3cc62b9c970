package webhook

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimits bounds the connections of the webhook listener, so that idle
// or slow clients cannot take every file descriptor of the process: the
// admin listener, the database and the Messaging API client need theirs.
type ConnLimits struct {
	// Max is the most connections open at once (default 4096). When it is
	// reached, a new connection evicts the connection that has waited
	// longest without a request in progress (a keep-alive connection, or
	// one that has sent nothing yet); failing that, the one whose webhook
	// request has been reading its body the longest, for more than
	// BodyGrace, or that waits out the delay of a refusal. A request
	// whose body is read and is being recorded is never cut; when every
	// connection has one, or a body begun less than BodyGrace ago, the new
	// connection is closed at once.
	Max int
	// PerClient is the most connections from one client address (default
	// 256): one client cannot take them all.
	PerClient int
}

// BodyGrace is how long a webhook request may take to send its body
// before its connection may be evicted for a new one: LINE sends its
// small bodies at once.
const BodyGrace = time.Second

// LimitListener wraps a listener with the limits; Track must be the
// http.Server's ConnState, so that idle connections are known, and
// ConnContext its ConnContext, so that the webhook Handler can tell which
// requests may be cut. The server must speak HTTP/1.1 only (one request
// at a time on a connection).
type LimitListener struct {
	net.Listener
	lim ConnLimits

	mu       sync.Mutex
	open     int
	byClient map[string]int
	idle     map[net.Conn]time.Time // connections without a request in progress, since when
	cuttable map[net.Conn]time.Time // connections whose request may be cut, from when

	refused *prometheus.CounterVec
	evicted prometheus.Counter
	gauge   prometheus.GaugeFunc
}

// NewLimitListener returns ln with the limits.
func NewLimitListener(ln net.Listener, lim ConnLimits) *LimitListener {
	if lim.Max <= 0 {
		lim.Max = 4096
	}
	if lim.PerClient <= 0 {
		lim.PerClient = 256
	}
	l := &LimitListener{Listener: ln, lim: lim, byClient: map[string]int{}, idle: map[net.Conn]time.Time{}, cuttable: map[net.Conn]time.Time{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_connections_refused_total",
			Help: "Webhook listener connections closed at once, by reason (limit: the listener is full of busy connections; per_client: the client has too many).",
		}, []string{"reason"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_connections_evicted_total",
			Help: "Connections closed to make room for a new one: idle ones, then ones slow to send a request body or waiting out a refusal.",
		}),
	}
	l.gauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "webhook_connections",
		Help: "Webhook listener connections open.",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	})
	return l
}

// Collectors returns the listener's metrics.
func (l *LimitListener) Collectors() []prometheus.Collector {
	return []prometheus.Collector{l.refused, l.evicted, l.gauge}
}

// Accept returns the next connection within the limits, closing the ones
// beyond them.
func (l *LimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientOf(c)
		l.mu.Lock()
		if l.byClient[client] >= l.lim.PerClient {
			l.mu.Unlock()
			l.refused.WithLabelValues("per_client").Inc()
			c.Close()
			continue
		}
		var victim net.Conn
		if l.open >= l.lim.Max {
			victim = l.oldest(l.idle, time.Time{})
			if victim == nil {
				victim = l.oldest(l.cuttable, time.Now())
			}
			if victim == nil {
				l.mu.Unlock()
				l.refused.WithLabelValues("limit").Inc()
				c.Close()
				continue
			}
			delete(l.idle, victim)
			delete(l.cuttable, victim)
		}
		l.open++
		l.byClient[client]++
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Inc()
			// Its StateClosed does the accounting. Closed under its TLS
			// layer, if any: a close_notify alert could wait on a client
			// that does not read, and hold up Accept.
			if lc := unwrap(victim); lc != nil {
				lc.Close()
			} else {
				victim.Close()
			}
		}
		return &limitedConn{Conn: c, l: l, client: client}, nil
	}
}

// oldest returns the connection of conns with the earliest time, not
// after notAfter unless that is zero, or nil.
func (l *LimitListener) oldest(conns map[net.Conn]time.Time, notAfter time.Time) net.Conn {
	var oldest net.Conn
	var at time.Time
	for c, t := range conns {
		if !notAfter.IsZero() && t.After(notAfter) {
			continue
		}
		if oldest == nil || t.Before(at) {
			oldest, at = c, t
		}
	}
	return oldest
}

// Track is the http.Server's ConnState: it keeps the idle connections.
func (l *LimitListener) Track(c net.Conn, s http.ConnState) {
	lc := unwrap(c)
	if lc == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew, http.StateIdle:
		// Connections that have not sent a request yet (or not the next
		// one) are the ones to close first: a request in progress never
		// is.
		l.idle[c] = time.Now()
	case http.StateActive, http.StateHijacked, http.StateClosed:
		delete(l.idle, c)
	}
	if s != http.StateActive {
		delete(l.cuttable, c)
	}
}

// connKey is the context key of a request's connection.
type connKey struct{}

type connRef struct {
	l *LimitListener
	c net.Conn
}

// ConnContext is the http.Server's ConnContext: it gives the requests of
// a connection the connection, for the webhook Handler to mark.
func (l *LimitListener) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, connRef{l: l, c: c})
}

// cuttable marks the connection of the request in ctx as one that may be
// evicted after grace, until the returned function is called: its request
// has nothing durable at stake (it is reading its body, or waiting out the
// delay of a refusal). Without a LimitListener, it does nothing.
func cuttable(ctx context.Context, grace time.Duration) (done func()) {
	ref, ok := ctx.Value(connKey{}).(connRef)
	if !ok {
		return func() {}
	}
	ref.l.mu.Lock()
	ref.l.cuttable[ref.c] = time.Now().Add(grace)
	ref.l.mu.Unlock()
	return func() {
		ref.l.mu.Lock()
		delete(ref.l.cuttable, ref.c)
		ref.l.mu.Unlock()
	}
}

// release accounts for a connection that closed.
func (l *LimitListener) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byClient[client]--; l.byClient[client] <= 0 {
		delete(l.byClient, client)
	}
}

// limitedConn gives its slot back once, when it closes.
type limitedConn struct {
	net.Conn
	l      *LimitListener
	client string
	once   sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.client) })
	return err
}

// unwrap returns the limited connection under c (TLS wraps it), or nil.
func unwrap(c net.Conn) *limitedConn {
	for {
		switch v := c.(type) {
		case *limitedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// clientOf returns a connection's client address without its port.
func clientOf(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}
