package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/sim"
	"golang.org/x/mod/sumdb/note"
)

// ingestPostgres measures ingest with the gateway on PostgreSQL, one
// replica and three, beside the SQLite figure of the same run. All run on
// this one machine, with the database server on it too: the figures show
// what PostgreSQL costs against the embedded database, not how replicas
// scale across machines.
func (r *runner) ingestPostgres(ctx context.Context) {
	for _, n := range []int{1, 3} {
		name := fmt.Sprintf("ingest on PostgreSQL, %d replica, 32 conns", n)
		if n > 1 {
			name = fmt.Sprintf("ingest on PostgreSQL, %d replicas, 32 conns", n)
		}
		if r.opts.Postgres == "" {
			r.results = append(r.results, Result{Name: name, Unit: "req/s", Skipped: "no PostgreSQL server given (-postgres)"})
			r.logf("%-44s skipped: no PostgreSQL server given (-postgres)", name)
			continue
		}
		rate, err := r.ingestReplicas(ctx, n)
		if err != nil {
			r.fail(name, "req/s", err)
			continue
		}
		res := Result{Name: name, Value: rate, Unit: "req/s", Peer: "linegate on SQLite, this run"}
		if r.ingestRate > 0 {
			res.PeerValue = f64(r.ingestRate)
		}
		r.add(res, true, nil)
		if n == 1 {
			dres := Result{Name: name + ", beside the durable SDK peer on PostgreSQL", Value: rate, Unit: "req/s",
				Peer: "official SDK webhook server, one PostgreSQL insert per request", Target: ">= 2.5x peer"}
			if peer, err := r.durablePostgres(ctx); err != nil {
				dres.Error = "peer: " + err.Error()
			} else {
				dres.PeerValue = f64(peer)
			}
			r.add(dres, true, func(_, ratio float64) bool { return ratio >= 2.5 })
		}
	}
}

// durablePostgres measures the durable SDK peer inserting into a fresh
// schema of the PostgreSQL server, under the same load as the gateways.
func (r *runner) durablePostgres(ctx context.Context) (float64, error) {
	dsn, drop, err := r.schema(ctx)
	if err != nil {
		return 0, err
	}
	defer drop()
	peer, err := r.startPeer(ctx, "sdkdurable", "-postgres", dsn)
	if err != nil {
		return 0, err
	}
	defer peer.stop()
	d := r.dur(2*time.Second, 10*time.Second)
	res, err := sim.Send(ctx, newClient(32), peer.url, []byte(benchSecret), source(1), sim.Load{Concurrency: 32, Duration: d})
	if err == nil && res.OK() != len(res.Latencies) {
		err = fmt.Errorf("%d of %d requests not answered 200: %v", len(res.Latencies)-res.OK(), len(res.Latencies), res.Statuses)
	}
	if err != nil {
		return 0, err
	}
	return res.Throughput(), nil
}

// ingestReplicas runs n gateways on a fresh schema of the PostgreSQL
// server, sends to all of them at once for the ingest duration, and
// returns the requests answered 200 per second, all replicas together.
func (r *runner) ingestReplicas(ctx context.Context, n int) (float64, error) {
	dsn, drop, err := r.schema(ctx)
	if err != nil {
		return 0, err
	}
	defer drop()
	dir := filepath.Join(r.work, fmt.Sprintf("pg%d", n))
	os.MkdirAll(dir, 0o700)
	// One log, so one checkpoint key and one key encryption key.
	skey, vkey, err := note.GenerateKey(rand.Reader, benchOrigin)
	if err != nil {
		return 0, err
	}
	keyFile := filepath.Join(dir, "log.key")
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		return 0, err
	}
	os.WriteFile(filepath.Join(dir, "log.vkey"), []byte(vkey+"\n"), 0o644)
	kekFile := filepath.Join(dir, "kek")
	if err := os.WriteFile(kekFile, []byte(keys.GenerateKEK()+"\n"), 0o600); err != nil {
		return 0, err
	}
	extra := fmt.Sprintf("log: {origin: %s, checkpoint_interval: 1s, key_file: %s}\ndatabase: %q\nencryption: {kek_file: %s}\n",
		benchOrigin, keyFile, dsn, kekFile)
	var gws []*gateway
	defer func() {
		for _, g := range gws {
			g.stop()
		}
	}()
	for i := range n {
		g, err := r.startGatewayWith(ctx, filepath.Join(dir, fmt.Sprintf("replica%d", i)), extra)
		if err != nil {
			return 0, err
		}
		gws = append(gws, g)
	}
	d := r.dur(2*time.Second, 10*time.Second)
	var mu sync.Mutex
	var ok int
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for _, g := range gws {
		wg.Go(func() {
			conns := 32 / n
			res, err := sim.Send(ctx, newClient(conns), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), sim.Load{Concurrency: conns, Duration: d})
			mu.Lock()
			defer mu.Unlock()
			if err == nil && res.OK() != len(res.Latencies) {
				err = fmt.Errorf("%d of %d requests not answered 200: %v", len(res.Latencies)-res.OK(), len(res.Latencies), res.Statuses)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if res != nil {
				ok += res.OK()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(ok) / time.Since(start).Seconds(), nil
}

// schema creates a schema of its own in the PostgreSQL server and returns
// a DSN that uses it, and a function that drops it.
func (r *runner) schema(ctx context.Context) (string, func(), error) {
	b := make([]byte, 6)
	rand.Read(b)
	name := "bench_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, r.opts.Postgres)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", nil, err
	}
	drop := func() {
		if c, err := pgx.Connect(context.Background(), r.opts.Postgres); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			c.Close(context.Background())
		}
	}
	u, err := url.Parse(r.opts.Postgres)
	if err != nil {
		drop()
		return "", nil, fmt.Errorf("-postgres: want a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}
