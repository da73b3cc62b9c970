package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

// fanoutPostgres measures the acknowledgement's p99 with the gateway on
// PostgreSQL, where every event a destination takes is a row of the queue
// table (and its conversation's first one a row of the table of heads)
// written in the commit of its outcome record, beside the same gateway
// without destinations: what queueing in the table costs the
// acknowledgement. One live destination (LINE's Go SDK, in a process of
// its own); the database server runs on this machine too. No target: the
// issue's figure is the SQLite one above.
func (r *runner) fanoutPostgres(ctx context.Context) {
	const rate = 600
	name := fmt.Sprintf("ack latency p99 at %d/s on PostgreSQL, 1 destination", rate)
	if r.opts.Postgres == "" {
		r.results = append(r.results, Result{Name: name, Unit: "ms", Skipped: "no PostgreSQL server given (-postgres)"})
		r.logf("%-44s skipped: no PostgreSQL server given (-postgres)", name)
		return
	}
	const secret = "bench-pg-crm-secret"
	peer, err := r.startPeer(ctx, "sdkecho", "-secret", secret)
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	defer peer.stop()
	dest := fmt.Sprintf(`, destinations: [{name: crm, url: %q, allow_http: true, secret: %s}]`, peer.url+"/callback", secret)
	d := r.dur(2*time.Second, 6*time.Second)
	type round struct {
		p99                   time.Duration
		delivered, failed, ok float64
	}
	run := func(dir string, with bool) (round, error) {
		var rd round
		dsn, drop, err := r.schema(ctx)
		if err != nil {
			return rd, err
		}
		defer drop()
		channel := ""
		if with {
			channel = dest
		}
		g, err := r.startGatewayChannel(ctx, filepath.Join(r.work, dir),
			fmt.Sprintf("log: {origin: %s, checkpoint_interval: 1s}\ndatabase: %q\n", benchOrigin, dsn), channel)
		if err != nil {
			return rd, err
		}
		defer g.stop()
		res, err := sim.Send(ctx, newClient(64), g.webhook+"/webhook/demo", []byte(benchSecret), source(1),
			sim.Load{Rate: rate, Concurrency: 64, Duration: d})
		if err == nil && res.OK() != len(res.Latencies) {
			err = fmt.Errorf("not all answered 200: %v", res.Statuses)
		}
		if err != nil {
			return rd, err
		}
		rd.p99, rd.ok = res.Percentile(0.99), float64(res.OK())
		if with {
			// The events the destination took by the end of the round
			// (linegate_fanout_attempts_total counts events).
			time.Sleep(500 * time.Millisecond)
			m, err := g.metrics()
			if err != nil {
				return rd, err
			}
			rd.delivered = m[`linegate_fanout_attempts_total{destination="crm",result="delivered"}`]
			rd.failed = m[`linegate_fanout_attempts_total{destination="crm",result="failed"}`]
		}
		return rd, nil
	}
	sets := 4
	if r.opts.Quick {
		sets = 1
	}
	var with, without []time.Duration
	var sent, delivered, failed float64
	for i := range sets {
		// The order turns from one set to the next.
		for k := range 2 {
			side := (i+k)%2 == 0
			rd, err := run(fmt.Sprintf("fanout-pg-%v-%d", side, i), side)
			if err != nil {
				r.fail(name, "ms", fmt.Errorf("round %d: %w", i, err))
				return
			}
			if side {
				with = append(with, rd.p99)
				sent += rd.ok
				delivered += rd.delivered
				failed += rd.failed
			} else {
				without = append(without, rd.p99)
			}
		}
	}
	r.add(Result{Name: name, Value: ms(median(with)), Unit: "ms", Peer: "the same gateway on PostgreSQL without destinations, this run",
		PeerValue: f64(ms(median(without))),
		Note: fmt.Sprintf("median of %d rounds of %v a side, in turn (p99 with: %s; without: %s); %.0f webhooks of one event with the destination, which took %.0f events by the end of the rounds (%.0f attempts to deliver one failed)",
			sets, d, msList(with), msList(without), sent, delivered, failed)},
		false, nil)
}
