package witness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Proofs gives consistency proofs between two sizes of the log's tree
// (ledger.ConsistencyProof over the store).
type Proofs func(ctx context.Context, oldSize, newSize uint64) ([][32]byte, error)

// State keeps, durably, the size each witness last cosigned: a cursor the
// witness's 409 answers can rebuild, kept so that a restart does not cost
// a round trip per witness. Safe for concurrent use.
type State interface {
	Publication(ctx context.Context, name string) (string, error)
	SetPublication(ctx context.Context, name, value string) error
}

// Cosigner sends each new checkpoint to the witnesses and gathers their
// cosignatures. A witness that refuses a checkpoint as a fork or a
// rollback is not asked again: the state is reported (a log line at
// error level, linegate_witness_forked) and stays until an operator
// restarts serve after looking into it.
type Cosigner struct {
	witnesses []Witness
	quorum    int
	hc        *http.Client
	proofs    Proofs
	state     State
	log       *slog.Logger

	mu     sync.Mutex
	sizes  map[string]uint64 // the size each witness last cosigned
	known  map[string]bool   // sizes[w] is known (from the state or an answer)
	forked map[string]error
	busy   map[string]bool // a request to the witness is in flight

	timeout, straggle time.Duration

	cosigned  *prometheus.GaugeVec
	refusals  *prometheus.CounterVec
	forkedG   *prometheus.GaugeVec
	quorumMet prometheus.Gauge
}

// NewCosigner returns a Cosigner for the witnesses, of which quorum must
// cosign a checkpoint for it to count as cosigned.
func NewCosigner(ws []Witness, quorum int, hc *http.Client, proofs Proofs, state State, log *slog.Logger) *Cosigner {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	c := &Cosigner{witnesses: ws, quorum: quorum, hc: hc, proofs: proofs, state: state, log: log,
		sizes: map[string]uint64{}, known: map[string]bool{}, forked: map[string]error{}, busy: map[string]bool{},
		timeout: WitnessTimeout, straggle: Straggle,
		cosigned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "linegate_witness_cosigned_size",
			Help: "The tree size of the last checkpoint each witness cosigned."}, []string{"witness"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "linegate_witness_failures_total",
			Help: "Checkpoints a witness did not cosign, by reason (forked, rolled_back, unknown_log, bad_signature, unavailable)."}, []string{"witness", "reason"}),
		forkedG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "linegate_witness_forked",
			Help: "1 when a witness refused a checkpoint as inconsistent with what it cosigned (a fork or a rollback of the log): not asked again until serve restarts."}, []string{"witness"}),
		quorumMet: prometheus.NewGauge(prometheus.GaugeOpts{Name: "linegate_witness_quorum_met",
			Help: "1 when the last checkpoint got the configured quorum of witness cosignatures."}),
	}
	for _, w := range ws {
		c.forkedG.WithLabelValues(w.Name).Set(0)
	}
	return c
}

// Collectors returns the Cosigner's metrics.
func (c *Cosigner) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.cosigned, c.refusals, c.forkedG, c.quorumMet}
}

// Quorum returns the number of cosignatures a checkpoint needs.
func (c *Cosigner) Quorum() int { return c.quorum }

// Forked returns the witnesses that refused the log as forked, with why.
func (c *Cosigner) Forked() map[string]error {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]error{}
	for k, v := range c.forked {
		out[k] = v
	}
	return out
}

func stateKey(w Witness) string { return "witness:" + w.Name }

// ErrBusy: the witness is still answering an earlier checkpoint; it is
// not sent another until it answered or its timeout passed.
var ErrBusy = errors.New("witness: still answering an earlier checkpoint")

// Timeouts of a round: each witness's request ends after WitnessTimeout;
// once the quorum has cosigned, the witnesses yet to answer are waited
// for at most Straggle more (their requests go on in the background,
// and they are skipped by later rounds until they end).
const (
	WitnessTimeout = 30 * time.Second
	Straggle       = time.Second
)

