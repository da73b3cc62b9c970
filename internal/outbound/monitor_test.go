package outbound_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/sim"
	"github.com/prometheus/client_golang/prometheus"
)

// TestQuotaBudget: promotional pushes are held once the consumption LINE
// reported, plus the pushes sent since, reaches the budget; replies and
// transactional pushes go on; the start and end of the hold are recorded.
func TestQuotaBudget(t *testing.T) {
	ctx := context.Background()
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "c", AccessToken: "tok"}}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	l := &memLedger{state: &memState{settings: map[string]string{}, consent: map[string]bool{"c/U1": true}}}
	s := outbound.NewSender(outbound.SenderOptions{
		Clients: map[string]*outbound.Client{"c": {Base: srv.URL, Token: []byte("tok")}},
		Ledger:  l, State: l.state, QuotaBudgets: map[string]float64{"c": 0.5},
	})
	push := func(class outbound.Class) outbound.Outcome {
		r := req(api, 1)
		r.ForcePush, r.Class = true, class
		o, err := s.Send(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	if o := push(outbound.Promotional); o != outbound.Sent {
		t.Errorf("before any poll: %s", o)
	}
	if err := s.UpdateQuota(ctx, l, "c", 4, 1); err != nil {
		t.Fatal(err)
	}
	if o := push(outbound.Promotional); o != outbound.Sent { // 2 of 4 now: the budget
		t.Errorf("under the budget: %s", o)
	}
	if o := push(outbound.Promotional); o != outbound.Held {
		t.Errorf("at the budget: %s", o)
	}
	if o := push(outbound.Transactional); o != outbound.Sent {
		t.Errorf("transactional at the budget: %s", o)
	}
	r := req(api, 1)
	r.Class = outbound.Promotional
	if o, err := s.Send(ctx, r); o != outbound.Sent || err != nil {
		t.Errorf("promotional reply at the budget: %s %v", o, err)
	}
	if err := s.UpdateQuota(ctx, l, "c", -1, 100); err != nil { // no quota any more
		t.Fatal(err)
	}
	if o := push(outbound.Promotional); o != outbound.Sent {
		t.Errorf("without a quota: %s", o)
	}
	var holds []string
	for _, e := range l.entries {
		if e.Kind == ledger.KindAdmin {
			holds = append(holds, string(e.Payload))
		}
	}
	if got := strings.Join(l.outcomes(t), " "); got != "push:sent push:sent push:held push:sent reply:sent push:sent" {
		t.Errorf("outcomes %s", got)
	}
	if len(holds) != 2 {
		t.Errorf("%d quota_hold records, want 2 (start, end)", len(holds))
	}
}

// TestMonitor: one poll of each kind, against the simulator, into the
// metrics; a URL never set is a webhook not in use.
func TestMonitor(t *testing.T) {
	api := sim.NewAPI(sim.Options{Channels: []sim.Channel{
		{ID: "a", AccessToken: "ta", Endpoint: "https://gw.example/webhook/a", Quota: 500},
		{ID: "b", AccessToken: "tb"},
	}})
	api.SetFaults(sim.Faults{ClockOffset: 10 * time.Second})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	m := outbound.NewMonitor(outbound.MonitorOptions{Channels: []outbound.MonitorChannel{
		{ID: "a", Client: &outbound.Client{Base: srv.URL, Token: []byte("ta")}, WebhookURL: "https://gw.example/webhook/a"},
		{ID: "b", Client: &outbound.Client{Base: srv.URL, Token: []byte("tb")}, WebhookURL: "https://gw.example/webhook/b"},
	}})
	m.PollWebhooks(context.Background())
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			got[mf.GetName()+"/"+s.GetLabel()[0].GetValue()] = s.GetGauge().GetValue()
		}
	}
	for k, want := range map[string]float64{
		"linegate_webhook_endpoint_active/a": 1, "linegate_webhook_endpoint_active/b": 0,
		"linegate_webhook_endpoint_url_matches/a": 1, "linegate_webhook_endpoint_url_matches/b": 0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	for _, ch := range []string{"a", "b"} {
		if v := got["linegate_clock_drift_seconds/"+ch]; v < 9 || v > 11 {
			t.Errorf("drift of %s %v, want about 10", ch, v)
		}
		if v := got["linegate_webhook_endpoint_checked_timestamp_seconds/"+ch]; time.Since(time.Unix(int64(v), 0)).Abs() > 5*time.Second {
			t.Errorf("checked at %v", v)
		}
	}

	_, x, err := (&outbound.Client{Base: srv.URL, Token: []byte("ta")}).Quota(context.Background())
	if err != nil || x.RequestID == "" {
		t.Fatalf("quota: %v %+v", err, x)
	}
	_, _, err = (&outbound.Client{Base: srv.URL, Token: []byte("wrong")}).Quota(context.Background())
	var ae *outbound.APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.RequestID == "" || strings.Contains(err.Error(), "wrong") {
		t.Errorf("quota with a bad token: %v", err)
	}
	b, _ := json.Marshal(ae)
	if strings.Contains(string(b), "wrong") {
		t.Errorf("the error holds the token: %s", b)
	}
}
