package outbound_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// Chat calls go through the switches like sends and are recorded with
// the agent they were made for; a person's send names them too.
func TestChatCalls(t *testing.T) {
	s, api, l := newSender(t, false)
	ctx := context.Background()
	tok := api.IssueReadToken("c")
	if o, rec, err := s.Chat(ctx, outbound.ChatRequest{Channel: "c", Endpoint: outbound.EndpointMarkAsRead, Token: tok, Agent: "alice"}); o != outbound.Sent || err != nil || rec.Agent != "alice" {
		t.Fatalf("markAsRead: %s %+v %v", o, rec, err)
	}
	if o, _, err := s.Chat(ctx, outbound.ChatRequest{Channel: "c", Endpoint: outbound.EndpointLoading, UserID: "U1", Seconds: 10}); o != outbound.Sent || err != nil {
		t.Fatalf("loading: %s %v", o, err)
	}
	if o, _, err := s.Chat(ctx, outbound.ChatRequest{Channel: "c", Endpoint: outbound.EndpointMarkAsRead, Token: "made-up"}); o != outbound.Failed || err == nil {
		t.Fatalf("markAsRead with a token LINE never gave: %s %v", o, err)
	}
	for _, bad := range []outbound.ChatRequest{
		{Channel: "c", Endpoint: outbound.EndpointMarkAsRead},
		{Channel: "c", Endpoint: outbound.EndpointLoading},
		{Channel: "c", Endpoint: outbound.EndpointLoading, UserID: "U1", Seconds: 7},
		{Channel: "c", Endpoint: "other"},
	} {
		if _, _, err := s.Chat(ctx, bad); err == nil {
			t.Errorf("Chat %+v: no error", bad)
		}
	}
	r := req(api, 1)
	r.Agent, r.Extra = "alice", map[string]string{"conversation": "user:U1"}
	if o, rec, err := s.SendRecorded(ctx, r); o != outbound.Sent || err != nil || rec.Agent != "alice" || rec.Extra["conversation"] != "user:U1" {
		t.Fatalf("a person's reply: %s %+v %v", o, rec, err)
	}
	// The kill switch holds chat calls back, recorded.
	if err := s.SetKillSwitch(ctx, l, true, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	calls := len(api.Calls())
	if o, _, err := s.Chat(ctx, outbound.ChatRequest{Channel: "c", Endpoint: outbound.EndpointMarkAsRead, Token: tok, Agent: "alice"}); o != outbound.Suppressed || err != nil {
		t.Fatalf("markAsRead under the kill switch: %s %v", o, err)
	}
	if len(api.Calls()) != calls {
		t.Fatal("a chat call reached LINE under the kill switch")
	}
	got := strings.Join(l.outcomes(t), " ")
	if got != "markAsRead:sent loading:sent markAsRead:failed reply:sent markAsRead:suppressed" {
		t.Fatalf("records: %s", got)
	}
	_, b, _ := record.DecodePayload(l.entries[len(l.entries)-1].Payload)
	var last struct{ Agent string }
	json.Unmarshal(b, &last)
	if last.Agent != "alice" {
		t.Fatalf("last record: %s", b)
	}
}
