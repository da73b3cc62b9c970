package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"github.com/linegate/linegate/internal/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

func serve(ctx context.Context, e *env, cfg *Config, log *slog.Logger) error {
	if err := privateDataDir(cfg.DataDir, log); err != nil {
		return err
	}
	// The database first: on SQLite its lock makes this gateway the only
	// process on the data directory before anything in it is created.
	start := time.Now()
	store, err := openBackend(ctx, e, cfg, exclusive)
	if err != nil {
		return err
	}
	defer store.Close()
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
		log.Info("created a checkpoint key pair: keep log.key secret, give log.vkey to auditors",
			"key", cfg.Log.KeyFile, "vkey_file", vkeyPath(cfg.Log.KeyFile), "vkey", vkey)
	}
	signer, verifier, err := loadKeys(cfg.Log.KeyFile, cfg.Log.Origin)
	if err != nil {
		return err
	}
	var channels []webhook.Channel
	secrets := map[string]channelSecrets{}
	for _, ch := range cfg.Channels {
		s, err := ch.resolve(e.getenv)
		if err != nil {
			return err
		}
		secrets[ch.ID] = s
		c := webhook.Channel{ID: ch.ID, Retention: ch.Retention,
			Verifiers: []line.Verifier{line.NewHMACVerifier("secret", s.secret)}}
		for _, a := range ch.Audiences {
			subjects, err := a.subjects()
			if err != nil {
				return fmt.Errorf("config: channel %q: %w", ch.ID, err)
			}
			c.Audiences = append(c.Audiences, webhook.Audience{Name: a.Name, Retention: a.Retention, Subjects: subjects})
		}
		if s.next != nil {
			c.Verifiers = append(c.Verifiers, line.NewHMACVerifier("next_secret", s.next))
		}
		channels = append(channels, c)
	}
	adminToken, err := cfg.adminToken(e.getenv)
	if err != nil {
		return err
	}

	ring, err := openRing(ctx, e, cfg, store, true, log)
	if err != nil {
		return err
	}
	// Replicas on one PostgreSQL database: one integrates and signs, and
	// one dispatches, each under a lease; all of them ingest and share the
	// pipeline's work.
	var seqLease, dispatchLease ledger.Lease
	var claimer pipeline.Claimer
	holding := func() bool { return true } // alone on SQLite
	if pg, ok := store.(*pgstore.Store); ok {
		sl, dl := pg.SequencerLease(), pg.DispatchLease()
		defer sl.Release()
		defer dl.Release()
		seqLease, dispatchLease, claimer = sl, dl, pg
		holding = sl.Holding
	}
	led, err := ledger.New(ctx, store, ledger.Options{
		Lease:              seqLease,
		Sealer:             ring,
		Origin:             cfg.Log.Origin,
		Signer:             signer,
		Verifier:           verifier,
		QueueSize:          cfg.Ledger.QueueSize,
		MaxBatch:           cfg.Ledger.MaxBatch,
		CheckpointInterval: cfg.Log.CheckpointInterval,
		CheckpointFile:     filepath.Join(cfg.Log.PublishDir, "checkpoint"),
		AnchorsDir:         cfg.Log.AnchorsDir,
		Logger:             log,
	})
	if err != nil {
		return withRollbackHint(cfg, err)
	}
	led.Start()

	policies := map[string]pipeline.ChannelPolicy{}
	for _, ch := range cfg.Channels {
		policies[ch.ID] = pipeline.ChannelPolicy{
			QuarantineDrift: ch.DriftPolicy == "quarantine", HoldSkewed: ch.ClockSkew == "hold", BotUserID: ch.BotUserID}
	}
	sender, engine, err := newResponder(ctx, e, cfg, secrets, led, store, log)
	if err != nil {
		return err
	}
	// Background work: switches refresh, anchors, purges. It stops after
	// the pipeline and the ledger, before the store closes.
	bgCtx, stopBg := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopBg()
	bg.Go(func() { sender.RefreshLoop(bgCtx, 500*time.Millisecond) })
	anchorLoc, _ := time.LoadLocation(cfg.Log.AnchorTZ) // checked by parseConfig
	bg.Go(func() { led.RunAnchors(bgCtx, anchorLoc, cfg.Log.AnchorEvery) })
	purgeEvery := time.Hour
	if cfg.Retention.PurgeEvery != nil {
		purgeEvery = *cfg.Retention.PurgeEvery
	}
	if purgeEvery > 0 {
		bg.Go(func() { rules.RunCooldownExpiry(bgCtx, store, purgeEvery, led.Sequencing, log) })
		bg.Go(func() { retention.RunPurges(bgCtx, store, led, ring, cfg.policies(), purgeEvery, led.Sequencing, log) })
	}
	bg.Go(func() { retention.RunSubjectIndex(bgCtx, store, 250*time.Millisecond, led.Busy, log) })
	pipe := pipeline.New(pipeline.Options{
		Ledger: store, Log: led, Sealer: ring, Store: store, Channels: policies, Claimer: claimer, DispatchLease: dispatchLease, Owner: replicaName(), Logger: log, Action: answer(engine), Busy: led.Busy,
		Workers: cfg.Pipeline.Workers, ClockThreshold: cfg.Pipeline.ClockThreshold, DedupHorizon: cfg.Pipeline.DedupHorizon,
	})
	pipeCtx, stopPipe := context.WithCancel(context.Background())
	defer stopPipe()
	pipeDone := make(chan struct{})
	go func() { pipe.Run(pipeCtx); close(pipeDone) }()

	ingress := webhook.New(webhook.Options{Channels: channels, Ledger: led, MaxBody: cfg.MaxBodyBytes, Logger: log, Appended: pipe.Kick,
		Rejections: webhook.RejectionPolicy{Retention: cfg.Rejections.Retention, PerSecond: cfg.Rejections.PerSecond,
			Burst: cfg.Rejections.Burst, SummaryEvery: cfg.Rejections.SummaryEvery}})
	bg.Go(func() { ingress.RunRejectionSummaries(bgCtx) })

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(led.Collectors()...)
	reg.MustRegister(ingress.Collectors()...)
	reg.MustRegister(pipe.Collectors()...)
	reg.MustRegister(sender.Collectors()...)

	health := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }
	ready := func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := led.Ready(ctx); err != nil {
			log.Warn("not ready", "err", err)
			// The error says why (the store, a record refused, a
			// published checkpoint not extended): never a secret.
			http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}
	logHandler := http.StripPrefix("/log", led.Handler())

	pub := http.NewServeMux()
	pub.Handle("POST /webhook/{channel}", ingress)
	pub.HandleFunc("GET /healthz", health)
	pub.HandleFunc("GET /readyz", ready)
	if cfg.Log.Public {
		pub.Handle("GET /log/", logHandler)
	}

	admin := http.NewServeMux()
	admin.HandleFunc("GET /healthz", health)
	admin.HandleFunc("GET /readyz", ready)
	admin.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	admin.Handle("GET /log/", logHandler)
	authed := http.NewServeMux()
	authed.HandleFunc("GET /admin/status", func(w http.ResponseWriter, r *http.Request) {
		h := led.Head()
		n, err := store.Count(r.Context())
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		idle, err := pipe.Idle(r.Context())
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"origin": cfg.Log.Origin, "tree_size": h.Size, "records": n, "checkpoint": string(h.Checkpoint),
			"pipeline_idle": idle, "kill_switch": sender.KillSwitch(), "rules_sha256": engine.Rules().Hash,
			"kek": ring.Current(), "replica": replicaName(), "sequencer": holding(), "dry_run": sender.DryRunStatus(),
		})
	})
	adm := &adminAPI{cfg: cfg, e: e, led: led, store: store, ring: ring, sender: sender, engine: engine, log: log}
	adm.routes(authed)
	adm.holdRoutes(authed)
	adm.subjectRoutes(authed)
	bg.Go(func() { adm.watchReloads(bgCtx, 500*time.Millisecond) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if _, err := adm.reload(context.Background(), "SIGHUP"); err != nil {
				log.Error("rules not reloaded", "err", err)
			}
			if err := adm.reloadKEKs(); err != nil {
				log.Error("key encryption keys not reloaded", "err", err)
			}
		}
	}()
	authed.HandleFunc("GET /debug/pprof/", pprof.Index)
	authed.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	authed.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	authed.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	admin.Handle("/admin/", bearer(adminToken, authed))
	admin.Handle("/debug/pprof/", bearer(adminToken, authed))

	pubLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pubLn.Close()
		return err
	}
	pubSrv := newServer(pub, log)
	// The webhook listener is bounded (connections in total and per
	// client, a short idle time), so that idle or slow clients cannot
	// take the descriptors the admin listener and the database need.
	limLn := webhook.NewLimitListener(pubLn, webhook.ConnLimits{Max: maxConnections(cfg.Connections.Max, log), PerClient: cfg.Connections.PerClient})
	reg.MustRegister(limLn.Collectors()...)
	pubLn = limLn
	pubSrv.ConnState = limLn.Track
	pubSrv.IdleTimeout = cfg.Connections.IdleTimeout
	adminSrv := newServer(admin, log)
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		pubSrv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cfg.TLS.MinVersion == "1.3" {
			pubSrv.TLSConfig.MinVersion = tls.VersionTLS13
		}
		pubLn = tls.NewListener(pubLn, pubSrv.TLSConfig)
	}
	h := led.Head()
	log.Info("listening", "listener", "webhook", "addr", pubLn.Addr().String(), "tls", cfg.TLS != nil)
	log.Info("listening", "listener", "admin", "addr", adminLn.Addr().String())
	log.Info("ready", "origin", cfg.Log.Origin, "tree_size", h.Size, "channels", len(channels),
		"startup_ms", time.Since(start).Milliseconds())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntilClosed(pubSrv, pubLn) })
	g.Go(func() error { return serveUntilClosed(adminSrv, adminLn) })
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: draining requests")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		// Stop taking webhooks first and let in-flight ones finish their
		// appends; then close the ledger, which commits what is queued,
		// integrates it, and publishes a final checkpoint.
		err := pubSrv.Shutdown(sctx)
		if ferr := ingress.FlushRejections(sctx); ferr != nil {
			log.Warn("the last summary of rejected webhooks was not recorded", "err", ferr)
		}
		// Then the pipeline finishes the events in hand and records their
		// outcomes; what is still queued runs at the next start.
		stopPipe()
		<-pipeDone
		if cerr := led.Close(sctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
		stopBg()
		bg.Wait()
		err = errors.Join(err, adminSrv.Shutdown(sctx))
		log.Info("stopped", "tree_size", led.Head().Size)
		return err
	})
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
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

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func serveUntilClosed(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bearer admits requests that carry the admin token; with no token
// configured, it admits none.
func bearer(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := cutPrefixFold(r.Header.Get("Authorization"), "Bearer ")
		if len(token) == 0 || !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="linegate admin"`)
			http.Error(w, "unauthorized\n", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !equalFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// replicaName names this process among the replicas: host and process id.
func replicaName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// periodically calls fn at every interval until ctx ends.
func periodically(ctx context.Context, every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// answer runs the rule engine on the pipeline's events: it sees each event
// and what it needs of its queue item.
func answer(engine *rules.Engine) pipeline.Action {
	return pipeline.ActionFunc(func(ctx context.Context, it *pipeline.Item, ev *line.Event) error {
		return engine.Handle(ctx, rules.Delivery{Key: it.Key, Channel: it.Channel, Destination: it.Destination, Retention: it.Retention,
			Subjects: it.Subjects, Record: it.Record, ReceivedMs: it.ReceivedMs, Header: it.Header}, ev)
	})
}
