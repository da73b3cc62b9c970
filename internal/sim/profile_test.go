package sim_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/linegate/linegate/internal/sim"
)

// TestReads: the simulator answers a profile and a message's content,
// each with x-line-request-id; LINE's Go SDK reads both.
func TestReads(t *testing.T) {
	a := sim.NewAPI(sim.Options{Channels: []sim.Channel{{ID: "demo", AccessToken: "tok"}}})
	srv := httptest.NewServer(a)
	defer srv.Close()
	bot, err := messaging_api.NewMessagingApiAPI("tok", messaging_api.WithEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	const u = "U0123456789abcdef0123456789abcdef"
	resp, p, err := bot.GetProfileWithHttpInfo(u)
	if err != nil || p.UserId != u || resp.Header.Get("X-Line-Request-Id") == "" {
		t.Errorf("profile: %+v, %v", p, err)
	}
	if _, _, err := bot.GetProfileWithHttpInfo("nobody"); err == nil {
		t.Error("profile of a malformed id: no error")
	}
	a.AddContent("4711", sim.Content{Type: "image", Size: 65536})
	blob, err := messaging_api.NewMessagingApiBlobAPI("tok", messaging_api.WithBlobEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := blob.GetMessageContent("4711")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(cr.Body)
	cr.Body.Close()
	if cr.StatusCode != http.StatusOK || !bytes.Equal(b, sim.ContentBytes("4711", "image", 65536)) || cr.Header.Get("X-Line-Request-Id") == "" {
		t.Errorf("content: %d, %d bytes", cr.StatusCode, len(b))
	}
}
