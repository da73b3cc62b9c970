package outbound

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/oplog"
	"github.com/prometheus/client_golang/prometheus"
)

// quotaGate holds promotional pushes back once a channel's consumption of
// its monthly quota reaches its budget (a share of the quota), so that
// what is left goes to transactional messages. It knows the quota and the
// consumption from the monitor's polls (UpdateQuota), and between polls
// counts the pushes it lets through. Replies cost no quota, and pass.
type quotaGate struct {
	budgets map[string]float64 // by channel; channels without one are never held

	mu    sync.Mutex
	state map[string]*quotaState

	limit, consumed, ratio *prometheus.GaugeVec
}

type quotaState struct {
	limit    int64 // -1: none
	consumed int64
	held     bool
	recorded bool // the hold state last recorded in the ledger
}

func newQuotaGate(budgets map[string]float64) *quotaGate {
	q := &quotaGate{budgets: budgets, state: map[string]*quotaState{}}
	q.limit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "quota_limit_messages",
		Help: "The channel's monthly message quota, as LINE reports it (-1: none).",
	}, []string{"channel"})
	q.consumed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "quota_consumed_messages",
		Help: "Messages counted against the channel's quota this month: LINE's count at the last poll, plus the pushes sent since.",
	}, []string{"channel"})
	q.ratio = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "quota_budget_ratio",
		Help: "The share of the quota past which promotional pushes are held back (channels with a quota_budget only).",
	}, []string{"channel"})
	for ch, b := range budgets {
		if b > 0 {
			q.ratio.WithLabelValues(ch).Set(b)
		}
	}
	return q
}

func (q *quotaGate) collectors() []prometheus.Collector {
	return []prometheus.Collector{q.limit, q.consumed, q.ratio}
}

// check returns why a promotional push on the channel is held back, or
// "" when it may go; and, when the hold started or ended since it was
// last recorded, the detail of the quota_hold record to make.
func (q *quotaGate) check(channel string) (reason string, record map[string]any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state[channel]
	if st == nil {
		return "", nil
	}
	if st.held {
		reason = fmt.Sprintf("quota: %d of %d messages consumed this month, budget %g for promotional messages", st.consumed, st.limit, q.budgets[channel])
	}
	return reason, q.transition(channel, st)
}

// transition returns the detail of a quota_hold record when the hold's
// state is not the one last recorded, and takes it as recorded.
func (q *quotaGate) transition(channel string, st *quotaState) map[string]any {
	if st.held == st.recorded {
		return nil
	}
	st.recorded = st.held
	return map[string]any{"channel": channel, "on": st.held, "limit": st.limit, "consumed": st.consumed, "budget": q.budgets[channel]}
}

// counted notes n messages sent on the channel since the last poll.
func (q *quotaGate) counted(channel string, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.state[channel]; st != nil {
		st.consumed += n
		st.held = q.over(channel, st)
		q.consumed.WithLabelValues(channel).Set(float64(st.consumed))
	}
}

func (q *quotaGate) over(channel string, st *quotaState) bool {
	b := q.budgets[channel]
	return b > 0 && st.limit >= 0 && float64(st.consumed) >= math.Floor(b*float64(st.limit))
}

// QuotaBudget returns the channel's configured budget (0: none).
func (s *Sender) QuotaBudget(channel string) float64 { return s.quota.budgets[channel] }

// UpdateQuota takes the quota and consumption LINE reports for a channel
// (limit -1: none). When the channel's promotional pushes start or stop
// being held back, it records so in the ledger (admin action quota_hold).
func (s *Sender) UpdateQuota(ctx context.Context, c Committer, channel string, limit, consumed int64) error {
	q := s.quota
	q.mu.Lock()
	st := q.state[channel]
	if st == nil {
		st = &quotaState{}
		q.state[channel] = st
	}
	st.limit, st.consumed = limit, consumed
	st.held = q.over(channel, st)
	detail := q.transition(channel, st)
	q.mu.Unlock()
	q.limit.WithLabelValues(channel).Set(float64(limit))
	q.consumed.WithLabelValues(channel).Set(float64(consumed))
	if detail == nil {
		return nil
	}
	_, err := RecordAdmin(ctx, c, "quota_hold", detail, nil, time.Now())
	return err
}

// quotaHeld returns why a promotional push is held back by the channel's
// quota budget, or "". A hold that the sends since the last poll started
// is recorded here (the Sender's ledger must commit: *ledger.Ledger does).
func (s *Sender) quotaHeld(ctx context.Context, channel string) string {
	why, detail := s.quota.check(channel)
	if detail == nil {
		return why
	}
	c, ok := s.o.Ledger.(Committer)
	if !ok {
		return why
	}
	if _, err := RecordAdmin(ctx, c, "quota_hold", detail, nil, time.Now()); err != nil {
		s.fails.Log(slog.LevelError, oplog.Key{Class: "quota_hold_unrecorded", Channel: channel}, "recording the quota hold failed", "err", err.Error())
	}
	return why
}

// Client returns the channel's Messaging API client (nil for a channel
// the Sender does not know), for the monitor's calls to share its
// metrics.
func (s *Sender) Client(channel string) *Client { return s.o.Clients[channel] }
