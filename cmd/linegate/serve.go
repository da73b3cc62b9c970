package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linegate/linegate/examples"
	adminapi "github.com/linegate/linegate/internal/admin"
	"github.com/linegate/linegate/internal/archive"
	"github.com/linegate/linegate/internal/canary"
	"github.com/linegate/linegate/internal/chantoken"
	"github.com/linegate/linegate/internal/console"
	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/media"
	"github.com/linegate/linegate/internal/objstore"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"github.com/linegate/linegate/internal/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"
)

// shutdownTimeout bounds the drain of in-flight requests on shutdown.
const shutdownTimeout = 15 * time.Second

func newLogger(e *env, c LoggingConfig) (*slog.Logger, error) {
	var level slog.Level
	if c.Level != "" {
		if err := level.UnmarshalText([]byte(c.Level)); err != nil {
			return nil, fmt.Errorf("config: logging.level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
}

// privateDataDir creates the data directory, or makes an existing one
// accessible to its owner alone (0700), whatever the umask it was made
// under: it holds the ledger and the keys. It logs a change.
func privateDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if was := fi.Mode().Perm(); was&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data_dir: make %s private: %w", dir, err)
		}
		log.Warn("the data directory was open to other users: made it 0700", "data_dir", dir, "was", fmt.Sprintf("%#o", was))
	}
	return nil
}

func runServe(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "serve", "[-config FILE] [-exit-with-parent=false]")
	configPath := flags.String("config", "", "YAML config file (default: the built-in example, examples/linegate.yaml)")
	withParent := flags.Bool("exit-with-parent", true, "drain and stop when the process that started serve exits (as go run does when killed); off under nohup, or with -exit-with-parent=false")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log, err := newLogger(e, cfg.Logging)
	if err != nil {
		return err
	}
	if *configPath == "" {
		log.Warn("no -config given: using the built-in example config (demo secrets; not for production)")
	}
	// Everything the config names is checked before anything is created.
	if err := checkConfigFiles(ctx, e, cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *withParent {
		var stopWatch func()
		ctx, stopWatch = exitWithParent(ctx, log)
		defer stopWatch()
	}
	return serve(ctx, e, cfg, log)
}

