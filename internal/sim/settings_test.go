package sim_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/sim"
)

// TestWebhookActive: the console's "Use webhook" switch shows in GET
// .../webhook/endpoint as active, and the control sets it.
func TestWebhookActive(t *testing.T) {
	a, c := newSim(t, sim.Options{Channels: []sim.Channel{{ID: "a", AccessToken: "tok", Secret: "sec", Endpoint: "https://gw.example/webhook/a"}}})
	if status, _, body := c.do("GET", "/v2/bot/channel/webhook/endpoint", "tok", ""); status != 200 || body["active"] != true {
		t.Errorf("before: %d %v", status, body)
	}
	if err := a.SetWebhookActive("a", false); err != nil {
		t.Fatal(err)
	}
	if status, _, body := c.do("GET", "/v2/bot/channel/webhook/endpoint", "tok", ""); status != 200 || body["active"] != false || body["endpoint"] != "https://gw.example/webhook/a" {
		t.Errorf("switched off: %d %v", status, body)
	}
	if status, _, _ := c.do("PUT", "/_sim/channels/a", "", `{"webhook_active":true}`); status != 204 {
		t.Errorf("control = %d", status)
	}
	if status, _, body := c.do("GET", "/v2/bot/channel/webhook/endpoint", "tok", ""); status != 200 || body["active"] != true {
		t.Errorf("switched on again: %d %v", status, body)
	}
	if status, _, _ := c.do("PUT", "/_sim/channels/nope", "", `{"webhook_active":true}`); status != 404 {
		t.Errorf("control of an unknown channel = %d", status)
	}
	for _, bad := range []string{`{"endpoint":null}`, `{"endpoint":"ftp://x"}`, `{"endpoint":"/webhook"}`, `{"endpoint":"https://` + strings.Repeat("a", 500) + `"}`} {
		if status, _, body := c.do("PUT", "/v2/bot/channel/webhook/endpoint", "tok", bad); status != 400 || body["message"] == nil {
			t.Errorf("set %s = %d %v, want 400", bad, status, body)
		}
	}
}

// TestWebhookTestReasons: the webhook test reports each failure as LINE
// does: a non-2xx answer, no connection, no answer within the deadline.
func TestWebhookTestReasons(t *testing.T) {
	status := http.StatusOK
	stall := make(chan struct{})
	bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(status)
	}))
	defer bot.Close()
	defer close(stall)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/webhook/a"
	ln.Close()
	_, c := newSim(t, sim.Options{WebhookTimeout: 300 * time.Millisecond,
		Channels: []sim.Channel{{ID: "a", AccessToken: "tok", Secret: "sec", Endpoint: bot.URL + "/webhook/a"}}})
	for _, tc := range []struct {
		name, body   string
		status       int
		success      bool
		code         float64
		reason, detl string
	}{
		{"ok", "", 200, true, 200, "OK", "200"},
		{"error status", "", 404, false, 404, "error_status_code", "404"},
		{"no connection", `{"endpoint":"` + closed + `"}`, 200, false, 0, "could_not_connect", "Connection failed"},
		{"timeout", `{"endpoint":"` + bot.URL + `/slow"}`, 200, false, 0, "request_timeout", "Request timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status = tc.status
			st, _, body := c.do("POST", "/v2/bot/channel/webhook/test", "tok", tc.body)
			if st != 200 || body["success"] != tc.success || body["statusCode"] != tc.code || body["reason"] != tc.reason || body["detail"] != tc.detl {
				t.Errorf("test = %d %v", st, body)
			}
			if ts, _ := body["timestamp"].(string); ts == "" {
				t.Errorf("no timestamp: %v", body)
			} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("timestamp %q: %v", ts, err)
			}
		})
	}
}

// TestQuota: quota and consumption as the spec has them, consumption
// counted per recipient of accepted pushes, multicasts and broadcasts
// (replies and refused sends are free), and 429 once the quota is spent.
func TestQuota(t *testing.T) {
	a, c := newSim(t, sim.Options{Friends: 4, Channels: []sim.Channel{{ID: "a", AccessToken: "tok", Secret: "sec"}}})
	if status, _, body := c.do("GET", "/v2/bot/message/quota", "tok", ""); status != 200 || body["type"] != "none" || body["value"] != nil {
		t.Errorf("quota without a limit: %d %v", status, body)
	}
	if err := a.SetQuota("a", 10); err != nil {
		t.Fatal(err)
	}
	if status, _, body := c.do("GET", "/v2/bot/message/quota", "tok", ""); status != 200 || body["type"] != "limited" || body["value"] != float64(10) {
		t.Errorf("quota: %d %v", status, body)
	}
	two := `[{"type":"text","text":"a"},{"type":"text","text":"b"}]`
	steps := []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v2/bot/message/push", `{"to":"U1","messages":` + two + `}`, 200},                   // 1: one recipient
		{"POST", "/v2/bot/message/push", `{"to":"Cgroup1","messages":` + text("g") + `}`, 200},        // 3 members
		{"POST", "/v2/bot/message/multicast", `{"to":["U1","U2"],"messages":` + text("m") + `}`, 200}, // 2
		{"POST", "/v2/bot/message/push", `{"to":"U1","messages":[{"type":"nope"}]}`, 400},             // refused: free
		{"POST", "/v2/bot/message/reply", `{"replyToken":"x","messages":` + text("r") + `}`, 400},     // replies are free
		{"POST", "/v2/bot/message/broadcast", `{"messages":` + text("b") + `}`, 200},                  // 4 friends: 10
		{"POST", "/v2/bot/message/push", `{"to":"U1","messages":` + text("over") + `}`, 429},          // spent
	}
	for i, s := range steps {
		if status, _, body := c.do(s.method, s.path, "tok", s.body); status != s.want {
			t.Errorf("step %d %s = %d %v, want %d", i, s.path, status, body, s.want)
		} else if status == 429 && body["message"] != "You have reached your monthly limit." {
			t.Errorf("429 message %v", body)
		}
	}
	if status, _, body := c.do("GET", "/v2/bot/message/quota/consumption", "tok", ""); status != 200 || body["totalUsage"] != float64(10) {
		t.Errorf("consumption: %d %v", status, body)
	}
	if status, _, _ := c.do("GET", "/v2/bot/message/quota/consumption", "", ""); status != 401 {
		t.Errorf("consumption without a token = %d", status)
	}
}

// TestDateHeader: the API's answers carry LINE's time in Date, shifted by
// the clock offset fault.
func TestDateHeader(t *testing.T) {
	a, c := newSim(t, sim.Options{})
	for _, off := range []time.Duration{0, 90 * time.Second, -5 * time.Second} {
		a.SetFaults(sim.Faults{ClockOffset: off})
		before := time.Now()
		_, h, _ := c.do("GET", "/v2/bot/info", "t", "")
		d, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			t.Fatalf("Date %q: %v", h.Get("Date"), err)
		}
		if got := d.Sub(before); got < off-time.Second || got > off+2*time.Second {
			t.Errorf("offset %v: Date is %v from local time", off, got)
		}
	}
}