// Cosign asks every witness, concurrently, to cosign checkpoint, of tree
// size size. It returns the checkpoint with the cosignatures gathered,
// and an error (a *QuorumError, joined with the witnesses' errors) when
// fewer than the quorum cosigned. A slow witness does not hold up the
// others: Cosign returns at most Straggle after the quorum is in.
func (c *Cosigner) Cosign(ctx context.Context, checkpoint []byte, size uint64) ([]byte, error) {
	type result struct {
		i    int
		sigs []byte
		err  error
	}
	ch := make(chan result, len(c.witnesses)) // never blocks a late answer
	got := make([][]byte, len(c.witnesses))
	answered := make([]bool, len(c.witnesses))
	var errs []error
	pending := 0
	for i, w := range c.witnesses {
		c.mu.Lock()
		busy := c.busy[w.Name]
		c.busy[w.Name] = true
		c.mu.Unlock()
		if busy {
			answered[i] = true
			errs = append(errs, fmt.Errorf("witness %s: %w", w.Name, ErrBusy))
			continue
		}
		pending++
		go func() {
			wctx, cancel := context.WithTimeout(ctx, c.timeout)
			sigs, err := c.cosignOne(wctx, w, checkpoint, size)
			cancel()
			c.mu.Lock()
			delete(c.busy, w.Name)
			c.mu.Unlock()
			ch <- result{i, sigs, err}
		}()
	}
	n := 0
	var grace <-chan time.Time
wait:
	for pending > 0 {
		select {
		case r := <-ch:
			pending--
			answered[r.i] = true
			if r.err != nil {
				errs = append(errs, r.err)
				break
			}
			got[r.i] = r.sigs
			n++
			if n >= c.quorum && grace == nil {
				t := time.NewTimer(c.straggle)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			for i, w := range c.witnesses {
				if !answered[i] {
					errs = append(errs, fmt.Errorf("witness %s: no answer %v after the quorum cosigned; still asked in the background", w.Name, c.straggle))
				}
			}
			break wait
		}
	}
	var sigs [][]byte
	var names []string
	for i, g := range got {
		if g != nil {
			sigs = append(sigs, g)
			names = append(names, c.witnesses[i].Name)
		}
	}
	out := Cosigned(checkpoint, sigs...)
	if len(sigs) < c.quorum {
		c.quorumMet.Set(0)
		return out, errors.Join(append([]error{&QuorumError{Have: len(sigs), Want: c.quorum, Names: names}}, errs...)...)
	}
	c.quorumMet.Set(1)
	return out, errors.Join(errs...)
}

// cosignOne gets w's cosignature of checkpoint: with the proof from the
// size w last cosigned, learnt again from a 409 when it is not the one
// kept.
func (c *Cosigner) cosignOne(ctx context.Context, w Witness, checkpoint []byte, size uint64) ([]byte, error) {
	c.mu.Lock()
	if err := c.forked[w.Name]; err != nil {
		c.mu.Unlock()
		return nil, err
	}
	old, known := c.sizes[w.Name], c.known[w.Name]
	c.mu.Unlock()
	if !known && c.state != nil {
		if v, err := c.state.Publication(ctx, stateKey(w)); err == nil && v != "" {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				old = n
			}
		}
	}
	for attempt := 0; ; attempt++ {
		var proof [][32]byte
		if old > 0 && old < size {
			var err error
			if proof, err = c.proofs(ctx, old, size); err != nil {
				return nil, fmt.Errorf("witness %s: proof %d -> %d: %w", w.Name, old, size, err)
			}
		}
		sigs, err := AddCheckpoint(ctx, c.hc, w, old, proof, checkpoint)
		var ce *ConflictError
		if errors.As(err, &ce) && attempt < 2 {
			c.log.Info("witness: its last cosigned size differs from the one kept; sending the proof from its size",
				"witness", w.Name, "kept", old, "witness_size", ce.Size)
			old = ce.Size
			continue
		}
		switch {
		case err == nil:
			c.mu.Lock()
			c.sizes[w.Name], c.known[w.Name] = size, true
			c.mu.Unlock()
			c.cosigned.WithLabelValues(w.Name).Set(float64(size))
			if c.state != nil {
				if err := c.state.SetPublication(ctx, stateKey(w), strconv.FormatUint(size, 10)); err != nil {
					c.log.Warn("witness: the size it cosigned was not kept (it is learnt again from the witness)", "witness", w.Name, "err", err)
				}
			}
			return sigs, nil
		case errors.Is(err, ErrForked), errors.Is(err, ErrRolledBack):
			reason := "forked"
			if errors.Is(err, ErrRolledBack) {
				reason = "rolled_back"
			}
			c.refusals.WithLabelValues(w.Name, reason).Inc()
			c.forkedG.WithLabelValues(w.Name).Set(1)
			c.mu.Lock()
			c.forked[w.Name] = err
			c.mu.Unlock()
			c.log.Error("witness: the witness refused this log's checkpoint as inconsistent with one it cosigned: the log was forked or rolled back; this witness is not asked again until serve restarts",
				"witness", w.Name, "size", size, "witness_size", old, "err", err)
			return nil, err
		case errors.Is(err, ErrUnknownLog):
			c.refusals.WithLabelValues(w.Name, "unknown_log").Inc()
		case errors.Is(err, ErrBadSignature):
			c.refusals.WithLabelValues(w.Name, "bad_signature").Inc()
		default:
			c.refusals.WithLabelValues(w.Name, "unavailable").Inc()
		}
		c.log.Warn("witness: no cosignature", "witness", w.Name, "size", size, "err", err)
		return nil, err
	}
}