// serve runs the gateway until ctx ends, then drains it.
//
// It starts in this order: the channels' secrets and the admin token (from
// the config: nothing is created before they resolve); the storage, whose
// SQLite lock makes this gateway the only process on the data directory
// before anything in it is created; the checkpoint keys and the key ring;
// the ledger, held to what it published; the responder (the outbound
// sender and the rules); the pipeline and the ingress; the background
// jobs; the admin API; the listeners.
//
// It stops in the order shutdown documents, so that nothing acknowledged
// is lost and every record is integrated and signed before the store
// closes.
func serve(ctx context.Context, e *env, cfg *Config, log *slog.Logger) error {
	start := time.Now()
	channels, secrets, err := resolveChannels(e, cfg)
	if err != nil {
		return err
	}
	adminToken, err := cfg.adminToken(e.getenv)
	if err != nil {
		return err
	}
	g := &instance{cfg: cfg, log: log}
	defer g.close()
	if err := g.openArchive(ctx, e); err != nil {
		return err
	}
	if err := g.openStorage(ctx, e); err != nil {
		return err
	}
	if err := g.openLedger(ctx); err != nil {
		return err
	}
	g.tokens = startTokens(ctx, cfg, secrets, g.led, log)
	if g.sender, g.engine, err = newResponder(ctx, e, cfg, secrets, g.led, g.store, log); err != nil {
		return err
	}
	g.canary = newCanary(cfg, g.led, g.store, g.sender, log)
	if err := g.newFanout(e); err != nil {
		return err
	}
	if err := g.newHandoff(e); err != nil {
		return err
	}
	g.startPipeline(channels)
	g.startJobs()
	g.newAdmin(e, adminToken)
	g.startArchive()
	if err := g.newConsole(e); err != nil {
		return err
	}
	if err := g.startMedia(ctx, secrets); err != nil {
		return err
	}
	g.startMonitor()
	if err := g.startProxy(e); err != nil {
		return err
	}
	ls, err := g.listen()
	if err != nil {
		return err
	}
	log.Info("listening", "listener", "webhook", "addr", ls.pubLn.Addr().String(), "tls", cfg.TLS != nil)
	log.Info("listening", "listener", "admin", "addr", ls.adminLn.Addr().String())
	log.Info("ready", "origin", cfg.Log.Origin, "tree_size", g.led.Head().Size, "channels", len(channels),
		"startup_ms", time.Since(start).Milliseconds())

	eg, egCtx := errgroup.WithContext(ctx)
	eg.Go(func() error { return serveUntilClosed(ls.pubSrv, ls.pubLn) })
	eg.Go(func() error { return serveUntilClosed(ls.adminSrv, ls.adminLn) })
	eg.Go(g.proxy.serve)
	eg.Go(func() error {
		<-egCtx.Done()
		return g.shutdown(ls)
	})
	err = eg.Wait()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

// instance is the gateway that serve runs, built in start-up order.
type instance struct {
	cfg *Config
	log *slog.Logger

	store    backend
	ring     *keys.Ring
	signer   note.Signer
	verifier note.Verifier
	release  []func() // the leases held, released before the store closes

	led     *ledger.Ledger
	tokens  *chantoken.Set // the channel access tokens linegate issues
	sender  *outbound.Sender
	engine  *rules.Engine
	pipe    *pipeline.Pipeline
	ingress *webhook.Handler
	api     *adminapi.API
	reg     *prometheus.Registry
	canary  *canary.Watch // the canary: round trips, leaks
	fan     *fanoutRun    // the fan-out to the destinations (nil: none)
	proxy   *proxyServer  // the Messaging API proxy (nil: none)
	blobs   media.Blobs   // object storage for large media (nil: the store only)
	handoff *handoff.Service

	console *console.Console // the web console (nil: none configured)

	stopPipe context.CancelFunc // nil until the pipeline runs
	pipeDone chan struct{}
	// The background jobs: they stop after the pipeline and the ledger,
	// before the store closes.
	bgCtx  context.Context
	stopBg context.CancelFunc
	bg     sync.WaitGroup
	hup    chan os.Signal

	// The archive: object storage and witnesses (nil if not configured).
	archive *archive.Publisher
	bucket  *objstore.S3
}

// resolveChannels reads the channels' secrets and audiences: the ingress's
// channels and the responder's secrets.
func resolveChannels(e *env, cfg *Config) ([]webhook.Channel, map[string]channelSecrets, error) {
	var channels []webhook.Channel
	secrets := map[string]channelSecrets{}
	for _, ch := range cfg.Channels {
		s, err := ch.resolve(e.getenv)
		if err != nil {
			return nil, nil, err
		}
		secrets[ch.ID] = s
		c := webhook.Channel{ID: ch.ID, Retention: ch.Retention,
			Verifiers: []line.Verifier{line.NewHMACVerifier("secret", s.secret)}}
		for _, a := range ch.Audiences {
			subjects, err := a.subjects()
			if err != nil {
				return nil, nil, fmt.Errorf("config: channel %q: %w", ch.ID, err)
			}
			c.Audiences = append(c.Audiences, webhook.Audience{Name: a.Name, Retention: a.Retention, Subjects: subjects})
		}
		if s.next != nil {
			c.Verifiers = append(c.Verifiers, line.NewHMACVerifier("next_secret", s.next))
		}
		channels = append(channels, c)
	}
	return channels, secrets, nil
}

// openStorage opens the data directory and the database, the checkpoint
// keys (created on the first start) and the key ring.
func (g *instance) openStorage(ctx context.Context, e *env) error {
	cfg := g.cfg
	if err := privateDataDir(cfg.DataDir, g.log); err != nil {
		return err
	}
	// The database first: on SQLite its lock makes this gateway the only
	// process on the data directory before anything in it is created.
	store, err := openBackend(ctx, e, cfg, exclusive)
	if err != nil {
		return err
	}
	g.store = store
	// Public: the signed checkpoints published here (and the anchors) are
	// for anyone to read, and hold no ledger data.
	if err := os.MkdirAll(cfg.Log.PublishDir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.Log.KeyFile); errors.Is(err, fs.ErrNotExist) {
		vkey, err := generateKey(cfg.Log.KeyFile, cfg.Log.Origin)
		if err != nil {
			return err
		}
		g.log.Info("created a checkpoint key pair: keep log.key secret, give log.vkey to auditors",
			"key", cfg.Log.KeyFile, "vkey_file", vkeyPath(cfg.Log.KeyFile), "vkey", vkey)
	}
	if g.signer, g.verifier, err = loadKeys(cfg.Log.KeyFile, cfg.Log.Origin); err != nil {
		return err
	}
	g.ring, err = openRing(ctx, e, cfg, store, true, g.log)
	return err
}

// openLedger opens the ledger over the store and starts it. Replicas on one
// PostgreSQL database (a store with leases): one integrates and signs, and
// one dispatches, each under a lease; all of them ingest and share the
// pipeline's work.
func (g *instance) openLedger(ctx context.Context) error {
	cfg := g.cfg
	var seqLease ledger.Lease
	if ls, ok := g.store.(leases); ok {
		sl := ls.SequencerLease()
		g.release = append(g.release, sl.Release)
		seqLease = sl
	}
	led, err := ledger.New(ctx, g.store, ledger.Options{
		Lease:              seqLease,
		Sealer:             g.ring,
		Origin:             cfg.Log.Origin,
		Signer:             g.signer,
		Verifier:           g.verifier,
		QueueSize:          cfg.Ledger.QueueSize,
		MaxBatch:           cfg.Ledger.MaxBatch,
		CheckpointInterval: cfg.Log.CheckpointInterval,
		CheckpointFile:     filepath.Join(cfg.Log.PublishDir, "checkpoint"),
		AnchorsDir:         cfg.Log.AnchorsDir,
		Logger:             g.log,
	})
	if err != nil {
		return withRollbackHint(cfg, err)
	}
	if err := g.holdToBucket(ctx, led); err != nil {
		return err
	}
	led.Start()
	g.led = led
	return nil
}

// startPipeline starts the pipeline, which answers events with the rule
// engine, and builds the ingress, which wakes it.
func (g *instance) startPipeline(channels []webhook.Channel) {
	cfg := g.cfg
	policies := map[string]pipeline.ChannelPolicy{}
	for _, ch := range cfg.Channels {
		policies[ch.ID] = pipeline.ChannelPolicy{
			QuarantineDrift: ch.DriftPolicy == "quarantine", HoldSkewed: ch.ClockSkew == "hold", BotUserID: ch.BotUserID}
	}
	o := pipeline.Options{
		Ledger: g.store, Log: g.led, Sealer: g.ring, Store: g.store, Channels: policies, Owner: replicaName(), Logger: g.log,
		Action:  answer(g.engine),
		Workers: cfg.Pipeline.Workers, ClockThreshold: cfg.Pipeline.ClockThreshold, DedupHorizon: cfg.Pipeline.DedupHorizon,
	}
	g.fanoutPipeline(&o)
	o.Action = g.gateHandoff(o.Action)   // conversations people own: held for them
	o.Action = g.canary.Action(o.Action) // canary round trips and leaks, before the rules
	o.Action = g.noteReplies(o.Action)
	if ls, ok := g.store.(leases); ok {
		dl := ls.DispatchLease()
		g.release = append(g.release, dl.Release)
		o.Claimer, o.DispatchLease = ls, dl
	}
	g.pipe = pipeline.New(o)
	ctx, stop := context.WithCancel(context.Background())
	g.stopPipe, g.pipeDone = stop, make(chan struct{})
	go func() { g.pipe.Run(ctx); close(g.pipeDone) }()

	g.ingress = webhook.New(webhook.Options{Channels: channels, Ledger: g.led, MaxBody: cfg.MaxBodyBytes, Logger: g.log, Appended: g.pipe.Kick,
		Rejections: webhook.RejectionPolicy{Retention: cfg.Rejections.Retention, PerSecond: cfg.Rejections.PerSecond,
			Burst: cfg.Rejections.Burst, SummaryEvery: cfg.Rejections.SummaryEvery}, ByBot: singleURLBots(cfg)})
}

// startJobs starts the background jobs, each of its owner's package:
// switch refreshes (outbound), anchors (ledger), cooldown expiry (rules),
// purges and the subject index (retention), rejection summaries
// (webhook). The admin API's rule reloads start with it (newAdmin).
func (g *instance) startJobs() {
	cfg, log := g.cfg, g.log
	g.bgCtx, g.stopBg = context.WithCancel(context.Background())
	ctx := g.bgCtx
	g.bg.Go(func() { g.sender.RefreshLoop(ctx, 500*time.Millisecond) })
	anchorLoc, _ := time.LoadLocation(cfg.Log.AnchorTZ) // checked by parseConfig
	g.bg.Go(func() { g.led.RunAnchors(ctx, anchorLoc, cfg.Log.AnchorEvery) })
	purgeEvery := time.Hour
	if cfg.Retention.PurgeEvery != nil {
		purgeEvery = *cfg.Retention.PurgeEvery
	}
	if purgeEvery > 0 {
		g.bg.Go(func() { rules.RunCooldownExpiry(ctx, g.store, purgeEvery, g.led.Sequencing, log) })
		g.bg.Go(func() {
			retention.RunPurges(ctx, g.store, g.led, g.ring, cfg.policies(), purgeEvery, g.led.Sequencing, log)
		})
	}
	g.bg.Go(func() { retention.RunSubjectIndex(ctx, g.store, 250*time.Millisecond, g.led.Busy, log) })
	g.bg.Go(func() { g.ingress.RunRejectionSummaries(ctx) })
	g.startHandoffJobs()
}

// newAdmin builds the metrics registry and the admin API, and starts its
// rule reloads: when another replica reloads, and on SIGHUP (which reloads
// the key encryption keys too).
func (g *instance) newAdmin(e *env, token []byte) {
	cfg := g.cfg
	g.reg = prometheus.NewRegistry()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.reg.MustRegister(g.led.Collectors()...)
	g.reg.MustRegister(g.ingress.Collectors()...)
	g.reg.MustRegister(g.canary.Collectors()...)
	g.reg.MustRegister(g.pipe.Collectors()...)
	g.reg.MustRegister(g.sender.Collectors()...)
	g.reg.MustRegister(g.tokens.Collectors()...)
	g.reg.MustRegister(g.fanoutCollectors()...)
	g.reg.MustRegister(g.handoff.Collectors()...)
	g.api = adminapi.New(adminapi.Options{
		Ledger: g.led, Store: g.store, Pipeline: g.pipe, Switches: g.sender, Rules: g.engine, Keys: g.ring,
		LoadRules: func() (*rules.Set, error) { return loadRules(e, cfg) },
		LoadKEKs: func() (keys.Config, error) {
			c := cfg
			if !cfg.builtin {
				var err error
				if c, err = loadConfig(cfg.path); err != nil {
					return keys.Config{}, err
				}
			}
			return c.kekConfig(e.getenv)
		},
		Policies: cfg.policies(), Origin: cfg.Log.Origin, Replica: replicaName(), Token: token, Metrics: g.reg, Logger: g.log,
		Channels:      channelIDs(cfg),
		Canary:        g.canary,
		Conversations: g.handoff,
		Routes:        g.fanoutRoutes,
	})
	g.reg.MustRegister(g.api.Collectors()...)
	g.reg.MustRegister(g.sender.DryRunGauges()...)
	g.bg.Go(func() { g.api.WatchReloads(g.bgCtx, 500*time.Millisecond) })
	g.hup = make(chan os.Signal, 1)
	signal.Notify(g.hup, syscall.SIGHUP)
	g.bg.Go(func() { g.api.ReloadOnSignal(g.bgCtx, g.hup) })
}

// listeners are the webhook listener (public, bounded, TLS if configured)
// and the admin listener, with their servers.
type listeners struct {
	pubLn, adminLn   net.Listener
	pubSrv, adminSrv *http.Server
}

// listen opens the listeners.
func (g *instance) listen() (*listeners, error) {
	cfg, log := g.cfg, g.log
	pubLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pubLn.Close()
		return nil, err
	}
	var publicLog = g.led.Handler()
	if !cfg.Log.Public {
		publicLog = nil
	}
	publicLog = g.cosignedRoute(publicLog)
	ls := &listeners{
		pubSrv:   withTimeouts(&http.Server{Handler: g.ingress.Routes(g.api.Health(), g.api.Ready(), publicLog)}, log),
		adminSrv: withTimeouts(&http.Server{Handler: g.adminHandler()}, log),
		adminLn:  adminLn,
	}
	// The webhook listener is bounded (connections in total and per
	// client, a short idle time), so that idle or slow clients cannot
	// take the descriptors the admin listener and the database need.
	limLn := webhook.NewLimitListener(pubLn, webhook.ConnLimits{Max: maxConnections(cfg.Connections.Max, log), PerClient: cfg.Connections.PerClient})
	g.reg.MustRegister(limLn.Collectors()...)
	ls.pubLn = limLn
	ls.pubSrv.ConnState = limLn.Track
	ls.pubSrv.ConnContext = limLn.ConnContext
	ls.pubSrv.IdleTimeout = cfg.Connections.IdleTimeout
	// LINE sends its small bodies at once: a request may take
	// webhookReadTimeout to arrive whole, and one slow to send its body
	// may lose its connection to a new one when the listener is full. One
	// request at a time on a connection (HTTP/1.1), as the limits assume.
	ls.pubSrv.ReadTimeout = webhookReadTimeout
	ls.pubSrv.Protocols = new(http.Protocols)
	ls.pubSrv.Protocols.SetHTTP1(true)
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			pubLn.Close()
			adminLn.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		ls.pubSrv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cfg.TLS.MinVersion == "1.3" {
			ls.pubSrv.TLSConfig.MinVersion = tls.VersionTLS13
		}
		ls.pubLn = tls.NewListener(ls.pubLn, ls.pubSrv.TLSConfig)
	}
	return ls, nil
}

