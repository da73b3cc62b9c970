package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// sinkEvent is one event a destination received.
type sinkEvent struct {
	ID, User   string
	Token      bool
	Redelivery bool
}

// sink is a destination's record of what it received, in arrival order.
type sink struct {
	mu     sync.Mutex
	events []sinkEvent
	errs   []string
	bodies map[string]bool // SHA-256 (hex) of each body received
	// first and redelivered: a body received with its x-line-signature,
	// for LINE's Node.js SDK to check after the run.
	first, redelivered signedBody
}

// signedBody is a body as a destination received it, with its signature.
type signedBody struct {
	body      []byte
	signature string
}

func (s *sink) add(body []byte) {
	var cb struct {
		Events []struct {
			WebhookEventID  string `json:"webhookEventId"`
			ReplyToken      string `json:"replyToken"`
			DeliveryContext struct {
				IsRedelivery bool `json:"isRedelivery"`
			} `json:"deliveryContext"`
			Source struct {
				UserID string `json:"userId"`
			} `json:"source"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &cb); err != nil {
		s.fail("body not JSON: " + err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bodies == nil {
		s.bodies = map[string]bool{}
	}
	s.bodies[fmt.Sprintf("%x", sha256.Sum256(body))] = true
	for _, e := range cb.Events {
		s.events = append(s.events, sinkEvent{e.WebhookEventID, e.Source.UserID, e.ReplyToken != "", e.DeliveryContext.IsRedelivery})
	}
}

func (s *sink) fail(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

func (s *sink) snapshot() []sinkEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *sink) count(redelivery bool) int {
	n := 0
	for _, e := range s.snapshot() {
		if e.Redelivery == redelivery {
			n++
		}
	}
	return n
}

// signedBy checks x-line-signature as a destination must: HMAC-SHA256 of
// the body with its own secret.
func signedBy(secret string, r *http.Request, body []byte) bool {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal([]byte(r.Header.Get("x-line-signature")), []byte(base64.StdEncoding.EncodeToString(m.Sum(nil))))
}

// crmHandler is a plain HTTP destination that checks the signature.
func crmHandler(secret string, s *sink) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !signedBy(secret, r, body) {
			s.fail("bad signature")
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		s.add(body)
		s.mu.Lock()
		sb := signedBody{body, r.Header.Get("x-line-signature")}
		if s.first.body == nil {
			s.first = sb
		}
		if bytes.Contains(body, []byte(`"isRedelivery":true`)) && s.redelivered.body == nil {
			s.redelivered = sb
		}
		s.mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	})
}

func adminCall(t *testing.T, g *gateway, method, path string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, g.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

type destState struct {
	Name            string     `json:"name"`
	Paused          bool       `json:"paused"`
	Breaker         string     `json:"breaker"`
	QueueDepth      int64      `json:"queue_depth"`
	LastError       string     `json:"last_error"`
	LastErrorAt     *time.Time `json:"last_error_at"`
	LastDeliveredAt *time.Time `json:"last_delivered_at"`
	NextProbeAt     *time.Time `json:"next_probe_at"`
}

func destinations(t *testing.T, g *gateway) map[string]destState {
	var st struct {
		Destinations []destState `json:"destinations"`
	}
	if code := adminCall(t, g, "GET", "/admin/destinations", &st); code != 200 {
		t.Fatalf("GET /admin/destinations = %d", code)
	}
	m := map[string]destState{}
	for _, d := range st.Destinations {
		m[d.Name] = d
	}
	return m
}

// TestFanoutEndToEnd runs the gateway with three destinations of the demo
// channel, the simulator as LINE: the reply token's owner, a bot built on
// LINE's Go SDK (its ParseRequest verifies the signature) that replies to
// the simulator with the tokens it gets; a CRM stand-in checking the
// signature; and a dead one, a closed port started later. Every event
// reaches each live destination exactly once, in the ledger's order of
// each conversation; the owner alone sees reply tokens, and its replies
// succeed (linegate's own rule never spent them); the dead one's queue
// holds the events and delivers them in order once it is up; a paused
// destination's events wait for its resume; a replay of a time range
// delivers exactly that range's events again, each marked a redelivery.
// Every attempt, pause, resume and replay is in the ledger.
func TestFanoutEndToEnd(t *testing.T) {
	dir := t.TempDir()
	apiAddr := freePort(t)
	const ownerSecret, crmSecret, deadSecret = "owner-secret-1", "crm-secret-2", "dead-secret-3"

	var owner, crm, dead sink
	var replies sync.WaitGroup
	var proxyURL atomic.Value // the gateway's Messaging API proxy, once it runs
	ownerSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		cb, err := webhook.ParseRequest(ownerSecret, r)
		if err != nil {
			owner.fail("the SDK refused the request: " + err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		owner.add(body)
		w.WriteHeader(http.StatusOK)
		// Its replies go through linegate's proxy, with its own proxy
		// token: the proxy lets it reply, as the destination that owns
		// the reply token.
		client, err := messaging_api.NewMessagingApiAPI("bot-proxy-token", messaging_api.WithEndpoint(proxyURL.Load().(string)))
		if err != nil {
			owner.fail("SDK client: " + err.Error())
			return
		}
		for _, e := range cb.Events {
			token := ""
			switch e := e.(type) {
			case webhook.MessageEvent:
				token = e.ReplyToken
			case webhook.FollowEvent:
				token = e.ReplyToken
			case webhook.PostbackEvent:
				token = e.ReplyToken
			}
			if token == "" {
				continue
			}
			replies.Go(func() {
				if _, err := client.ReplyMessage(&messaging_api.ReplyMessageRequest{ReplyToken: token,
					Messages: []messaging_api.MessageInterface{messaging_api.TextMessage{Text: "from the owner bot"}}}); err != nil {
					owner.fail("SDK reply: " + err.Error())
				}
			})
		}
	}))
	defer ownerSrv.Close()
	crmSrv := httptest.NewServer(crmHandler(crmSecret, &crm))
	defer crmSrv.Close()
	deadAddr := freePort(t) // nothing listens there yet

	g := startGateway(t, dir, gwConfig{
		extra: fmt.Sprintf(`line_api_base: http://%s
fanout:
  base_delay: 50ms
  max_delay: 400ms
  breaker_failures: 3
  breaker_cooldown: 300ms
proxy:
  listen: 127.0.0.1:0
  tools:
    - {name: botproxy, token: bot-proxy-token, channels: [demo], destination: bot}
    - {name: crmproxy, token: crm-proxy-token, channels: [demo], destination: crm}
rules:
  - name: linegate-echo
    when: {event: [message]}
    reply: [{type: text, text: "from linegate"}]
`, apiAddr),
		chanExtra: fmt.Sprintf(`    destinations:
      - name: bot
        url: %s/callback
        allow_http: true
        secret: %s
        role: reply_owner
      - name: crm
        url: %s/hook
        allow_http: true
        secret: %s
      - name: dead
        url: http://%s/hook
        allow_http: true
        secret: %s
`, ownerSrv.URL, ownerSecret, crmSrv.URL, crmSecret, deadAddr, deadSecret),
	})
	api := startSimAPI(t, apiAddr, g.cfgPath)
	proxyURL.Store(g.proxyAddr(t))

	send := func(n int) {
		t.Helper()
		if code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret, "-count", fmt.Sprint(n),
			"-users", "5", "-concurrency", "4", "-api", api); code != 0 {
			t.Fatalf("sim send = %d:\n%s", code, out)
		}
	}

	// 1. Forty webhooks: the live destinations get them, the dead one's
	// queue holds them.
	t0 := time.Now().Add(-time.Millisecond)
	send(40)
	waitUntil(t, "the owner and the CRM to get 40 events", func() bool { return owner.count(false) >= 40 && crm.count(false) >= 40 })
	waitUntil(t, "the dead destination's queue to hold 40", func() bool { return destinations(t, g)["dead"].QueueDepth == 40 })
	time.Sleep(5 * time.Millisecond)
	t1 := time.Now()
	time.Sleep(5 * time.Millisecond)

	// 2. The CRM paused: ten more wait in its queue until it resumes.
	if code := adminCall(t, g, "POST", "/admin/destinations/crm/pause", nil); code != 200 {
		t.Fatalf("pause = %d", code)
	}
	send(10)
	waitUntil(t, "the owner to get 50 events", func() bool { return owner.count(false) >= 50 })
	waitUntil(t, "the paused CRM's queue to hold 10", func() bool { return destinations(t, g)["crm"].QueueDepth == 10 })
	if st := destinations(t, g)["crm"]; !st.Paused || crm.count(false) != 40 {
		t.Fatalf("paused CRM: %+v, %d events delivered", st, crm.count(false))
	}
	if code := adminCall(t, g, "POST", "/admin/destinations/crm/resume", nil); code != 200 {
		t.Fatalf("resume = %d", code)
	}
	waitUntil(t, "the CRM to get 50 events", func() bool { return crm.count(false) >= 50 })

	// 3. The dead destination comes up: its queue drains, in order.
	if st := destinations(t, g)["dead"]; st.QueueDepth != 50 || st.Breaker == "closed" || st.LastError == "" ||
		st.LastErrorAt == nil || st.LastDeliveredAt != nil || (st.Breaker == "open") != (st.NextProbeAt != nil) {
		t.Errorf("dead destination before it is up: %+v, want 50 queued, its breaker not closed, an error, no delivery, and the next probe's time while open", st)
	}
	if st := destinations(t, g)["crm"]; st.LastDeliveredAt == nil || st.LastError != "" || st.NextProbeAt != nil {
		t.Errorf("the live CRM: %+v, want a delivery and no error", st)
	}
	ln, err := net.Listen("tcp", deadAddr)
	if err != nil {
		t.Fatal(err)
	}
	deadSrv := httptest.NewUnstartedServer(crmHandler(deadSecret, &dead))
	deadSrv.Listener.Close()
	deadSrv.Listener = ln
	deadSrv.Start()
	defer deadSrv.Close()
	waitUntil(t, "the revived destination to get 50 events", func() bool { return dead.count(false) >= 50 })
	waitUntil(t, "every queue to be empty", func() bool {
		for _, d := range destinations(t, g) {
			if d.QueueDepth != 0 {
				return false
			}
		}
		return true
	})
	// Recovered: its last error stays, older than its last delivery.
	if st := destinations(t, g)["dead"]; st.Breaker != "closed" || st.LastError == "" || st.LastErrorAt == nil ||
		st.LastDeliveredAt == nil || !st.LastDeliveredAt.After(*st.LastErrorAt) || st.NextProbeAt != nil {
		t.Errorf("the revived destination: %+v, want its breaker closed and its last delivery after its last error", st)
	}

	// 4. Replay of the first range to the CRM.
	code, out := runCLI(t, "replay", "-config", g.cfgPath, "-admin", g.admin, "-destination", "crm",
		"-from", t0.UTC().Format(time.RFC3339Nano), "-to", t1.UTC().Format(time.RFC3339Nano), "-reason", "test")
	if code != 0 || !strings.Contains(out, "replay queued: 40 events of 40 webhooks") {
		t.Fatalf("replay = %d:\n%s", code, out)
	}
	waitUntil(t, "the CRM to get 40 redeliveries", func() bool { return crm.count(true) >= 40 })
	replies.Wait()
	// A tool that is not the reply token's owner is refused a reply.
	crmClient, err := messaging_api.NewMessagingApiAPI("crm-proxy-token", messaging_api.WithEndpoint(proxyURL.Load().(string)))
	if err != nil {
		t.Fatal(err)
	}
	if resp, _, err := crmClient.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{ReplyToken: "any",
		Messages: []messaging_api.MessageInterface{messaging_api.TextMessage{Text: "from the CRM"}}}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("a reply by the CRM's tool through the proxy: %v, want 403", err)
	}
	time.Sleep(300 * time.Millisecond) // anything extra would arrive now
	// The depths are counted once a second.
	waitUntil(t, "the dead destination's queue depth to read 0", func() bool {
		_, m := g.get(t, g.admin+"/metrics")
		return strings.Contains(string(m), `linegate_fanout_queue_depth{destination="dead"} 0`)
	})
	_, metrics := g.get(t, g.admin+"/metrics")
	for _, want := range []string{
		`linegate_fanout_attempts_total{destination="bot",result="delivered"} 50`,
		`linegate_fanout_attempts_total{destination="crm",result="delivered"} 90`,
		`linegate_fanout_attempts_total{destination="dead",result="delivered"} 50`,
		`linegate_fanout_breaker_state{destination="dead"} 0`,
		`linegate_fanout_queue_depth{destination="dead"} 0`,
		`linegate_fanout_paused{destination="crm"} 0`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !regexp.MustCompile(`linegate_fanout_attempt_seconds_count\{destination="crm"\} [1-9]`).Match(metrics) {
		t.Error("/metrics has no request time of the CRM")
	}
	if !regexp.MustCompile(`linegate_fanout_attempts_total\{destination="dead",result="failed"\} [1-9]`).Match(metrics) {
		t.Error("/metrics counts no failed attempt to the dead destination")
	}
	g.stop()

	// LINE's Node.js SDK's webhook middleware verifies what the fan-out
	// sent the CRM, a first delivery and a redelivery, with the CRM's own
	// secret, and refuses them under another destination's.
	for _, sb := range []signedBody{crm.first, crm.redelivered} {
		if sb.body == nil {
			t.Fatal("the CRM kept no body to check")
		}
		if !nodeVerifies(t, crmSecret, sb.body, sb.signature) {
			t.Error("LINE's Node.js SDK refused a body the fan-out sent the CRM")
		}
		if nodeVerifies(t, ownerSecret, sb.body, sb.signature) {
			t.Error("LINE's Node.js SDK accepted the CRM's body under the owner's secret")
		}
	}

	// The ledger's order of each conversation's events, and the events of
	// the replayed range.
	recs := readLedger(t, dir)
	order := map[string][]string{} // user -> event ids
	hasToken := map[string]bool{}  // event id -> LINE sent it with a reply token
	var ranged []string
	delivered := map[string]int{}
	sinks := map[string]*sink{"bot": &owner, "crm": &crm, "dead": &dead}
	redelivered, failedDead := 0, 0
	admin := map[string]int{}
	byTool := map[string]string{} // tool -> outcomes of its proxy records
	for _, r := range recs {
		switch r.leaf.Kind {
		case ledger.KindWebhook:
			for _, e := range bodyEvents(t, r.body) {
				order[e.User] = append(order[e.User], e.ID)
				hasToken[e.ID] = e.Token
				if !r.leaf.Time.Before(t0.Truncate(time.Millisecond)) && r.leaf.Time.Before(t1) {
					ranged = append(ranged, e.ID)
				}
			}
		case ledger.KindOutbound:
			var o record.Outbound
			if err := json.Unmarshal(r.body, &o); err != nil {
				t.Fatal(err)
			}
			if o.Tool != "" {
				byTool[o.Tool] += o.Outcome + " "
			}
			if o.Endpoint != "destination" {
				continue
			}
			if o.Outcome == "delivered" {
				n := max(1, len(o.Events)) // events the request carried
				delivered[o.Destination] += n
				if o.Redelivery {
					redelivered += n
				}
				if len(o.Events) > 0 && (o.Events[0].Key != o.EventKey || o.Events[0].Record != o.Record) {
					t.Errorf("a delivery of several events names another first event: %+v", o)
				}
				// The CRM stand-ins answer {"ok":true}; the bot, nothing.
				want := sha256.Sum256([]byte(`{"ok":true}`))
				size := int64(11)
				if o.Destination == "bot" {
					want, size = sha256.Sum256(nil), 0
				}
				if s := sinks[o.Destination]; s == nil || !s.bodies[o.RequestSHA256] || o.RequestBytes == 0 {
					t.Errorf("delivery record %s to %s: the body's SHA-256 %s is not of a body it received", o.EventKey, o.Destination, o.RequestSHA256)
				}
				if o.Status != 200 || o.ResponseBytes != size || o.ResponseSHA256 != fmt.Sprintf("%x", want) {
					t.Errorf("delivery record %s to %s: status %d, answer of %d bytes, SHA-256 %s; want 200, %d, %x",
						o.EventKey, o.Destination, o.Status, o.ResponseBytes, o.ResponseSHA256, size, want)
				}
			}
			if o.Destination == "dead" && o.Outcome == "failed" {
				failedDead++
			}
			if strings.Contains(string(r.body), "Authorization") || strings.Contains(string(r.body), crmSecret) {
				t.Errorf("a delivery record holds a secret")
			}
		case ledger.KindAdmin:
			var a record.Admin
			json.Unmarshal(r.body, &a)
			admin[a.Action]++
		}
	}
	if len(ranged) != 40 {
		t.Fatalf("%d events in the replayed range, want 40", len(ranged))
	}
	total := 0
	for _, ids := range order {
		total += len(ids)
	}
	if total != 50 {
		t.Fatalf("%d events in the ledger, want 50", total)
	}
	for name, s := range map[string]*sink{"bot": &owner, "crm": &crm, "dead": &dead} {
		if len(s.errs) > 0 {
			t.Errorf("%s: %v", name, s.errs)
		}
		got := map[string][]string{}
		var again []string
		for _, e := range s.snapshot() {
			if want := name == "bot" && hasToken[e.ID]; e.Token != want {
				t.Errorf("%s got event %s with a reply token: %v, want %v", name, e.ID, e.Token, want)
			}
			if e.Redelivery {
				again = append(again, e.ID)
				continue
			}
			got[e.User] = append(got[e.User], e.ID)
		}
		for user, want := range order {
			if !slices.Equal(got[user], want) {
				t.Errorf("%s: conversation %s got %v, want each event once in the ledger's order %v", name, user, got[user], want)
			}
		}
		if name == "crm" {
			slices.Sort(again)
			want := slices.Sorted(slices.Values(ranged))
			if !slices.Equal(again, want) {
				t.Errorf("crm: redelivered %v, want exactly the range's %v", again, want)
			}
		} else if len(again) != 0 {
			t.Errorf("%s got %d redeliveries, want none", name, len(again))
		}
	}
	if delivered["bot"] != 50 || delivered["crm"] != 90 || delivered["dead"] != 50 || redelivered != 40 {
		t.Errorf("delivery records: %v, %d redeliveries; want bot 50, crm 90, dead 50, 40 redeliveries", delivered, redelivered)
	}
	if failedDead == 0 {
		t.Error("no failed attempt to the dead destination was recorded")
	}
	if admin["destination_pause"] != 1 || admin["destination_resume"] != 1 || admin["destination_replay"] != 1 {
		t.Errorf("admin records: %v", admin)
	}
	// The owner's replies all succeeded: linegate's rule, which matches
	// every message, never spent a token.
	tokens := 0
	for _, e := range owner.snapshot() {
		if e.Token {
			tokens++
		}
	}
	calls := simReplies(t, api)
	ok := 0
	for _, c := range calls {
		if c.Status == 200 {
			ok++
		}
	}
	if strings.Count(byTool["botproxy"], "sent") != tokens || strings.TrimSpace(byTool["crmproxy"]) != "refused" {
		t.Errorf("proxy records by tool: %q; want %d sent by botproxy, one refused of crmproxy", byTool, tokens)
	}
	if tokens == 0 || len(calls) != tokens || ok != tokens {
		t.Errorf("the simulator got %d replies (%d ok) for %d events with reply tokens; want all of them ok, and no other", len(calls), ok, tokens)
	}
	// tail names each delivery.
	if code, out := runCLI(t, "tail", "-config", g.cfgPath, "-n", "1000"); code != 0 ||
		!strings.Contains(out, "to destination crm: delivered (redelivery), HTTP 200") ||
		!strings.Contains(out, "to destination dead: failed, no answer: connection failed") {
		t.Errorf("tail = %d, without its deliveries:\n%.3000s", code, out)
	}
	for _, s := range []string{ownerSecret, crmSecret, deadSecret} {
		if strings.Contains(g.Logs(), s) {
			t.Errorf("the log holds a destination's secret")
		}
	}
}

// bodyEvents returns the events of a webhook body.
func bodyEvents(t *testing.T, body []byte) []sinkEvent {
	var s sink
	s.add(body)
	if len(s.errs) > 0 {
		t.Fatalf("webhook body: %v", s.errs)
	}
	return s.events
}

// TestFanoutRestart: with the ledger as the queue, the events a
// destination had not received when linegate was killed (SIGKILL; held in
// memory behind a pause) are read back from the ledger after the restart
// and delivered once, in the ledger's order of each conversation; a clean
// stop and start delivers nothing again.
func TestFanoutRestart(t *testing.T) {
	dir := t.TempDir()
	const crmSecret = "crm-secret-2"
	var crm sink
	crmSrv := httptest.NewServer(crmHandler(crmSecret, &crm))
	defer crmSrv.Close()
	cfg := gwConfig{extra: "fanout: {base_delay: 50ms}\n", chanExtra: fmt.Sprintf(`    destinations:
      - name: crm
        url: %s/hook
        allow_http: true
        secret: %s
`, crmSrv.URL, crmSecret)}
	send := func(g *gateway, n int) {
		t.Helper()
		if code, out := runCLI(t, "sim", "send", "-url", g.webhook+"/webhook/demo", "-secret", testSecret, "-count", fmt.Sprint(n),
			"-users", "5", "-concurrency", "4"); code != 0 {
			t.Fatalf("sim send = %d:\n%s", code, out)
		}
	}
	g := startGateway(t, dir, cfg)
	send(g, 10)
	waitUntil(t, "the CRM to get 10 events", func() bool { return crm.count(false) >= 10 })
	if code := adminCall(t, g, "POST", "/admin/destinations/crm/pause", nil); code != 200 {
		t.Fatalf("pause = %d", code)
	}
	send(g, 30)
	waitUntil(t, "the paused CRM to hold 30", func() bool { return destinations(t, g)["crm"].QueueDepth == 30 })
	g.kill()

	g = startGateway(t, dir, cfg)
	if st := destinations(t, g)["crm"]; !st.Paused {
		t.Errorf("after the restart: %+v, want still paused", st)
	}
	// Still paused, its events are read back from the ledger and counted.
	waitUntil(t, "the paused CRM to count its 30 again", func() bool { return destinations(t, g)["crm"].QueueDepth == 30 })
	if code := adminCall(t, g, "POST", "/admin/destinations/crm/resume", nil); code != 200 {
		t.Fatalf("resume = %d", code)
	}
	waitUntil(t, "the CRM to get 40 events", func() bool { return crm.count(false) >= 40 })
	g.stop()

	g = startGateway(t, dir, cfg)
	send(g, 5)
	waitUntil(t, "the CRM to get 45 events", func() bool { return crm.count(false) >= 45 })
	time.Sleep(300 * time.Millisecond) // anything extra would arrive now
	g.stop()

	order := map[string][]string{} // user -> event ids, as recorded
	for _, r := range readLedger(t, dir) {
		if r.leaf.Kind == ledger.KindWebhook {
			for _, e := range bodyEvents(t, r.body) {
				order[e.User] = append(order[e.User], e.ID)
			}
		}
	}
	got := map[string][]string{}
	for _, e := range crm.snapshot() {
		got[e.User] = append(got[e.User], e.ID)
	}
	if len(crm.errs) > 0 {
		t.Errorf("CRM: %v", crm.errs)
	}
	total := 0
	for user, ids := range order {
		total += len(ids)
		if !slices.Equal(got[user], ids) {
			t.Errorf("user %s: the CRM got %v, want each event once in the ledger's order %v", user, got[user], ids)
		}
	}
	if total != 45 || len(crm.snapshot()) != 45 {
		t.Errorf("%d events recorded, %d received; want 45 and 45", total, len(crm.snapshot()))
	}
}
