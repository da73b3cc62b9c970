package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

// floodBoundMB is the stated bound on what a rejection flood may add to
// the data directory: the records one by one (a few a second, under 2 KB
// each), the periodic summaries, and the WAL the commits leave until the
// next checkpoint.
const floodBoundMB = 16

// rejectionFlood measures what unauthenticated traffic does: 24
// connections sending requests with bad signatures and 60 KB of headers
// as fast as they can for the duration, beside signed webhooks at 1,200/s.
// The figures are the signed webhooks' ack p99 beside the same gateway's
// without the flood, in the same run, and the growth of the data
// directory under the flood against a stated bound.
func (r *runner) rejectionFlood(ctx context.Context) {
	d := r.dur(3*time.Second, 30*time.Second)
	load := sim.Load{Rate: 1200, Concurrency: 64, Duration: d}
	const name = "ack p99 at 1200/s under a rejection flood"

	quietDir := filepath.Join(r.work, "flood-quiet")
	quiet, err := r.startGateway(ctx, quietDir)
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	quietBefore, err := dirSize(quietDir)
	if err != nil {
		quiet.stop()
		r.fail(name, "ms", err)
		return
	}
	base, err := sim.Send(ctx, newClient(64), quiet.webhook+"/webhook/demo", []byte(benchSecret), source(1), load)
	quiet.stop()
	quietAfter, serr := dirSize(quietDir)
	if err == nil {
		err = serr
	}
	if err == nil && base.OK() != len(base.Latencies) {
		err = fmt.Errorf("not all answered 200: %v", base.Statuses)
	}
	if err != nil {
		r.fail(name, "ms", err)
		return
	}

	dir := filepath.Join(r.work, "flood")
	g, err := r.startGateway(ctx, dir)
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	before, err := dirSize(dir)
	if err != nil {
		g.stop()
		r.fail(name, "ms", err)
		return
	}
	fctx, stopFlood := context.WithCancel(ctx)
	var sent atomic.Int64
	var wg sync.WaitGroup
	pad := strings.Repeat("h", 3000)
	client := newClient(24)
	for range 24 {
		wg.Go(func() {
			body := []byte(`{"destination":"U1","events":[]}`)
			for fctx.Err() == nil {
				req, err := http.NewRequestWithContext(fctx, "POST", g.webhook+"/webhook/demo", bytes.NewReader(body))
				if err != nil {
					return
				}
				req.Header.Set("X-Line-Signature", "bm90IGEgc2lnbmF0dXJl")
				for i := range 20 { // 60 KB of headers
					req.Header.Set(fmt.Sprintf("X-Pad-%02d", i), pad)
				}
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
			}
		})
	}
	res, err := sim.Send(ctx, newClient(64), g.webhook+"/webhook/demo", []byte(benchSecret), source(1), load)
	stopFlood()
	wg.Wait()
	g.stop()
	if err == nil && res.OK() != len(res.Latencies) {
		err = fmt.Errorf("not all signed webhooks answered 200 under the flood: %v", res.Statuses)
	}
	if err != nil {
		r.fail(name, "ms", err)
		return
	}
	r.add(Result{Name: name, Value: ms(res.Percentile(0.99)), Unit: "ms",
		Peer: "the same gateway without the flood, same run", PeerValue: f64(ms(base.Percentile(0.99))),
		Target: "<= 2x the p99 without the flood",
		Note:   fmt.Sprintf("%d requests with bad signatures and 60 KB of headers in %v from 24 connections", sent.Load(), d)},
		false, func(_, ratio float64) bool { return ratio >= 0.5 })
	after, err := dirSize(dir)
	if err != nil {
		r.fail("data directory growth under a rejection flood", "MB", err)
		return
	}
	// The flood's share: the growth beside the same signed load's growth
	// without it.
	growth := float64((after-before)-(quietAfter-quietBefore)) / (1 << 20)
	r.add(Result{Name: "data directory growth from a rejection flood", Value: max(growth, 0), Unit: "MB",
		Target: fmt.Sprintf("<= %d MB", floodBoundMB),
		Note: fmt.Sprintf("%d rejected requests in %v, beside %d signed webhooks; the growth of the same run without the flood (%.1f MB) subtracted",
			sent.Load(), d, len(res.Latencies), float64(quietAfter-quietBefore)/(1<<20))},
		false, func(v, _ float64) bool { return v <= floodBoundMB })
}

// dirSize returns the bytes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
