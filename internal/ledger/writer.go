package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Writer is the one way into the log: it seals entries (SealRecord) and
// appends them to the Store, with the effects that must commit with them.
// Sealing, the refusal of records whose data key is gone, the reset of
// cached keys after a refused append, and the metrics of every commit live
// here and nowhere else. A Ledger appends through its Writer; tools that
// record without running the sequencer (the CLI's admin commands) use a
// Writer of their own, and a running gateway integrates what they append.
//
// A Writer is safe for concurrent use.
type Writer struct {
	store  Store
	sealer Sealer
	log    *slog.Logger

	commitLatency prometheus.Histogram
	commitErrors  prometheus.Counter
}

// NewWriter returns a Writer over store that seals payloads with sealer
// (nil: payloads are stored as they are).
func NewWriter(store Store, sealer Sealer, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		store: store, sealer: sealer, log: log,
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "ledger_append_seconds",
			Help:    "Time to commit one group of appended records durably.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "ledger_append_errors_total",
			Help: "Commits that failed (their records were not acknowledged, their effects not applied).",
		}),
	}
}

// Collectors returns the writer's metrics.
func (w *Writer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.commitLatency, w.commitErrors}
}

// Seal builds the record of an entry, sealed under its subjects' keys.
func (w *Writer) Seal(ctx context.Context, e Entry) (Record, error) {
	return SealRecord(ctx, w.sealer, e)
}

// Commit seals entries and appends them with effects, in one transaction
// of its own, and returns the index of the first record. When it returns
// nil, the records are durable and every effect has taken effect; when it
// returns an error, nothing was stored and no effect applied. The error of
// a refused effect (such as ErrNotFound or ErrConflict) can be tested with
// errors.Is.
//
// Records sealed with a data key that another process destroyed meanwhile
// (a shred from the CLI) are sealed anew, under a new key, and committed
// once more.
func (w *Writer) Commit(ctx context.Context, entries []Entry, effects ...Effect) (uint64, error) {
	for attempt := 0; ; attempt++ {
		recs := make([]Record, len(entries))
		for i, e := range entries {
			var err error
			if recs[i], err = w.Seal(ctx, e); err != nil {
				return 0, err
			}
		}
		first, err := w.append(ctx, recs, effects)
		if attempt == 0 && errors.Is(err, ErrKeyDestroyed) {
			continue // append forgot the cached keys
		}
		return first, err
	}
}

// append stores sealed records and effects, with the metrics and the reset
// of cached keys on a refusal.
func (w *Writer) append(ctx context.Context, recs []Record, effects []Effect) (uint64, error) {
	start := time.Now()
	first, err := w.store.Append(ctx, recs, effects...)
	w.commitLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		w.commitErrors.Inc()
		if w.sealer != nil {
			// A data key may have been destroyed by another process
			// since it was cached: a retry loads keys anew.
			w.sealer.Reset()
		}
		return 0, fmt.Errorf("ledger: append: %w", err)
	}
	return first, nil
}

// appendGroups stores groups of sealed records and effects in one
// transaction (Store.AppendGroups), with the metrics and the reset of
// cached keys on a refusal. Errors of groups are wrapped as append's are.
func (w *Writer) appendGroups(ctx context.Context, groups []Group) ([]uint64, []error, error) {
	start := time.Now()
	firsts, errs, err := w.store.AppendGroups(ctx, groups)
	w.commitLatency.Observe(time.Since(start).Seconds())
	refused := err != nil
	for i := range errs {
		if errs[i] != nil {
			refused = true
			errs[i] = fmt.Errorf("ledger: append: %w", errs[i])
		}
	}
	if refused {
		w.commitErrors.Inc()
		if w.sealer != nil {
			// A data key may have been destroyed by another process
			// since it was cached: a retry loads keys anew.
			w.sealer.Reset()
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: append: %w", err)
	}
	return firsts, errs, nil
}

// Sealer returns the writer's sealer (nil when payloads are stored as
// they are), for readers that open what it sealed.
func (w *Writer) Sealer() Sealer { return w.sealer }
