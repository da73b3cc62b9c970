package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/line"
)

// PostWebhook sends body to url signed with secret, with the headers LINE
// sends, and returns the status.
func PostWebhook(ctx context.Context, c *http.Client, url string, secret, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "LineBotWebhook/2.0")
	req.Header.Set("X-Line-Signature", line.Sign(secret, body))
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post webhook: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Source produces webhook bodies. Next is called from one goroutine.
type Source interface {
	Next() []byte
}

// FixtureSource replays the *.json files of a directory, in name order,
// round and round.
type FixtureSource struct {
	bodies [][]byte
	i      int
}

// NewFixtureSource reads every *.json file in dir.
func NewFixtureSource(dir string) (*FixtureSource, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	s := &FixtureSource{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		s.bodies = append(s.bodies, b)
	}
	if len(s.bodies) == 0 {
		return nil, fmt.Errorf("no *.json webhook bodies in %s", dir)
	}
	return s, nil
}

// Len returns the number of distinct bodies.
func (s *FixtureSource) Len() int {
	if s == nil {
		return 0
	}
	return len(s.bodies)
}

// Next implements Source. A source that NewFixtureSource did not return
// (a nil pointer, the zero value) has no bodies: Next returns nil.
func (s *FixtureSource) Next() []byte {
	if s == nil || len(s.bodies) == 0 {
		return nil
	}
	b := s.bodies[s.i%len(s.bodies)]
	s.i++
	return b
}

// Load says how to send.
type Load struct {
	// Rate is the target in requests per second, in open loop: requests
	// are sent on a fixed schedule whatever the answers, and each latency
	// is measured from the time the request was due, so that a stall is
	// counted in full (no coordinated omission). Zero means closed loop:
	// Concurrency workers send as fast as they are answered.
	Rate float64
	// Concurrency is the number of connections (default 32).
	Concurrency int
	// Count stops after this many requests; Duration after this long.
	// At least one must be set.
	Count    int
	Duration time.Duration
}

// Result is what a run measured.
type Result struct {
	Sent      int
	Statuses  map[int]int
	Errors    int
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
}

// OK returns the number of 200 answers.
func (r *Result) OK() int { return r.Statuses[200] }

// Throughput returns answered requests per second.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Percentile returns the latency at quantile q (0 to 1).
func (r *Result) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.Latencies))+0.5) - 1
	return r.Latencies[min(max(i, 0), len(r.Latencies)-1)]
}

// Send posts bodies from src to url, signed with secret, under load l.
func Send(ctx context.Context, c *http.Client, url string, secret []byte, src Source, l Load) (*Result, error) {
	if l.Count <= 0 && l.Duration <= 0 {
		return nil, fmt.Errorf("sim: a load needs a count or a duration")
	}
	if l.Concurrency <= 0 {
		l.Concurrency = 32
	}
	if l.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Duration)
		defer cancel()
	}
	type job struct {
		body []byte
		due  time.Time
	}
	// In open loop the queue absorbs a stall of the workers (it counts in
	// the latencies); in closed loop a worker takes the next body only
	// when it is free.
	jobs := make(chan job)
	if l.Rate > 0 {
		jobs = make(chan job, 1<<16)
	}
	var mu sync.Mutex
	res := &Result{Statuses: map[int]int{}}
	var wg sync.WaitGroup
	start := time.Now()
	for range l.Concurrency {
		wg.Go(func() {
			var lat []time.Duration
			statuses := map[int]int{}
			errs := 0
			for j := range jobs {
				due := j.due
				if due.IsZero() {
					due = time.Now()
				}
				// The request is not tied to ctx: one sent is answered.
				status, err := PostWebhook(context.Background(), c, url, secret, j.body)
				if err != nil {
					errs++
					continue
				}
				statuses[status]++
				lat = append(lat, time.Since(due))
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			for k, v := range statuses {
				res.Statuses[k] += v
			}
			res.Errors += errs
			mu.Unlock()
		})
	}
	n := 0
	if l.Rate > 0 {
		interval := time.Duration(float64(time.Second) / l.Rate)
	open:
		for ; l.Count <= 0 || n < l.Count; n++ {
			due := start.Add(time.Duration(n) * interval)
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					break open
				}
			} else if ctx.Err() != nil {
				break
			}
			jobs <- job{body: src.Next(), due: due}
		}
	} else {
	closed:
		for l.Count <= 0 || n < l.Count {
			b := src.Next()
			select {
			case jobs <- job{body: b}:
				n++
			case <-ctx.Done():
				break closed
			}
		}
	}
	close(jobs)
	wg.Wait()
	res.Sent = n
	res.Elapsed = time.Since(start)
	slices.Sort(res.Latencies)
	return res, nil
}
