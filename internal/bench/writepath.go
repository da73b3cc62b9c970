package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

const benchToken = "bench-access-token"

// replyTracker is the fake Messaging API with a clock on its reply
// endpoint: it notes when each reply token first arrives in a reply call,
// and issues the tokens the webhooks carry, noting when each was sent.
type replyTracker struct {
	api     *sim.API
	mu      sync.Mutex
	sent    map[string]time.Time
	arrived map[string]time.Time
}

func newReplyTracker() *replyTracker {
	return &replyTracker{
		// No rate limit in the way: the figure is the bot's latency, not
		// the API's pushback.
		api:     sim.NewAPI(sim.Options{RateLimit: 1e6, MaxCalls: 1000}),
		sent:    map[string]time.Time{},
		arrived: map[string]time.Time{},
	}
}

func (t *replyTracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == "POST" && r.URL.Path == "/v2/bot/message/reply" {
		now := time.Now()
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err == nil {
			var req struct {
				ReplyToken string `json:"replyToken"`
			}
			if json.Unmarshal(body, &req) == nil && req.ReplyToken != "" {
				t.mu.Lock()
				if _, ok := t.arrived[req.ReplyToken]; !ok {
					t.arrived[req.ReplyToken] = now
				}
				t.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	t.api.ServeHTTP(w, r)
}

// textSource sends one text message event per body, each with a fresh
// reply token from the tracker, and notes when each body was taken to be
// sent (in open loop, Next is called when the request is due).
type textSource struct {
	t     *replyTracker
	msgID int64
	n     int
}

func (s *textSource) Next() []byte {
	token := s.t.api.IssueReplyToken("")
	s.msgID++
	s.n++
	body := sim.TextEvent(sim.BotUserID("demo"), fmt.Sprintf("U%032x", s.n%100), "hello, is anyone there?", token, s.msgID, time.Now())
	s.t.mu.Lock()
	s.t.sent[token] = time.Now()
	s.t.mu.Unlock()
	return body
}

// measure sends webhooks to url in open loop and waits for their replies;
// it returns the reply latencies (sorted) and the number never answered.
func (t *replyTracker) measure(ctx context.Context, url string, load sim.Load) ([]time.Duration, int, error) {
	t.mu.Lock()
	t.sent, t.arrived = map[string]time.Time{}, map[string]time.Time{}
	t.mu.Unlock()
	src := &textSource{t: t, msgID: time.Now().UnixMilli() * 1000}
	res, err := sim.Send(ctx, newClient(load.Concurrency), url, []byte(benchSecret), src, load)
	if err != nil {
		return nil, 0, err
	}
	if res.OK() != len(res.Latencies) || res.Errors > 0 {
		return nil, 0, fmt.Errorf("not all webhooks answered 200: %v, %d errors", res.Statuses, res.Errors)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		t.mu.Lock()
		done := len(t.arrived) >= len(t.sent)
		t.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var lat []time.Duration
	missing := 0
	for tok, s := range t.sent {
		a, ok := t.arrived[tok]
		if !ok {
			missing++
			continue
		}
		lat = append(lat, a.Sub(s))
	}
	slices.Sort(lat)
	if len(t.sent) == 0 || missing*100 > len(t.sent) {
		return nil, 0, fmt.Errorf("%d of %d webhooks got no reply within 15 s of the end of the load", missing, len(t.sent))
	}
	return lat, missing, nil
}

// percentile of sorted latencies, counting the missing ones as longer
// than any.
func percentile(lat []time.Duration, missing int, q float64) time.Duration {
	n := len(lat) + missing
	i := min(max(int(q*float64(n)+0.5)-1, 0), n-1)
	if i >= len(lat) {
		return 15 * time.Second
	}
	return lat[i]
}

// replyLatency measures the time from a webhook sent to the reply call
// the fake Messaging API receives for it, in open loop at 1,200/s: the
// gateway with a rule that answers any text, beside the SDK bot that
// replies inline.
func (r *runner) replyLatency(ctx context.Context) {
	d := r.dur(2*time.Second, 10*time.Second)
	const rate = 1200
	names := []string{"reply latency p50 at 1200/s (open loop)", "reply latency p99 at 1200/s (open loop)"}
	failAll := func(err error) {
		for _, n := range names {
			r.fail(n, "ms", err)
		}
	}
	t := newReplyTracker()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		failAll(err)
		return
	}
	srv := &http.Server{Handler: t}
	go srv.Serve(ln)
	defer srv.Close()
	apiURL := "http://" + ln.Addr().String()

	extra := "log: {origin: " + benchOrigin + ", checkpoint_interval: 1s}\n" +
		"line_api_base: " + apiURL + "\n" +
		"rules:\n  - name: any-text\n    when: {event: [message], text: {regex: \".\"}}\n    reply:\n      - {type: text, text: \"Thanks, we got your message.\"}\n"
	g, err := r.startGatewayChannel(ctx, filepath.Join(r.work, "reply"), extra, ", access_token: "+benchToken)
	if err != nil {
		failAll(err)
		return
	}
	load := sim.Load{Rate: rate, Concurrency: 64, Duration: d}
	lat, missing, err := t.measure(ctx, g.webhook+"/webhook/demo", load)
	diskErr := err
	if err == nil {
		diskErr = g.waitPipeline(ctx, len(lat)+missing)
	}
	g.stop()
	if err != nil {
		failAll(err)
		return
	}
	// What a replied webhook costs on disk: its record, its outcome, the
	// reply's outbound record, their share of the tiles and the state.
	dname := "disk per webhook, 1 event/request, one reply"
	var size int64
	if diskErr == nil {
		size, diskErr = dirSize(g.dataDir)
	}
	if diskErr != nil {
		r.fail(dname, "bytes", diskErr)
	} else {
		r.add(Result{Name: dname, Value: float64(size) / float64(len(lat)+missing), Unit: "bytes",
			Note: fmt.Sprintf("data directory of %d bytes after %d webhooks", size, len(lat)+missing)}, false, nil)
	}
	bot, err := r.startPeer(ctx, "sdkbot", "-token", benchToken, "-api", apiURL)
	if err != nil {
		failAll(fmt.Errorf("peer: %v", err))
		return
	}
	plat, pmissing, perr := t.measure(ctx, bot.url, load)
	bot.stop()
	for i, q := range []float64{0.5, 0.99} {
		res := Result{Name: names[i], Value: ms(percentile(lat, missing, q)), Unit: "ms",
			Peer: "official SDK bot replying inline", Note: fmt.Sprintf("%d webhooks, %d unanswered", len(lat)+missing, missing)}
		if perr != nil {
			res.Error = "peer: " + perr.Error()
		} else {
			res.PeerValue = f64(ms(percentile(plat, pmissing, q)))
			res.Note += fmt.Sprintf("; peer %d webhooks, %d unanswered", len(plat)+pmissing, pmissing)
		}
		var pass func(v, ratio float64) bool
		if q == 0.99 {
			res.Target = "<= 2x peer"
			pass = func(_, ratio float64) bool { return ratio >= 0.5 }
		}
		r.add(res, false, pass)
	}
}

// clockTicks is the unit of utime and stime in /proc/PID/stat. Go has no
// sysconf(_SC_CLK_TCK); Linux has used 100 for USER_HZ on every common
// architecture, so it is assumed.
const clockTicks = 100

// procCPU returns the CPU seconds (user and system) a process has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis, which is field 2; utime and stime
	// are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (u + s) / clockTicks, nil
}

// procWritten returns the bytes pid has caused to be written to storage
// (write_bytes of /proc/PID/io): its commits, its WAL's checkpoints.
func procWritten(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no write_bytes in /proc/PID/io")
}

// cpuDuring returns the CPU seconds pid used from the start of the load
// to settle after its end, and the webhooks answered 200.
func cpuDuring(ctx context.Context, pid int, url string, load sim.Load, settle time.Duration) (float64, int, error) {
	before, err := procCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	res, err := sim.Send(ctx, newClient(load.Concurrency), url, []byte(benchSecret), source(1), load)
	if err != nil {
		return 0, 0, err
	}
	if res.OK() != len(res.Latencies) || res.Errors > 0 {
		return 0, 0, fmt.Errorf("not all answered 200: %v, %d errors", res.Statuses, res.Errors)
	}
	time.Sleep(settle)
	after, err := procCPU(pid)
	return after - before, res.OK(), err
}

// cpuPerWebhook measures the CPU the gateway process spends per 10,000
// acknowledged webhooks at a fixed rate (its pipeline's work on them
// included: the reading is taken a while after the load ends), beside the
// SDK echo server's measured the same way.
func (r *runner) cpuPerWebhook(ctx context.Context) {
	const name = "CPU per 10,000 webhooks at 1000/s"
	const unit = "CPU s"
	load := sim.Load{Rate: 1000, Concurrency: 64, Duration: r.dur(2*time.Second, 10*time.Second)}
	settle := 2 * time.Second
	g, err := r.startGateway(ctx, filepath.Join(r.work, "cpu"))
	if err != nil {
		r.fail(name, unit, err)
		return
	}
	if _, err := g.waitReady(ctx); err != nil {
		g.stop()
		r.fail(name, unit, err)
		return
	}
	cpu, n, err := cpuDuring(ctx, g.cmd.Process.Pid, g.webhook+"/webhook/demo", load, settle)
	g.stop()
	if err == nil && n == 0 {
		err = errors.New("no webhook acknowledged")
	}
	if err != nil {
		r.fail(name, unit, err)
		return
	}
	res := Result{Name: name, Value: cpu * 10000 / float64(n), Unit: unit, Peer: "official SDK webhook server, no persistence",
		Target: "<= 2x peer", Note: fmt.Sprintf("utime+stime from /proc/PID/stat over %d webhooks and %v after; peer measured the same way", n, settle)}
	peer, err := r.startPeer(ctx, "sdkecho")
	if err == nil {
		var pcpu float64
		var pn int
		pcpu, pn, err = cpuDuring(ctx, peer.pid, peer.url, load, settle)
		peer.stop()
		if err == nil && pn > 0 {
			res.PeerValue = f64(pcpu * 10000 / float64(pn))
		}
	}
	if err != nil {
		res.Error = "peer: " + err.Error()
	}
	r.add(res, false, func(_, ratio float64) bool { return ratio >= 0.5 })
}

// raiseNofile raises this process's soft limit of open files to its hard
// limit, and returns the hard limit.
func raiseNofile() (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return int(min(lim.Max, 1<<30)), nil
}

// openIdle opens n keep-alive connections to addr (host:port), each from
// a loopback source address 127.0.X.Y of its own for every 200 (under the
// gateway's per-client limit), each after one GET /healthz, and leaves
// them idle.
func openIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				a := i / 200
				src := net.IPv4(127, 0, byte(1+a/250), byte(1+a%250))
				dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
				c, err := dl.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
					var resp *http.Response
					if err == nil {
						resp, err = http.ReadResponse(bufio.NewReader(c), nil)
					}
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.Close {
							err = errors.New("the gateway closed an idle connection after its first request")
						}
					}
					c.SetDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					err = fmt.Errorf("idle connection %d of %d: %w", i+1, n, err)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, *p
	}
	return conns, nil
}

