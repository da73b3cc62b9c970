package main

import (
	"testing"

	"github.com/linegate/linegate/internal/record"
)

// TestSummarizeToolCalls: a tool's call through the proxy names the tool,
// and a webhook only when it replies to an event linegate saw.
func TestSummarizeToolCalls(t *testing.T) {
	for _, c := range []struct {
		rec  record.Outbound
		want string
	}{
		{record.Outbound{Tool: "crm", Endpoint: "/v2/bot/message/push", Outcome: "sent"},
			"/v2/bot/message/push by tool crm: sent"},
		{record.Outbound{Tool: "crm", Endpoint: "/v2/bot/message/reply", EventKey: "id:E1", Record: 5, Outcome: "refused", Reason: "reply token already used by agent alice"},
			"/v2/bot/message/reply by tool crm for #5: held back, refused: reply token already used by agent alice"},
		{record.Outbound{Endpoint: "reply", Rule: "hello", EventKey: "id:E2", Record: 0, Outcome: "sent"},
			"reply by rule hello for #0: sent"},
	} {
		if got := summarizeOutbound(&c.rec); got != c.want {
			t.Errorf("summary %q, want %q", got, c.want)
		}
	}
}
