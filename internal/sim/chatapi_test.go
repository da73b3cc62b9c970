package sim_test

import (
	"testing"

	"github.com/linegate/linegate/internal/sim"
)

// The chat endpoints answer as the specification says: markAsRead takes
// a token a webhook carried to this channel's bot; loading/start a user's
// chat and 5 to 60 seconds in steps of 5. Bad input is 400, and every
// call is recorded.
func TestChatEndpoints(t *testing.T) {
	a, c := newSim(t, sim.Options{Channels: []sim.Channel{{ID: "a", AccessToken: "tok-a"}, {ID: "b", AccessToken: "tok-b"}}})
	tokA, tokAny := a.IssueReadToken("a"), a.IssueReadToken("")
	for _, tc := range []struct {
		path, token, body string
		want              int
	}{
		{"/v2/bot/chat/markAsRead", "tok-a", `{"markAsReadToken":"` + tokA + `"}`, 200},
		{"/v2/bot/chat/markAsRead", "tok-a", `{"markAsReadToken":"` + tokA + `"}`, 200}, // again: still valid
		{"/v2/bot/chat/markAsRead", "tok-b", `{"markAsReadToken":"` + tokA + `"}`, 400}, // another bot's
		{"/v2/bot/chat/markAsRead", "tok-b", `{"markAsReadToken":"` + tokAny + `"}`, 200},
		{"/v2/bot/chat/markAsRead", "tok-a", `{"markAsReadToken":"made-up"}`, 400},
		{"/v2/bot/chat/markAsRead", "tok-a", `{}`, 400},
		{"/v2/bot/chat/markAsRead", "tok-a", `{"markAsReadToken":`, 400},
		{"/v2/bot/chat/markAsRead", "", `{"markAsReadToken":"` + tokA + `"}`, 401},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234","loadingSeconds":10}`, 202},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234"}`, 202},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"C1234","loadingSeconds":10}`, 400},
		{"/v2/bot/chat/loading/start", "tok-a", `{"loadingSeconds":10}`, 400},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234","loadingSeconds":7}`, 400},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234","loadingSeconds":65}`, 400},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234","loadingSeconds":0}`, 400},
		{"/v2/bot/chat/loading/start", "tok-a", `{"chatId":"U1234","loadingSeconds":12.5}`, 400},
	} {
		if code, _, _ := c.do("POST", tc.path, tc.token, tc.body); code != tc.want {
			t.Errorf("POST %s %s = %d, want %d", tc.path, tc.body, code, tc.want)
		}
	}
	n := 0
	for _, call := range a.Calls() {
		if call.Path == "/v2/bot/chat/markAsRead" || call.Path == "/v2/bot/chat/loading/start" {
			n++
		}
	}
	if n != 16 {
		t.Errorf("%d chat calls recorded, want 16", n)
	}
}
