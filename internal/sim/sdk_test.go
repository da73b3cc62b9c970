package sim_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/sim"
)

// TestOfficialSDKClient points LINE's official Go SDK at the simulator:
// reply and push succeed and the SDK reads x-line-request-id.
func TestOfficialSDKClient(t *testing.T) {
	a := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "tok"}}})
	srv := httptest.NewServer(a)
	defer srv.Close()
	bot, err := messaging_api.NewMessagingApiAPI("tok", messaging_api.WithEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	resp, rr, err := bot.ReplyMessageWithHttpInfo(&messaging_api.ReplyMessageRequest{
		ReplyToken: a.IssueReplyToken("demo"),
		Messages:   []messaging_api.MessageInterface{messaging_api.TextMessage{Text: "hello"}},
	})
	if err != nil {
		t.Fatalf("SDK reply: %v", err)
	}
	if resp.Header.Get("X-Line-Request-Id") == "" || len(rr.SentMessages) != 1 {
		t.Errorf("reply: request id %q, sent %v", resp.Header.Get("X-Line-Request-Id"), rr.SentMessages)
	}
	key := uuid.NewString()
	push := &messaging_api.PushMessageRequest{To: "U0123", Messages: []messaging_api.MessageInterface{
		messaging_api.StickerMessage{PackageId: "446", StickerId: "1988"}}}
	resp, pr, err := bot.PushMessageWithHttpInfo(push, key)
	if err != nil {
		t.Fatalf("SDK push: %v", err)
	}
	if resp.Header.Get("X-Line-Request-Id") == "" || len(pr.SentMessages) != 1 {
		t.Errorf("push: request id %q, sent %v", resp.Header.Get("X-Line-Request-Id"), pr.SentMessages)
	}
	// The same retry key again: 409, the SDK reports an error.
	resp, _, err = bot.PushMessageWithHttpInfo(push, key)
	if err == nil || resp.StatusCode != 409 || resp.Header.Get("X-Line-Accepted-Request-Id") == "" {
		t.Errorf("repeated retry key: %v, status %d", err, resp.StatusCode)
	}
	// The SDK sends the header even without a key, empty: LINE refuses it,
	// and so does the simulator.
	resp, _, err = bot.PushMessageWithHttpInfo(push, "")
	if err == nil || resp.StatusCode != 400 {
		t.Errorf("empty retry key: %v, status %d; want 400", err, resp.StatusCode)
	}
	if info, err := bot.GetBotInfo(); err != nil || info.UserId == "" {
		t.Errorf("bot info: %+v, %v", info, err)
	}
}

// TestOfficialSDKParsesSimulatedWebhooks sends the simulator's synthetic
// conversation, the module's own webhook bodies and LINE's SDK fixtures (when
// the shared corpus is there) to a server built on the official SDK's
// webhook.ParseRequest: it accepts every body and signature.
func TestOfficialSDKParsesSimulatedWebhooks(t *testing.T) {
	const secret = "sdk-secret"
	var mu sync.Mutex
	events := map[string]int{}
	var failures []error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb, err := webhook.ParseRequest(secret, r)
		if err != nil {
			mu.Lock()
			failures = append(failures, err)
			mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, e := range cb.Events {
			events[e.GetType()]++
		}
		mu.Unlock()
	}))
	defer srv.Close()

	conv := &sim.Conversation{Redeliveries: 0.1, Duplicates: 0.05}
	res, err := sim.Send(context.Background(), srv.Client(), srv.URL, []byte(secret), conv, sim.Load{Count: 500, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() != 500 {
		t.Errorf("synthetic: %d of 500 accepted by the SDK (%v); failures: %v", res.OK(), res.Statuses, errors.Join(failures...))
	}
	for _, typ := range []string{"message", "follow", "postback"} {
		if events[typ] == 0 {
			t.Errorf("no %s events in the synthetic conversation: %v", typ, events)
		}
	}
	for name, dir := range map[string]func(*testing.T) string{
		"testdata": func(t *testing.T) string { return corpus.Webhooks(t) },
		"sdk-java": func(t *testing.T) string { return corpus.Shared(t, corpus.SDKJava) },
	} {
		t.Run(name, func(t *testing.T) {
			fixtures, err := sim.NewFixtureSource(dir(t))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sim.Send(context.Background(), srv.Client(), srv.URL, []byte(secret), fixtures, sim.Load{Count: fixtures.Len(), Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK() != fixtures.Len() {
				mu.Lock()
				defer mu.Unlock()
				t.Errorf("fixtures: %d of %d accepted by the SDK; failures: %v", res.OK(), fixtures.Len(), errors.Join(failures...))
			}
		})
	}
}