// shutdown drains the gateway, in this order:
//
//  1. The webhook listener stops taking requests, and in-flight webhooks
//     finish their appends (answered 200 only once durable); the last
//     summary of rejected webhooks is recorded.
//  2. The pipeline finishes the events in hand and records their outcomes;
//     what is still queued runs at the next start. Then the fan-out's
//     workers record the delivery attempts in hand, and stop.
//  3. The ledger commits what is queued, integrates it and publishes a
//     final checkpoint.
//  4. The background jobs stop (switch refreshes, anchors, purges, the
//     subject index, rule reloads, SIGHUP).
//  5. The admin listener stops: /metrics and /readyz answer until then.
//
// Then serve's deferred close releases the leases and closes the store.
func (g *instance) shutdown(ls *listeners) error {
	g.log.Info("shutting down: draining requests")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := ls.pubSrv.Shutdown(ctx)
	err = errors.Join(err, g.proxy.shutdown(ctx))
	if ferr := g.ingress.FlushRejections(ctx); ferr != nil {
		g.log.Warn("the last summary of rejected webhooks was not recorded", "err", ferr)
	}
	g.stopPipeline()
	g.stopFanout()
	// The tokens linegate issued are revoked, and recorded, while the
	// ledger still takes records.
	if terr := g.tokens.Close(ctx); terr != nil {
		g.log.Warn("revoking the channel access tokens failed: they stay valid until they expire", "err", terr)
	}
	if cerr := g.led.Close(ctx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	g.stopJobs()
	err = errors.Join(err, ls.adminSrv.Shutdown(ctx))
	g.log.Info("stopped", "tree_size", g.led.Head().Size)
	return err
}

// close releases what serve holds, in shutdown's order, when serve
// returns: after shutdown, only the leases and the store; after a failed
// start, whatever had started but the ledger, which is left as it is (what
// it appended is durable, and the next start integrates it).
func (g *instance) close() {
	g.stopPipeline()
	g.stopFanout()
	if g.tokens != nil { // after a failed start: shutdown has not revoked them
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		g.tokens.Close(ctx)
		cancel()
	}
	g.stopJobs()
	for _, release := range g.release {
		release()
	}
	if g.store != nil {
		g.store.Close()
	}
}

// stopPipeline stops the pipeline and waits for it, once.
func (g *instance) stopPipeline() {
	if g.stopPipe != nil {
		g.stopPipe()
		<-g.pipeDone
	}
}

// stopJobs stops the background jobs and waits for them.
func (g *instance) stopJobs() {
	if g.hup != nil {
		signal.Stop(g.hup)
	}
	if g.stopBg != nil {
		g.stopBg()
		g.bg.Wait()
	}
}

// maxConnections returns the webhook listener's connection limit: the
// config's, or by default 4096 but at most half of the file descriptors
// the process may open (Go raises the soft limit to the hard one), so
// that the admin listener, the database and outbound calls keep theirs.
func maxConnections(configured int, log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return configured
	}
	half := int(min(lim.Cur/2, 1<<20))
	if configured == 0 {
		return max(min(4096, half), 16)
	}
	if configured > half {
		log.Warn("connections.max is more than half the file descriptors this process may open: idle clients could starve the admin listener and the database",
			"max", configured, "nofile", lim.Cur)
	}
	return configured
}

