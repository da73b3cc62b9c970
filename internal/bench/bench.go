// Package bench is linegate's benchmark suite: it measures the gateway and,
// in the same run on the same machine, the systems users would pick
// instead, and reports each figure beside its peer's. The peers are
// separate programs in the repository's bench/peers directory, built by
// the suite, so that the gateway binary does not depend on them.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/sim"
	"github.com/linegate/linegate/internal/sqlitestore"
	"golang.org/x/mod/sumdb/note"
)

// Result is one figure.
type Result struct {
	Name      string   `json:"name"`
	Value     float64  `json:"value"`
	Unit      string   `json:"unit"`
	Peer      string   `json:"peer,omitempty"`
	PeerValue *float64 `json:"peer_value,omitempty"`
	// Ratio is value/peer_value where more is better, peer_value/value
	// where less is better: above 1 means linegate did better.
	Ratio  *float64 `json:"ratio,omitempty"`
	Target string   `json:"target,omitempty"`
	Pass   *bool    `json:"pass,omitempty"`
	Error  string   `json:"error,omitempty"`
	// Skipped says why a figure was not measured on purpose (no
	// PostgreSQL server was given); it is not an error.
	Skipped string `json:"skipped,omitempty"`
	// Note says how the figure was measured, where the name does not.
	Note string `json:"note,omitempty"`
}

// Options configures a run.
type Options struct {
	// Linegate is the linegate binary to run as the gateway.
	Linegate string
	// Repo is the repository root, where bench/peers is.
	Repo string
	// Quick runs every figure at a smaller size.
	Quick bool
	// WorkDir holds the runs' data (default: a temporary directory).
	WorkDir string
	// Postgres is a PostgreSQL server (postgres://...) for the figures of
	// replicas on PostgreSQL; each run uses a schema of its own and drops
	// it. Without it those figures are skipped.
	Postgres string
	// Only, if set, names the groups of figures to run (Groups); the
	// others are skipped.
	Only []string
	Log  io.Writer
}

// Groups names the suite's groups of figures, in the order they run.
var Groups = []string{"ingest", "postgres", "latency", "reply", "cpu", "idle", "flood", "appends", "verify", "pipeline", "fanout"}

const (
	benchSecret = "bench-channel-secret"
	benchOrigin = "example.com/linegate/bench"
)

type runner struct {
	opts       Options
	ingestRate float64 // one event per request, from this run
	work       string
	peers      map[string]string
	results    []Result
	logf       func(string, ...any)
}

// Run runs the whole suite and returns its figures. A figure that could
// not be measured is returned with Error set.
func Run(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	for _, g := range opts.Only {
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("no group of figures %q (groups: %s)", g, strings.Join(Groups, ", "))
		}
	}
	r := &runner{opts: opts, peers: map[string]string{}, logf: func(f string, a ...any) { fmt.Fprintf(opts.Log, f+"\n", a...) }}
	if opts.WorkDir == "" {
		d, err := os.MkdirTemp("", "linegate-bench")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		r.work = d
	} else {
		r.work = opts.WorkDir
	}
	for _, p := range []string{"sdkecho", "sdkdurable", "sdkbot", "tesseraposix", "feeder"} {
		bin := filepath.Join(r.work, "peer-"+p)
		r.logf("building peer %s", p)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/peers/"+p)
		cmd.Dir = opts.Repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build peer %s (run from the repository, with Go installed): %v\n%s", p, err, out)
		}
		r.peers[p] = bin
	}
	for i, run := range []func(context.Context){r.ingest, r.ingestPostgres, r.latency, r.replyLatency, r.cpuPerWebhook,
		r.idleConnections, r.rejectionFlood, r.appends, r.verifyAndStartup, r.pipelineRate, r.fanoutAck} {
		if len(opts.Only) == 0 || slices.Contains(opts.Only, Groups[i]) {
			run(ctx)
		}
	}
	return r.results, nil
}

func f64(v float64) *float64 { return &v }
func boolp(v bool) *bool     { return &v }

// add records a figure; higher says whether more is better.
func (r *runner) add(res Result, higher bool, pass func(v, ratio float64) bool) {
	if res.PeerValue != nil && *res.PeerValue > 0 && res.Value > 0 {
		ratio := res.Value / *res.PeerValue
		if !higher {
			ratio = *res.PeerValue / res.Value
		}
		res.Ratio = f64(ratio)
	}
	if pass != nil && res.Error == "" {
		ratio := 0.0
		if res.Ratio != nil {
			ratio = *res.Ratio
		}
		res.Pass = boolp(pass(res.Value, ratio))
	}
	r.logf("%-44s %12.2f %-8s %s", res.Name, res.Value, res.Unit, res.Error)
	r.results = append(r.results, res)
}

