// Command feeder is a benchmark peer: it gives webhook servers events as
// linegate's fan-out gives its destinations theirs, from a process of its
// own, so that the servers' work can run beside a gateway that does not
// feed them. It makes rate a second times duration events as the
// benchmark's load does (sim.Conversation, one a body), before it begins;
// then each destination has a goroutine of its own that wakes every
// linger and sends the events due by then (rate a second since it began)
// in requests of up to batch events, one after the other, each body built
// as the fan-out builds it (fanout.BuildBody: the reply token kept for the
// reply owner, removed for the others) and signed with the destination's
// secret. It prints "ready" once it has reached each destination (a
// request without events), then begins; at the end it prints {"made": N,
// "given": N, "failed": M}: the events made, those the destinations
// answered 2xx to, and the requests they did not.
//
//	feeder -rate 1200 -duration 6s -dest URL,SECRET[,owner] -dest URL,SECRET
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linegate/linegate/internal/fanout"
	"github.com/linegate/linegate/internal/sim"
)

type dest struct {
	url, secret string
	ownsReply   bool
}

type dests []*dest

func (ds *dests) String() string { return fmt.Sprint(len(*ds)) }

func (ds *dests) Set(v string) error {
	f := strings.Split(v, ",")
	if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "owner") {
		return fmt.Errorf("want URL,SECRET[,owner], not %q", v)
	}
	*ds = append(*ds, &dest{url: f[0], secret: f[1], ownsReply: len(f) == 3})
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		log.Fatalf("feeder: %v", err)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("feeder", flag.ContinueOnError)
	var ds dests
	rate := fs.Float64("rate", 1200, "events a second")
	duration := fs.Duration("duration", 6*time.Second, "how long to make events")
	linger := fs.Duration("linger", fanout.DefaultLinger, "how long a destination's sender waits before it sends what came")
	batch := fs.Int("batch", fanout.DefaultBatch, "events a request carries at most")
	fs.Var(&ds, "dest", "a destination: URL,SECRET, and ,owner for the one that owns the reply token (repeated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(ds) == 0 || *rate <= 0 || *batch <= 0 {
		return errors.New("-dest, a -rate and a -batch above 0")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var given, failed atomic.Int64
	post := func(d *dest, events []json.RawMessage) {
		body, err := fanout.BuildBody(sim.BotUserID("demo"), events, d.ownsReply, false)
		if err != nil {
			failed.Add(1)
			return
		}
		status, err := sim.PostWebhook(context.Background(), client, d.url, []byte(d.secret), body)
		if err != nil || status/100 != 2 {
			failed.Add(1)
			return
		}
		given.Add(int64(len(events)))
	}
	// The events, made before the round as the load makes them (one a
	// body), so that making them is not in it: the round's work is the
	// sending alone, as the fan-out's is.
	total := int(duration.Seconds() * *rate)
	src := &sim.Conversation{EventsPerBody: 1}
	events := make([]json.RawMessage, total)
	for i := range events {
		var cb struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(src.Next(), &cb); err != nil || len(cb.Events) != 1 {
			return fmt.Errorf("a body of the load: %d events, %v", len(cb.Events), err)
		}
		events[i] = cb.Events[0]
	}
	// A request without events to each destination first, as LINE's
	// check of a webhook URL: its connection is open before the events
	// begin, as the fan-out's are.
	for _, d := range ds {
		if post(d, []json.RawMessage{}); failed.Load() > 0 {
			return fmt.Errorf("%s refused a request without events", d.url)
		}
	}
	fmt.Fprintln(stdout, "ready")
	// Each destination's sender wakes every linger, as a worker of the
	// fan-out does after a round, and sends the events due by then.
	start := time.Now()
	var senders sync.WaitGroup
	for _, d := range ds {
		senders.Go(func() {
			for sent := 0; sent < total; {
				time.Sleep(*linger)
				due := min(total, int(time.Since(start).Seconds()**rate))
				for sent < due {
					n := min(*batch, due-sent)
					post(d, events[sent:sent+n])
					sent += n
				}
			}
		})
	}
	senders.Wait()
	return json.NewEncoder(stdout).Encode(map[string]int64{"made": int64(total), "given": given.Load(), "failed": failed.Load()})
}
