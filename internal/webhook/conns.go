package webhook

import (
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
	// one that has sent nothing yet); when every one has a request in
	// progress, the new one is closed at once.
	Max int
	// PerClient is the most connections from one client address (default
	// 256): one client cannot take them all.
	PerClient int
}

// LimitListener wraps a listener with the limits; Track must be the
// http.Server's ConnState, so that idle connections are known.
type LimitListener struct {
	net.Listener
	lim ConnLimits

	mu       sync.Mutex
	open     int
	byClient map[string]int
	idle     map[net.Conn]time.Time // connections without a request in progress, since when

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
	l := &LimitListener{Listener: ln, lim: lim, byClient: map[string]int{}, idle: map[net.Conn]time.Time{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_connections_refused_total",
			Help: "Webhook listener connections closed at once, by reason (limit: the listener is full of busy connections; per_client: the client has too many).",
		}, []string{"reason"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "webhook_connections_evicted_total",
			Help: "Idle keep-alive connections closed to make room for a new one.",
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
			victim = l.oldestIdle()
			if victim == nil {
				l.mu.Unlock()
				l.refused.WithLabelValues("limit").Inc()
				c.Close()
				continue
			}
			delete(l.idle, victim)
		}
		l.open++
		l.byClient[client]++
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Inc()
			victim.Close() // its StateClosed does the accounting
		}
		return &limitedConn{Conn: c, l: l, client: client}, nil
	}
}

func (l *LimitListener) oldestIdle() net.Conn {
	var oldest net.Conn
	var at time.Time
	for c, t := range l.idle {
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
