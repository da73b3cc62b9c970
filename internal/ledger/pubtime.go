package ledger

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// publishClock is the time this process last published a checkpoint (one
// it signed, or one another replica signed that it followed), for the
// age of the checkpoint on dashboards.
type publishClock struct{ unixMs atomic.Int64 }

func (c *publishClock) now() { c.unixMs.Store(time.Now().UnixMilli()) }

// gauge is linegate_ledger_checkpoint_timestamp_seconds.
func (c *publishClock) gauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "ledger_checkpoint_timestamp_seconds",
		Help: "Unix time at which this process last published a new checkpoint (signed, or followed from another replica); 0 until it has. The log signs only when records wait: an idle log's checkpoint ages.",
	}, func() float64 { return float64(c.unixMs.Load()) / 1000 })
}
