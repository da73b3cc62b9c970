package main

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// writeVerifyMetrics writes the outcome of verify (err, nil when the
// ledger verified, and the records it checked) to path in Prometheus's
// text format, replacing the file atomically, for node_exporter's textfile
// collector: a systemd timer or cron job runs verify, Prometheus sees when
// it last ran and whether it passed. A usage error writes nothing. It
// returns err, or the error of writing the file.
func writeVerifyMetrics(path string, err error, records uint64) error {
	if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
		return err
	}
	ok := 0.0
	if err == nil {
		ok = 1
	}
	reg := prometheus.NewRegistry()
	for _, g := range []struct {
		opts prometheus.GaugeOpts
		v    float64
	}{
		{prometheus.GaugeOpts{Name: "linegate_verify_last_run_timestamp_seconds", Help: "Unix time at which linegate verify last ran."}, float64(time.Now().UnixMilli()) / 1000},
		{prometheus.GaugeOpts{Name: "linegate_verify_ok", Help: "1 if the last linegate verify passed, 0 if it failed or could not read the ledger."}, ok},
		{prometheus.GaugeOpts{Name: "linegate_verify_records", Help: "Records the last passing linegate verify checked (0 when it failed)."}, float64(records)},
	} {
		gauge := prometheus.NewGauge(g.opts)
		gauge.Set(g.v)
		reg.MustRegister(gauge)
	}
	if werr := prometheus.WriteToTextfile(path, reg); werr != nil {
		return errors.Join(err, fmt.Errorf("writing -metrics-file: %w", werr))
	}
	return err
}