// webhookReadTimeout bounds the time a webhook request takes to arrive,
// headers and body.
const webhookReadTimeout = 5 * time.Second

// withTimeouts gives a server its timeouts, its header cap and its error
// log: no client holds a connection, or sends headers, without end.
func withTimeouts(s *http.Server, log *slog.Logger) *http.Server {
	s.ReadHeaderTimeout = 5 * time.Second
	s.ReadTimeout = 15 * time.Second
	s.WriteTimeout = 15 * time.Second
	s.IdleTimeout = 120 * time.Second
	s.MaxHeaderBytes = 64 << 10
	s.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	return s
}

func serveUntilClosed(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// replicaName names this process among the replicas: host and process id.
func replicaName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// loadRules loads the rule set the config names, with the forward secrets
// of its environment. The built-in config's files come from the binary.
func loadRules(e *env, cfg *Config) (*rules.Set, error) {
	src := &rules.Sources{ReadFile: os.ReadFile, Getenv: e.getenv}
	if cfg.builtin {
		src.ReadFile = examples.ReadFile
	}
	set, err := rules.Load(cfg.RulesFiles, &rules.File{Rules: cfg.Rules, Consent: cfg.Consent}, src)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return set, nil
}

// newResponder builds the outbound Sender and the rule engine, and records
// the rule set in the ledger when it changed.
func newResponder(ctx context.Context, e *env, cfg *Config, secrets map[string]channelSecrets, led *ledger.Ledger,
	store backend, log *slog.Logger) (*outbound.Sender, *rules.Engine, error) {
	clients := map[string]*outbound.Client{}
	dry := map[string]bool{}
	limits := map[string]float64{}
	infos := map[string]rules.ChannelInfo{}
	for _, ch := range cfg.Channels {
		base := ch.LineAPIBase
		if base == "" {
			base = cfg.LineAPIBase
		}
		clients[ch.ID] = &outbound.Client{Base: base, Token: secrets[ch.ID].token, Tokens: secrets[ch.ID].tokens, HTTP: &http.Client{Timeout: 10 * time.Second}}
		dry[ch.ID] = ch.DryRun
		limits[ch.ID] = ch.RateLimit
		infos[ch.ID] = rules.ChannelInfo{Retention: ch.Retention, AllowDryRunHeader: ch.AllowDryRunHeader}
	}
	envKill := strings.EqualFold(strings.TrimSpace(e.getenv("REPLY_ENABLE")), "false")
	if envKill {
		log.Warn("REPLY_ENABLE=false: the kill switch is on, nothing will be sent")
	}
	sender := outbound.NewSender(outbound.SenderOptions{
		Clients: clients, Ledger: led, State: store, EnvKillSwitch: envKill,
		DryRunChannels: dry, DryRunAll: cfg.DryRun, RateLimits: limits, Logger: log,
		QuotaBudgets: quotaBudgets(cfg),
		Annotate:     sentImages(cfg),
	})
	if err := sender.Refresh(ctx); err != nil {
		return nil, nil, err
	}
	set, err := loadRules(e, cfg)
	if err != nil {
		return nil, nil, err
	}
	engine := rules.NewEngine(set, rules.EngineOptions{
		Cooldowns: store,
		Sender:    sender, Consent: led, Ledger: led, Channels: infos, LookupHosts: cfg.LookupHosts, Logger: log,
	})
	if err := adminapi.RecordRules(ctx, led, store, set, "start"); err != nil {
		return nil, nil, err
	}
	log.Info("rules loaded", "rules", len(set.Rules), "sha256", set.Hash)
	return sender, engine, nil
}

// answer runs the rule engine on the pipeline's events: it sees each event
// and what it needs of its queue item.
func answer(engine *rules.Engine) pipeline.Action {
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, ev *line.Event) error {
		return engine.Handle(ctx, rules.Delivery{Key: it.Key, Channel: it.Channel, Destination: it.Destination, Retention: it.Retention,
			Subjects: it.Subjects, Record: it.Record, ReceivedMs: it.ReceivedMs, Header: it.Header}, ev)
	})
}

// channelIDs returns the ids of the config's channels.
func channelIDs(cfg *Config) []string {
	ids := make([]string, 0, len(cfg.Channels))
	for _, ch := range cfg.Channels {
		ids = append(ids, ch.ID)
	}
	return ids
}
