package bench

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

// fanoutAck measures the acknowledgement's p99 in open loop with three
// destinations on the channel (two that answer, each a webhook server on
// LINE's Go SDK checking the signature with its own secret, in processes
// of their own as a team's tools run, and one dead: a closed port) beside
// the same gateway without destinations, in the same run at the same
// load: the fan-out must not slow the acknowledgement to LINE.
// The destinations share the gateway's cores, as the load generator does;
// the note gives the CPU the gateway used a round on each side and the
// destinations in all (from /proc), to tell the gateway's own cost from
// theirs.
func (r *runner) fanoutAck(ctx context.Context) {
	const rate = 1200
	name := fmt.Sprintf("ack latency p99 at %d/s, 3 destinations (1 dead)", rate)
	d := r.dur(2*time.Second, 6*time.Second)
	var live []string
	var peers []*peerProc
	for _, secret := range []string{"bench-owner-secret", "bench-crm-secret"} {
		// sdkecho answers 400 to a body its SDK does not verify with
		// secret: the gateway counts that a failed attempt.
		p, err := r.startPeer(ctx, "sdkecho", "-secret", secret)
		if err != nil {
			r.fail(name, "ms", err)
			return
		}
		defer p.stop()
		live = append(live, p.url+"/callback")
		peers = append(peers, p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there: every attempt fails at once
	dests := fmt.Sprintf(`, destinations: [{name: owner, url: %q, allow_http: true, secret: bench-owner-secret, role: reply_owner},
      {name: crm, url: %q, allow_http: true, secret: bench-crm-secret},
      {name: dead, url: "http://%s/hook", allow_http: true, secret: bench-dead-secret}]`, live[0], live[1], dead)
	load := sim.Load{Rate: rate, Concurrency: 64, Duration: d}
	var delivered, failed float64
	// Each side's mean group commit of the writer
	// (linegate_ledger_append_seconds), where queue rows show, and the
	// CPU the gateway used in the round.
	var commitWith, commitWithout, cpuWith, cpuWithout []time.Duration
	var workWith, workWithout []work
	var peersCPU time.Duration
	run := func(dir, channel string) (time.Duration, int, error) {
		g, err := r.startGatewayChannel(ctx, filepath.Join(r.work, dir), "log: {origin: "+benchOrigin+", checkpoint_interval: 1s}\n", channel)
		if err != nil {
			return 0, 0, err
		}
		defer g.stop()
		cpu0, _ := procCPU(g.cmd.Process.Pid)
		wrote0, _ := procWritten(g.cmd.Process.Pid)
		m0, err := g.metrics()
		if err != nil {
			return 0, 0, err
		}
		var peers0 float64
		for _, p := range peers {
			c, _ := procCPU(p.pid)
			peers0 += c
		}
		res, err := sim.Send(ctx, newClient(64), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), load)
		if err == nil && res.OK() != len(res.Latencies) {
			err = fmt.Errorf("not all answered 200: %v", res.Statuses)
		}
		if err != nil {
			return 0, 0, err
		}
		cpu1, _ := procCPU(g.cmd.Process.Pid)
		wrote1, _ := procWritten(g.cmd.Process.Pid)
		var peers1 float64
		for _, p := range peers {
			c, _ := procCPU(p.pid)
			peers1 += c
		}
		m, err := g.metrics()
		if err != nil {
			return 0, 0, err
		}
		cpu := time.Duration((cpu1 - cpu0) * float64(time.Second))
		var mean time.Duration
		if n := m["linegate_ledger_append_seconds_count"]; n > 0 {
			mean = time.Duration(m["linegate_ledger_append_seconds_sum"] / n * float64(time.Second))
		}
		const commits, allocs, gcs = "linegate_ledger_append_seconds_count", "go_memstats_alloc_bytes_total", "go_gc_duration_seconds_count"
		wk := work{commits: m[commits] - m0[commits], wrote: wrote1 - wrote0, alloc: m[allocs] - m0[allocs], gcs: m[gcs] - m0[gcs]}
		if channel != "" {
			commitWith, cpuWith = append(commitWith, mean), append(cpuWith, cpu)
			workWith = append(workWith, wk)
			peersCPU += time.Duration((peers1 - peers0) * float64(time.Second))
			// What the live destinations took by the end of the run, as
			// the gateway counted their answers.
			for _, dest := range []string{"owner", "crm"} {
				delivered += m[`linegate_fanout_attempts_total{destination="`+dest+`",result="delivered"}`]
				failed += m[`linegate_fanout_attempts_total{destination="`+dest+`",result="failed"}`]
			}
		} else {
			commitWithout, cpuWithout = append(commitWithout, mean), append(cpuWithout, cpu)
			workWithout = append(workWithout, wk)
		}
		return res.Percentile(0.99), res.OK(), nil
	}
	// Pairs of rounds, each round on a fresh data directory, in the order
	// without-with, then with-without, and so on: what a round leaves
	// behind it (the disk's write-back of its data, its stop) falls on
	// each side as often. Each side's figure is the median of its p99s,
	// so that a stall of the disk or a neighbour on the machine that hits
	// one round does not move it; the note adds the median of the ratios
	// of the pairs, whose rounds ran next to each other.
	pairs := 8
	if r.opts.Quick {
		pairs = 1
	}
	var bases, withs []time.Duration
	var ratios []float64
	sent := 0
	for i := range pairs {
		var base, p99 time.Duration
		runWithout := func() (err error) {
			if base, _, err = run(fmt.Sprintf("fanout-none-%d", i), ""); err != nil {
				err = fmt.Errorf("without destinations: %w", err)
			}
			return err
		}
		runWith := func() (err error) {
			var n int
			p99, n, err = run(fmt.Sprintf("fanout-three-%d", i), dests)
			sent += n
			return err
		}
		first, second := runWithout, runWith
		if i%2 == 1 {
			first, second = runWith, runWithout
		}
		err := first()
		if err == nil {
			err = second()
		}
		if err != nil {
			r.fail(name, "ms", err)
			return
		}
		bases, withs = append(bases, base), append(withs, p99)
		ratios = append(ratios, float64(p99)/float64(base))
	}
	with, without := medianWork(workWith), medianWork(workWithout)
	// Lower is better: the ratio is peer/value.
	r.add(Result{Name: name, Value: ms(median(withs)), Unit: "ms", Peer: "the same gateway without destinations, this run",
		PeerValue: f64(ms(median(bases))), Target: "<= 1.25x peer",
		Note: fmt.Sprintf("median of %d pairs of rounds of %v, in turn without-with and with-without (p99 with: %s; without: %s; ratio of each pair's, median %.2f); %d webhooks with destinations; the two live destinations (LINE's Go SDK) took %.0f events by the end of the rounds, %.0f attempts failed, and used %.2f s of CPU in all; the gateway's CPU a round, median: %.2f s with, %.2f s without; the writer's mean group commit, median of the rounds: %.2f ms with, %.2f ms without; a round, median, with / without: the writer's commits %.0f / %.0f, bytes the gateway wrote to storage %.0f / %.0f MB, it allocated %.0f / %.0f MB in %.0f / %.0f garbage collections",
			pairs, d, msList(withs), msList(bases), median(ratios), sent, delivered, failed, peersCPU.Seconds(),
			median(cpuWith).Seconds(), median(cpuWithout).Seconds(), ms(median(commitWith)), ms(median(commitWithout)),
			with.commits, without.commits, with.wrote/1e6, without.wrote/1e6, with.alloc/1e6, without.alloc/1e6, with.gcs, without.gcs)},
		false, func(_, ratio float64) bool { return ratio >= 1/1.25 })
}

// median returns the median of xs (the lower middle of an even count; 0
// for none).
func median[T cmp.Ordered](xs []T) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// work is what a gateway did in a round: the writer's commits, the bytes
// it wrote to storage (its commits and checkpoints), the bytes it
// allocated and its garbage collections.
type work struct{ commits, wrote, alloc, gcs float64 }

// medianWork returns the median of each of ws's figures.
func medianWork(ws []work) work {
	var c, w, a, g []float64
	for _, x := range ws {
		c, w, a, g = append(c, x.commits), append(w, x.wrote), append(a, x.alloc), append(g, x.gcs)
	}
	return work{median(c), median(w), median(a), median(g)}
}

// msList formats durations in milliseconds, in their order.
func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", ms(d))
	}
	return strings.Join(parts, ", ") + " ms"
}
