package outbound

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

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
}

func newQuotaGate(budgets map[string]float64) *quotaGate {
	q := &quotaGate{budgets: budgets, state: map[string]*quotaState{}}
	q.limit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "quota_limit_messages",
		Help: "The channel's monthly message quota, as LINE reports it (-1: none).",
	}, []string{"channel"})
	q.consumed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "quota_consumed_messages",
		Help: "Messages counted against the channel's quota this month, as LINE reports it.",
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

// heldReason returns why a promotional push on the channel is held back,
// or "" when it may go.
func (q *quotaGate) heldReason(channel string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state[channel]
	if st == nil || !st.held {
		return ""
	}
	return fmt.Sprintf("quota: %d of %d messages consumed this month, budget %g for promotional messages", st.consumed, st.limit, q.budgets[channel])
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
	was := st.held
	st.limit, st.consumed = limit, consumed
	st.held = q.over(channel, st)
	now := st.held
	q.mu.Unlock()
	q.limit.WithLabelValues(channel).Set(float64(limit))
	q.consumed.WithLabelValues(channel).Set(float64(consumed))
	if now == was {
		return nil
	}
	detail := map[string]any{"channel": channel, "on": now, "limit": limit, "consumed": consumed, "budget": q.budgets[channel]}
	_, err := RecordAdmin(ctx, c, "quota_hold", detail, nil, time.Now())
	return err
}

// Client returns the channel's Messaging API client (nil for a channel
// the Sender does not know), for the monitor's calls to share its
// metrics.
func (s *Sender) Client(channel string) *Client { return s.o.Clients[channel] }