// stillOpen counts the connections the other side has not closed.
func stillOpen(conns []net.Conn) int {
	n := 0
	buf := make([]byte, 1)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			n++
		}
	}
	return n
}

// idleConnections measures ingest (closed loop, 32 connections) with
// thousands of idle keep-alive connections open to the gateway, beside
// the same configuration's ingest without them in the same run.
func (r *runner) idleConnections(ctx context.Context) {
	want := r.size(1000, 10000)
	name := fmt.Sprintf("ingest, 1 event/request, 32 conns, %d idle conns open", want)
	d := r.dur(2*time.Second, 10*time.Second)
	hard, err := raiseNofile()
	if err != nil {
		r.fail(name, "req/s", err)
		return
	}
	// Both this process and the gateway hold one descriptor per idle
	// connection; leave a margin for the load, the database and the rest.
	n := min(want, hard-1024)
	note := fmt.Sprintf("%d idle connections from %d loopback addresses", n, (n+199)/200)
	if n < want {
		name = fmt.Sprintf("ingest, 1 event/request, 32 conns, %d idle conns open", n)
		note += fmt.Sprintf(" (the hard limit of open files is %d, too low for %d)", hard, want)
	}
	if n <= 0 {
		r.fail(name, "req/s", fmt.Errorf("the hard limit of open files (%d) leaves no room for idle connections", hard))
		return
	}
	extra := "log: {origin: " + benchOrigin + ", checkpoint_interval: 1s}\nconnections: {max: 12000, idle_timeout: 10m}\n"
	var rss float64
	var rssErr error
	run := func(dir string, idle int) (float64, string, error) {
		g, err := r.startGatewayWith(ctx, filepath.Join(r.work, dir), extra)
		if err != nil {
			return 0, "", err
		}
		defer g.stop()
		var conns []net.Conn
		if idle > 0 {
			conns, err = openIdle(ctx, strings.TrimPrefix(g.webhook, "http://"), idle)
			if err != nil {
				return 0, "", err
			}
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
		}
		res, err := sim.Send(ctx, newClient(32), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), sim.Load{Concurrency: 32, Duration: d})
		if err == nil && (res.OK() != len(res.Latencies) || res.Errors > 0) {
			err = fmt.Errorf("%d of %d requests not answered 200: %v, %d errors", len(res.Latencies)-res.OK(), len(res.Latencies), res.Statuses, res.Errors)
		}
		if err != nil {
			return 0, "", err
		}
		open := ""
		if idle > 0 {
			open = fmt.Sprintf("; %d of them still open after the load", stillOpen(conns))
			rss, rssErr = peakRSS(g.cmd.Process.Pid)
		}
		return res.Throughput(), open, nil
	}
	base, _, err := run("idle-base", 0)
	if err != nil {
		r.fail(name, "req/s", fmt.Errorf("without idle connections: %v", err))
		return
	}
	v, open, err := run("idle", n)
	if err != nil {
		r.fail(name, "req/s", err)
		return
	}
	r.add(Result{Name: name, Value: v, Unit: "req/s", Peer: "the same gateway without them, same run", PeerValue: f64(base),
		Note: note + open}, true, nil)
	r.addRSS("peak RSS, "+name, rss, rssErr)
}
