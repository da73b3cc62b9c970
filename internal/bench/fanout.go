package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

// The sides of the fan-out bench: the gateway with three destinations;
// the same gateway without destinations while the feeder process gives
// the destinations events at the same rate (fed); and without
// destinations, the destinations idle.
const (
	sideWith = iota
	sideFed
	sideIdle
	sides
)

var sideNames = [sides]string{"three", "fed", "idle"}

// fanoutRound is what one round of the fan-out bench measured.
type fanoutRound struct {
	p99, cpu, peersCPU, feederCPU, commit time.Duration
	ok                                    int
	work                                  work
	delivered, failed                     float64
}

// fanoutAck measures the acknowledgement's p99 in open loop with three
// destinations on the channel (two that answer, each a webhook server on
// LINE's Go SDK checking the signature with its own secret, in processes
// of their own as a team's tools run, and one dead: a closed port) beside
// the same gateway without destinations, in the same run at the same
// load: the fan-out must not slow the acknowledgement to LINE.
//
// The destinations run on the gateway's two cores, and their own work is
// not small: LINE's SDK parses each event it is given (go test
// ./bench/peers/sdkecho -bench Parse). A second figure sets the same
// rounds beside the gateway without destinations while another process
// gives the destinations events at the same rate, in requests as the
// fan-out makes them (bench/peers/feeder): the destinations' work is then
// on both sides, as it would be if they ran elsewhere, and what differs is
// the gateway's own work for them and where the sending runs (in the
// gateway, or in the feeder's process). The notes give each side's CPU:
// the gateway's, the destinations' and the feeder's.
func (r *runner) fanoutAck(ctx context.Context) {
	defer r.fanoutPostgres(ctx) // after this one's peers have stopped
	const rate = 1200
	name := fmt.Sprintf("ack latency p99 at %d/s, 3 destinations (1 dead)", rate)
	fedName := name + ", beside fed destinations"
	fail := func(err error) {
		r.fail(name, "ms", err)
		r.fail(fedName, "ms", err)
	}
	d := r.dur(2*time.Second, 6*time.Second)
	secrets := []string{"bench-owner-secret", "bench-crm-secret"}
	var live []string
	var peers []*peerProc
	for _, secret := range secrets {
		// sdkecho answers 400 to a body its SDK does not verify with
		// secret: the gateway counts that a failed attempt.
		p, err := r.startPeer(ctx, "sdkecho", "-secret", secret)
		if err != nil {
			fail(err)
			return
		}
		defer p.stop()
		live = append(live, p.url+"/callback")
		peers = append(peers, p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
		return
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there: every attempt fails at once
	dests := fmt.Sprintf(`, destinations: [{name: owner, url: %q, allow_http: true, secret: bench-owner-secret, role: reply_owner},
      {name: crm, url: %q, allow_http: true, secret: bench-crm-secret},
      {name: dead, url: "http://%s/hook", allow_http: true, secret: bench-dead-secret}]`, live[0], live[1], dead)
	load := sim.Load{Rate: rate, Concurrency: 64, Duration: d}
	peersCPU := func() float64 {
		var s float64
		for _, p := range peers {
			c, _ := procCPU(p.pid)
			s += c
		}
		return s
	}
	run := func(dir string, side int) (fanoutRound, error) {
		var rd fanoutRound
		channel := ""
		if side == sideWith {
			channel = dests
		}
		g, err := r.startGatewayChannel(ctx, filepath.Join(r.work, dir), "log: {origin: "+benchOrigin+", checkpoint_interval: 1s}\n", channel)
		if err != nil {
			return rd, err
		}
		defer g.stop()
		cpu0, _ := procCPU(g.cmd.Process.Pid)
		wrote0, _ := procWritten(g.cmd.Process.Pid)
		m0, err := g.metrics()
		if err != nil {
			return rd, err
		}
		peers0 := peersCPU()
		// The fed side: the feeder gives the destinations events at the
		// same rate, from a process of its own, while the load runs.
		var feeder *exec.Cmd
		var fed *bufio.Reader
		var feederReady float64
		if side == sideFed {
			feeder = exec.CommandContext(ctx, r.peers["feeder"], "-rate", fmt.Sprint(rate), "-duration", d.String(),
				"-dest", live[0]+","+secrets[0]+",owner", "-dest", live[1]+","+secrets[1])
			out, err := feeder.StdoutPipe()
			if err != nil {
				return rd, fmt.Errorf("feeder: %w", err)
			}
			if err := feeder.Start(); err != nil {
				return rd, fmt.Errorf("feeder: %w", err)
			}
			defer feeder.Wait()
			// The load begins once the feeder has begun: its start is
			// not in the round.
			fed = bufio.NewReader(out)
			if line, err := fed.ReadString('\n'); err != nil || line != "ready\n" {
				feeder.Process.Kill()
				return rd, fmt.Errorf("feeder: %q, %v", line, err)
			}
			// What it used to start and make its events is not the
			// round's.
			feederReady, _ = procCPU(feeder.Process.Pid)
		}
		res, err := sim.Send(ctx, newClient(64), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), load)
		if err == nil && res.OK() != len(res.Latencies) {
			err = fmt.Errorf("not all answered 200: %v", res.Statuses)
		}
		if err != nil {
			return rd, err
		}
		cpu1, _ := procCPU(g.cmd.Process.Pid)
		wrote1, _ := procWritten(g.cmd.Process.Pid)
		peers1 := peersCPU()
		if feeder != nil {
			// The destinations took every event the feeder made, or the
			// round's load on them was not what the gateway gives them.
			last, err := io.ReadAll(fed)
			if err == nil {
				err = feeder.Wait()
			}
			var v struct{ Made, Given, Failed int64 }
			if err == nil {
				err = json.Unmarshal(last, &v)
			}
			if err != nil {
				return rd, fmt.Errorf("feeder: %w", err)
			}
			if v.Failed > 0 || v.Given != int64(len(live))*v.Made || v.Made == 0 {
				return rd, fmt.Errorf("feeder: made %d events, the destinations took %d, %d requests failed", v.Made, v.Given, v.Failed)
			}
			rd.feederCPU = feeder.ProcessState.UserTime() + feeder.ProcessState.SystemTime() - time.Duration(feederReady*float64(time.Second))
		}
		m, err := g.metrics()
		if err != nil {
			return rd, err
		}
		rd.p99, rd.ok = res.Percentile(0.99), res.OK()
		rd.cpu = time.Duration((cpu1 - cpu0) * float64(time.Second))
		rd.peersCPU = time.Duration((peers1 - peers0) * float64(time.Second))
		// The writer's mean group commit (linegate_ledger_append_seconds),
		// where queue rows show.
		if n := m["linegate_ledger_append_seconds_count"]; n > 0 {
			rd.commit = time.Duration(m["linegate_ledger_append_seconds_sum"] / n * float64(time.Second))
		}
		const commits, allocs, gcs = "linegate_ledger_append_seconds_count", "go_memstats_alloc_bytes_total", "go_gc_duration_seconds_count"
		rd.work = work{commits: m[commits] - m0[commits], wrote: wrote1 - wrote0, alloc: m[allocs] - m0[allocs], gcs: m[gcs] - m0[gcs]}
		// What the live destinations took by the end of the round, as the
		// gateway counted their answers.
		for _, dest := range []string{"owner", "crm"} {
			rd.delivered += m[`linegate_fanout_attempts_total{destination="`+dest+`",result="delivered"}`]
			rd.failed += m[`linegate_fanout_attempts_total{destination="`+dest+`",result="failed"}`]
		}
		return rd, nil
	}
	// Sets of three rounds, one of each side, each round on a fresh data
	// directory, the order turning from one set to the next (with, fed,
	// idle; fed, idle, with; idle, with, fed): what a round leaves behind
	// it (the disk's write-back of its data, its stop) falls on each side
	// as often. Each side's figure is the median of its p99s, so that a
	// stall of the disk or a neighbour on the machine that hits one round
	// does not move it; the notes add the median of the sets' ratios, of
	// rounds that ran next to each other.
	sets := 8
	if r.opts.Quick {
		sets = 1
	}
	var rounds [sides][]fanoutRound
	var fedRatios, idleRatios []float64
	for i := range sets {
		var got [sides]fanoutRound
		for k := range sides {
			side := (i + k) % sides
			rd, err := run(fmt.Sprintf("fanout-%s-%d", sideNames[side], i), side)
			if err != nil {
				fail(fmt.Errorf("round %s %d: %w", sideNames[side], i, err))
				return
			}
			got[side] = rd
			rounds[side] = append(rounds[side], rd)
		}
		fedRatios = append(fedRatios, float64(got[sideWith].p99)/float64(got[sideFed].p99))
		idleRatios = append(idleRatios, float64(got[sideWith].p99)/float64(got[sideIdle].p99))
	}
	// each returns f of a side's rounds, in their order; of, its median.
	each := func(side int, f func(fanoutRound) time.Duration) []time.Duration {
		var ds []time.Duration
		for _, rd := range rounds[side] {
			ds = append(ds, f(rd))
		}
		return ds
	}
	of := func(side int, f func(fanoutRound) time.Duration) time.Duration { return median(each(side, f)) }
	p99 := func(rd fanoutRound) time.Duration { return rd.p99 }
	p99s := func(side int) []time.Duration { return each(side, p99) }
	cpu := func(rd fanoutRound) time.Duration { return rd.cpu }
	destsCPU := func(rd fanoutRound) time.Duration { return rd.peersCPU }
	feederCPU := func(rd fanoutRound) time.Duration { return rd.feederCPU }
	commit := func(rd fanoutRound) time.Duration { return rd.commit }
	works := func(side int) []work {
		var ws []work
		for _, rd := range rounds[side] {
			ws = append(ws, rd.work)
		}
		return ws
	}
	sent := 0
	var delivered, failed float64
	for _, rd := range rounds[sideWith] {
		sent += rd.ok
		delivered += rd.delivered
		failed += rd.failed
	}
	with, without := medianWork(works(sideWith)), medianWork(works(sideIdle))
	// Lower is better: the ratio is peer/value.
	r.add(Result{Name: name, Value: ms(of(sideWith, p99)), Unit: "ms", Peer: "the same gateway without destinations, this run",
		PeerValue: f64(ms(of(sideIdle, p99))), Target: "<= 1.25x peer",
		Note: fmt.Sprintf("median of %d rounds of %v a side, in sets of three rounds in turn (p99 with: %s; without: %s; ratio of each set's, median %.2f); %d webhooks with destinations; the two live destinations (LINE's Go SDK) took %.0f events by the end of the rounds, %.0f attempts failed, and used %.2f s of CPU a round, median (none without); the gateway's CPU a round, median: %.2f s with, %.2f s without; the writer's mean group commit, median of the rounds: %.2f ms with, %.2f ms without; a round, median, with / without: the writer's commits %.0f / %.0f, bytes the gateway wrote to storage %.0f / %.0f MB, it allocated %.0f / %.0f MB in %.0f / %.0f garbage collections",
			sets, d, msList(p99s(sideWith)), msList(p99s(sideIdle)), median(idleRatios), sent, delivered, failed, of(sideWith, destsCPU).Seconds(),
			of(sideWith, cpu).Seconds(), of(sideIdle, cpu).Seconds(), ms(of(sideWith, commit)), ms(of(sideIdle, commit)),
			with.commits, without.commits, with.wrote/1e6, without.wrote/1e6, with.alloc/1e6, without.alloc/1e6, with.gcs, without.gcs)},
		false, func(_, ratio float64) bool { return ratio >= 1/1.25 })
	r.add(Result{Name: fedName, Value: ms(of(sideWith, p99)), Unit: "ms",
		Peer:      "the same gateway without destinations, the feeder giving the destinations events at the same rate, this run",
		PeerValue: f64(ms(of(sideFed, p99))),
		Note: fmt.Sprintf("the same rounds with destinations, beside the second round of each set (p99 without destinations, the destinations fed: %s; ratio of each set's, median %.2f); the destinations' CPU a round, median: %.2f s fed by the gateway, %.2f s by the feeder; the feeder's own, %.2f s; the gateway's CPU a round, median, %.2f s with destinations, %.2f s without, fed",
			msList(p99s(sideFed)), median(fedRatios), of(sideWith, destsCPU).Seconds(), of(sideFed, destsCPU).Seconds(), of(sideFed, feederCPU).Seconds(),
			of(sideWith, cpu).Seconds(), of(sideFed, cpu).Seconds())},
		false, nil)
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