func (r *runner) fail(name, unit string, err error) {
	r.add(Result{Name: name, Unit: unit, Error: err.Error()}, true, nil)
}

func (r *runner) size(quick, full int) int {
	if r.opts.Quick {
		return quick
	}
	return full
}

func (r *runner) dur(quick, full time.Duration) time.Duration {
	if r.opts.Quick {
		return quick
	}
	return full
}

// gateway is a linegate serve process.
type gateway struct {
	cmd     *exec.Cmd
	dataDir string
	webhook string
	admin   string
	started time.Time
}

func (r *runner) startGateway(ctx context.Context, dataDir string) (*gateway, error) {
	return r.startGatewayWith(ctx, dataDir, "log: {origin: "+benchOrigin+", checkpoint_interval: 1s}\n")
}

// startGatewayWith starts a gateway with extra config lines (log: among
// them).
func (r *runner) startGatewayWith(ctx context.Context, dataDir, extra string) (*gateway, error) {
	return r.startGatewayChannel(ctx, dataDir, extra, "")
}

// startGatewayChannel starts a gateway with extra config lines and extra
// fields of its one channel (", access_token: T").
func (r *runner) startGatewayChannel(ctx context.Context, dataDir, extra, channel string) (*gateway, error) {
	cfg := fmt.Sprintf(`data_dir: %s
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
%slogging: {format: json, level: info}
channels:
  - {id: demo, secret: %s%s}
`, dataDir, extra, benchSecret, channel)
	p := filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	g := &gateway{dataDir: dataDir}
	g.cmd = exec.CommandContext(ctx, r.opts.Linegate, "serve", "-config", p)
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	g.started = time.Now()
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	addrs := make(chan [2]string, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l struct{ Msg, Listener, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				addrs <- [2]string{l.Listener, "http://" + l.Addr}
			}
		}
	}()
	timeout := time.After(60 * time.Second)
	for g.webhook == "" || g.admin == "" {
		select {
		case a := <-addrs:
			if a[0] == "webhook" {
				g.webhook = a[1]
			} else {
				g.admin = a[1]
			}
		case <-timeout:
			g.cmd.Process.Kill()
			g.cmd.Wait()
			return nil, errors.New("gateway did not start")
		}
	}
	return g, nil
}

// waitReady polls /readyz and returns the time from process start.
func (g *gateway) waitReady(ctx context.Context) (time.Duration, error) {
	c := &http.Client{Timeout: time.Second}
	for i := 0; i < 20000; i++ {
		resp, err := c.Get(g.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(g.started), nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, errors.New("never ready")
}

// peakRSS reads the process's peak resident set size, in MB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

// metrics reads the gateway's metrics: each sample's value by its name
// and labels, as the exposition writes them.
func (g *gateway) metrics() (map[string]float64, error) {
	resp, err := http.Get(g.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
				m[l[:i]] = v
			}
		}
	}
	return m, nil
}

// waitPipeline waits until the gateway's pipeline has recorded the outcomes
// of at least events events (its linegate_pipeline_events_total), so that
// what is measured after includes them.
func (g *gateway) waitPipeline(ctx context.Context, events int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m, err := g.metrics()
		if err != nil {
			return err
		}
		done := 0.0
		for k, v := range m {
			if strings.HasPrefix(k, "linegate_pipeline_events_total{") {
				done += v
			}
		}
		if done >= float64(events) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pipeline recorded %v of %d events in 2 minutes", done, events)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (g *gateway) stop() {
	g.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		g.cmd.Process.Kill()
		<-done
	}
}

// startSDKPeer runs the SDK echo server.
func (r *runner) startSDKPeer(ctx context.Context) (string, func(), error) {
	p, err := r.startPeer(ctx, "sdkecho")
	if err != nil {
		return "", nil, err
	}
	return p.url, p.stop, nil
}

// peerProc is a running webhook server peer.
type peerProc struct {
	url  string
	pid  int
	stop func()
}

// startPeer runs the named webhook server peer with the bench secret and
// args, and waits for its "listening ADDR" line.
func (r *runner) startPeer(ctx context.Context, name string, args ...string) (*peerProc, error) {
	cmd := exec.CommandContext(ctx, r.peers[name], append([]string{"-secret", benchSecret}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("peer %s: %v", name, err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	return &peerProc{url: "http://" + addr, pid: cmd.Process.Pid, stop: func() { cmd.Process.Kill(); cmd.Wait() }}, nil
}

// eventBody is a Conversation source of ~450-byte one-event bodies, or
// five-event bodies.
func source(events int) sim.Source {
	return &sim.Conversation{EventsPerBody: events}
}

func newClient(conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
}

// ingest measures requests per second at saturation, 32 connections.
func (r *runner) ingest(ctx context.Context) {
	d := r.dur(2*time.Second, 10*time.Second)
	peerURL, stopPeer, err := r.startSDKPeer(ctx)
	if err != nil {
		r.fail("ingest, 1 event/request", "req/s", err)
		return
	}
	defer stopPeer()
	durable, err := r.startPeer(ctx, "sdkdurable", "-db", filepath.Join(r.work, "sdkdurable.db"))
	if err != nil {
		r.fail("ingest, 1 event/request", "req/s", err)
		return
	}
	defer durable.stop()
	for _, events := range []int{1, 5} {
		name := fmt.Sprintf("ingest, %d event/request, 32 conns", events)
		if events > 1 {
			name = fmt.Sprintf("ingest, %d events/request, 32 conns", events)
		}
		g, err := r.startGateway(ctx, filepath.Join(r.work, fmt.Sprintf("ingest%d", events)))
		if err != nil {
			r.fail(name, "req/s", err)
			continue
		}
		res, err := sim.Send(ctx, newClient(32), g.webhook+"/webhook/demo", []byte(benchSecret), source(events), sim.Load{Concurrency: 32, Duration: d})
		var diskErr error
		if err == nil {
			diskErr = g.waitPipeline(ctx, res.OK()*events)
		}
		rss, rssErr := peakRSS(g.cmd.Process.Pid)
		g.stop()
		if err == nil && events == 1 {
			// What a webhook costs on disk: its record, its event's
			// outcome, their share of the tiles and of the pipeline's
			// state, after a checkpoint of the WAL (serve's stop).
			dname := "disk per webhook, 1 event/request, no reply"
			var size int64
			if diskErr == nil {
				size, diskErr = dirSize(g.dataDir)
			}
			if diskErr != nil {
				r.fail(dname, "bytes", diskErr)
			} else {
				r.add(Result{Name: dname, Value: float64(size) / float64(res.OK()), Unit: "bytes",
					Note: fmt.Sprintf("data directory of %d bytes after %d webhooks", size, res.OK())}, false, nil)
			}
		}
		if err == nil && res.OK() != len(res.Latencies) {
			err = fmt.Errorf("%d of %d requests not answered 200: %v", len(res.Latencies)-res.OK(), len(res.Latencies), res.Statuses)
		}
		if err != nil {
			r.fail(name, "req/s", err)
			continue
		}
		peer, err := sim.Send(ctx, newClient(32), peerURL, []byte(benchSecret), source(events), sim.Load{Concurrency: 32, Duration: d})
		if err != nil || peer.OK() != len(peer.Latencies) {
			r.fail(name, "req/s", fmt.Errorf("peer: %v %v", err, peer))
			continue
		}
		if events == 1 {
			r.ingestRate = res.Throughput()
		}
		r.add(Result{Name: name, Value: res.Throughput(), Unit: "req/s", Peer: "official SDK webhook server, no persistence",
			PeerValue: f64(peer.Throughput()), Target: ">= 0.75x peer"}, true, func(v, ratio float64) bool { return ratio >= 0.75 })
		dpeer, err := sim.Send(ctx, newClient(32), durable.url, []byte(benchSecret), source(events), sim.Load{Concurrency: 32, Duration: d})
		dname := name + ", beside the durable SDK peer"
		if err == nil && dpeer.OK() != len(dpeer.Latencies) {
			err = fmt.Errorf("%d of %d requests not answered 200: %v", len(dpeer.Latencies)-dpeer.OK(), len(dpeer.Latencies), dpeer.Statuses)
		}
		if err != nil {
			r.fail(dname, "req/s", fmt.Errorf("durable peer: %v", err))
		} else {
			r.add(Result{Name: dname, Value: res.Throughput(), Unit: "req/s",
				Peer:      "official SDK webhook server, one SQLite insert per request (WAL, synchronous=FULL)",
				PeerValue: f64(dpeer.Throughput()), Target: ">= 2.5x peer"}, true, func(v, ratio float64) bool { return ratio >= 2.5 })
		}
		r.addRSS("peak RSS, "+name, rss, rssErr)
	}
}

// maxRSSMB is the peak resident set an ingest run may reach.
const maxRSSMB = 100

// addRSS adds the peak RSS of an ingest run.
func (r *runner) addRSS(name string, rss float64, err error) {
	if err != nil {
		r.fail(name, "MB", err)
		return
	}
	r.add(Result{Name: name, Value: rss, Unit: "MB", Target: fmt.Sprintf("<= %d MB", maxRSSMB)}, false,
		func(v, _ float64) bool { return v <= maxRSSMB })
}

// latency measures acknowledgement latency in open loop.
func (r *runner) latency(ctx context.Context) {
	d := r.dur(2*time.Second, 10*time.Second)
	peerURL, stopPeer, err := r.startSDKPeer(ctx)
	if err != nil {
		r.fail("ack latency", "ms", err)
		return
	}
	defer stopPeer()
	for _, rate := range []float64{1200, 5000} {
		g, err := r.startGateway(ctx, filepath.Join(r.work, fmt.Sprintf("latency%d", int(rate))))
		if err != nil {
			r.fail(fmt.Sprintf("ack latency at %d/s", int(rate)), "ms", err)
			continue
		}
		// One load per rate, the same for gateway and peer.
		load := sim.Load{Rate: rate, Concurrency: 64, Duration: d}
		res, err := sim.Send(ctx, newClient(64), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), load)
		g.stop()
		if err == nil && res.OK() != len(res.Latencies) {
			err = fmt.Errorf("not all answered 200: %v", res.Statuses)
		}
		if err != nil {
			r.fail(fmt.Sprintf("ack latency at %d/s", int(rate)), "ms", err)
			continue
		}
		peer, perr := sim.Send(ctx, newClient(64), peerURL, []byte(benchSecret), source(1), load)
		for _, q := range []struct {
			name string
			q    float64
		}{{"p50", 0.5}, {"p99", 0.99}, {"p99.9", 0.999}} {
			res1 := Result{Name: fmt.Sprintf("ack latency %s at %d/s (open loop)", q.name, int(rate)),
				Value: ms(res.Percentile(q.q)), Unit: "ms", Peer: "official SDK webhook server, no persistence"}
			if perr == nil {
				res1.PeerValue = f64(ms(peer.Percentile(q.q)))
			}
			var pass func(v, ratio float64) bool
			if q.name == "p99" && rate == 1200 {
				// Lower is better: the ratio is peer/value.
				res1.Target = "<= 3x peer"
				pass = func(_, ratio float64) bool { return ratio >= 1.0/3 }
			}
			r.add(res1, false, pass)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func newSigner() (note.Signer, note.Verifier) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, benchOrigin)
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

// appends measures durable ledger appends per second against Tessera's
// POSIX log on the same disk, with the same entry size.
func (r *runner) appends(ctx context.Context) {
	d := r.dur(time.Second, 5*time.Second)
	const size = 1024
	for _, writers := range []int{1, 32, 1024} {
		name := fmt.Sprintf("ledger appends, %d writers", writers)
		dir := filepath.Join(r.work, fmt.Sprintf("appends%d", writers))
		os.MkdirAll(dir, 0o700)
		store, err := sqlitestore.Open(ctx, filepath.Join(dir, "ledger.db"), sqlitestore.Options{})
		if err != nil {
			r.fail(name, "appends/s", err)
			continue
		}
		signer, verifier := newSigner()
		l, err := ledger.New(ctx, store, ledger.Options{Origin: benchOrigin, Signer: signer, Verifier: verifier})
		if err != nil {
			store.Close()
			r.fail(name, "appends/s", err)
			continue
		}
		l.Start()
		var n atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		var appendErr atomic.Pointer[error]
		for range writers {
			wg.Go(func() {
				payload := make([]byte, size)
				rand.Read(payload)
				for time.Now().Before(deadline) {
					if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "bench", Payload: payload}); err != nil {
						if errors.Is(err, ledger.ErrPushback) {
							continue
						}
						appendErr.Store(&err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		rate := float64(n.Load()) / time.Since(start).Seconds()
		l.Close(ctx)
		store.Close()
		if p := appendErr.Load(); p != nil {
			r.fail(name, "appends/s", *p)
			continue
		}
		peer, err := r.tessera(ctx, writers, size, d)
		res := Result{Name: name, Value: rate, Unit: "appends/s", Peer: "Tessera POSIX log"}
		if err != nil {
			res.Error = "peer: " + err.Error()
		} else {
			res.PeerValue = f64(peer)
		}
		var pass func(v, ratio float64) bool
		switch writers {
		case 32:
			res.Target = ">= 10x peer"
			pass = func(_, ratio float64) bool { return ratio >= 10 }
		case 1024:
			res.Target = ">= 2x peer"
			pass = func(_, ratio float64) bool { return ratio >= 2 }
		}
		r.add(res, true, pass)
	}
}

func (r *runner) tessera(ctx context.Context, writers, size int, d time.Duration) (float64, error) {
	dir := filepath.Join(r.work, fmt.Sprintf("tessera%d", writers))
	cmd := exec.CommandContext(ctx, r.peers["tesseraposix"], "-dir", dir, "-writers", strconv.Itoa(writers),
		"-size", strconv.Itoa(size), "-duration", d.String())
	out, err := cmd.Output()
	if err != nil {
		return 0, err
	}
	var v struct {
		AppendsPerS float64 `json:"appends_per_s"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return 0, err
	}
	return v.AppendsPerS, nil
}

// verifyAndStartup builds a ledger of N records, measures verify against
// plain SHA-256 over the same stored bytes, then the time a gateway takes
// from start to ready on it.
func (r *runner) verifyAndStartup(ctx context.Context) {
	n := r.size(50_000, 1_000_000)
	dir := filepath.Join(r.work, "big", "data")
	os.MkdirAll(dir, 0o700)
	r.logf("building a ledger of %d records", n)
	verifier, kek, err := r.bigLedger(ctx, dir, n)
	if err != nil {
		r.fail("verify throughput", "MB/s", err)
		r.fail(fmt.Sprintf("start to ready, %d records", n), "ms", err)
		return
	}
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "ledger.db"), sqlitestore.Options{})
	if err != nil {
		r.fail("verify throughput", "MB/s", err)
		return
	}
	start := time.Now()
	rep, err := ledger.Verify(ctx, store, verifier, benchOrigin, nil, keys.NewRing(store, kek))
	vd := time.Since(start)
	if err != nil {
		store.Close()
		r.fail("verify throughput", "MB/s", err)
	} else {
		// The physical limit: SHA-256 over the same stored bytes, once,
		// read the same way.
		var total int64
		h := sha256.New()
		start = time.Now()
		for rec, err := range store.Records(ctx, 0, rep.Records) {
			if err != nil {
				break
			}
			h.Write(rec.Leaf)
			h.Write(rec.Nonce)
			h.Write(rec.Payload)
			total += int64(len(rec.Leaf) + len(rec.Nonce) + len(rec.Payload))
		}
		sd := time.Since(start)
		store.Close()
		mb := float64(total) / 1e6
		r.add(Result{Name: fmt.Sprintf("verify, %d records", rep.Records), Value: mb / vd.Seconds(), Unit: "MB/s",
			Peer: "SHA-256 over the same stored bytes", PeerValue: f64(mb / sd.Seconds()), Target: ">= 1.0x peer"},
			true, func(_, ratio float64) bool { return ratio >= 1.0 })
	}

	name := fmt.Sprintf("start to ready, %d records", n)
	big, err := r.startToReady(ctx, dir)
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	// The peer: the same at a small ledger, so that the figure says
	// whether start-up grows with the log.
	const smallN = 10_000
	sdir := filepath.Join(r.work, "small", "data")
	os.MkdirAll(sdir, 0o700)
	res := Result{Name: name, Value: ms(big), Unit: "ms", Peer: fmt.Sprintf("start to ready, %d records", smallN), Target: "<= 1.5x peer"}
	if _, _, err := r.bigLedger(ctx, sdir, smallN); err != nil {
		res.Error = "peer: " + err.Error()
	} else if small, err := r.startToReady(ctx, sdir); err != nil {
		res.Error = "peer: " + err.Error()
	} else {
		res.PeerValue = f64(ms(small))
	}
	// Lower is better: the ratio is peer/value, so 1.5x slower is 1/1.5.
	r.add(res, false, func(_, ratio float64) bool { return ratio >= 1/1.5 })
}

// startToReady starts a gateway on dir and returns the time from its start
// to its first ready answer; the best of three starts, since one start is
// a few milliseconds and a scheduling hiccup would be most of it.
func (r *runner) startToReady(ctx context.Context, dir string) (time.Duration, error) {
	var best time.Duration
	for range 3 {
		g, err := r.startGateway(ctx, dir)
		if err != nil {
			return 0, err
		}
		ready, err := g.waitReady(ctx)
		g.stop()
		if err != nil {
			return 0, err
		}
		if best == 0 || ready < best {
			best = ready
		}
	}
	return best, nil
}

// bigLedger appends n webhook-sized records in large batches straight to
// the store, integrates them, and writes the key pair a gateway will use.
func (r *runner) bigLedger(ctx context.Context, dir string, n int) (note.Verifier, keys.KEK, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, benchOrigin)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "log.vkey"), []byte(vkey+"\n"), 0o644); err != nil {
		return nil, nil, err
	}
	// Sealed as serve seals them, with the key encryption key where serve
	// looks for it by default.
	kekText := keys.GenerateKEK()
	if err := os.WriteFile(filepath.Join(dir, "kek"), []byte(kekText+"\n"), 0o600); err != nil {
		return nil, nil, err
	}
	kek, _ := keys.ParseKEK(kekText)
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "ledger.db"), sqlitestore.Options{})
	if err != nil {
		return nil, nil, err
	}
	defer store.Close()
	ring := keys.NewRing(store, kek)
	conv := &sim.Conversation{}
	batch := make([]ledger.Record, 0, 10000)
	now := time.Now()
	for i := 0; i < n; i++ {
		body := conv.Next()
		payload, _ := record.EncodePayload(&record.Meta{Channel: "demo", ReceivedMs: now.UnixMilli(),
			Headers: map[string][]string{"Content-Type": {"application/json; charset=utf-8"}, "User-Agent": {"LineBotWebhook/2.0"},
				"X-Line-Signature": {"0000000000000000000000000000000000000000000="}}}, body)
		rec, err := ledger.SealRecord(ctx, ring, ledger.Entry{Kind: ledger.KindWebhook, Time: now, Channel: "demo",
			Payload: payload, Subjects: line.BodySubjects(body)})
		if err != nil {
			return nil, nil, err
		}
		batch = append(batch, rec)
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := store.Append(ctx, batch); err != nil {
				return nil, nil, err
			}
			batch = batch[:0]
		}
	}
	// The sequencer opens every record before it signs it, as serve's
	// does: it needs the key ring the records were sealed with.
	l, err := ledger.New(ctx, store, ledger.Options{Origin: benchOrigin, Signer: signer, Verifier: verifier, MaxIntegrate: 1 << 18,
		Sealer: ring, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	l.Start()
	if _, err := l.Sync(ctx); err != nil {
		return nil, nil, err
	}
	return verifier, kek, l.Close(ctx)
}

// pipelineRate measures events processed per second by the pipeline, from
// webhook records in the ledger to recorded outcomes, beside the ingest
// rate of the same run: the pipeline must keep up with ingress.
func (r *runner) pipelineRate(ctx context.Context) {
	n := r.size(20_000, 100_000)
	name := fmt.Sprintf("pipeline, %d events", n)
	dir := filepath.Join(r.work, "pipeline")
	os.MkdirAll(dir, 0o700)
	_, kek, err := r.bigLedger(ctx, dir, n)
	if err != nil {
		r.fail(name, "events/s", err)
		return
	}
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "ledger.db"), sqlitestore.Options{})
	if err != nil {
		r.fail(name, "events/s", err)
		return
	}
	defer store.Close()
	p := pipeline.New(pipeline.Options{Ledger: store, Sealer: keys.NewRing(store, kek), Store: store, Poll: 5 * time.Millisecond})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { p.Run(pctx); close(done) }()
	for {
		idle, err := p.Idle(ctx)
		if err != nil {
			cancel()
			<-done
			r.fail(name, "events/s", err)
			return
		}
		if idle {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	<-done
	res := Result{Name: name, Value: float64(n) / d.Seconds(), Unit: "events/s",
		Peer: "linegate ingest, 1 event/request, this run", Target: ">= 1.0x peer"}
	if r.ingestRate > 0 {
		res.PeerValue = f64(r.ingestRate)
	}
	r.add(res, true, func(_, ratio float64) bool { return ratio >= 1 })
}
