package sim

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// The chat endpoints of the Messaging API: mark as read and the loading
// animation, validated as the specification says (400 on bad input) and
// recorded like every call.

// IssueReadToken returns a new markAsReadToken, as LINE puts in a message
// event's message; an empty channel makes it valid for any channel.
func (a *API) IssueReadToken(channel string) string {
	b := make([]byte, 16)
	rand.Read(b)
	t := "mr" + hex.EncodeToString(b)
	a.mu.Lock()
	if a.readTokens == nil {
		a.readTokens = map[string]string{}
	}
	a.readTokens[t] = channel
	a.mu.Unlock()
	return t
}

func (a *API) markAsRead(c *call) {
	var req struct {
		Token *string `json:"markAsReadToken"`
	}
	if !c.noRetryKey() || !c.decode(&req) {
		return
	}
	if req.Token == nil || *req.Token == "" {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be specified", "markAsReadToken"})
		return
	}
	a.mu.Lock()
	ch, ok := a.readTokens[*req.Token]
	a.mu.Unlock()
	if !ok || (ch != "" && ch != c.ch.ID) {
		c.fail(http.StatusBadRequest, "Invalid markAsReadToken")
		return
	}
	c.reply(http.StatusOK, map[string]any{})
}

func (a *API) loadingStart(c *call) {
	var req struct {
		ChatID  *string  `json:"chatId"`
		Seconds *float64 `json:"loadingSeconds"`
	}
	if !c.noRetryKey() || !c.decode(&req) {
		return
	}
	if req.ChatID == nil || *req.ChatID == "" {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be specified", "chatId"})
		return
	}
	// One-on-one chats only: a user id ("U" and 32 hex digits in LINE's
	// ids; the simulator takes any user id it is given).
	if !strings.HasPrefix(*req.ChatID, "U") {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"invalid chat ID: the loading animation is for one-on-one chats with users", "chatId"})
		return
	}
	if s := req.Seconds; s != nil && (*s < 5 || *s > 60 || *s != float64(int(*s)) || int(*s)%5 != 0) {
		c.fail(http.StatusBadRequest, "The request body has 1 error(s)", ErrorDetail{"must be a multiple of 5 between 5 and 60", "loadingSeconds"})
		return
	}
	c.reply(http.StatusAccepted, map[string]any{})
}
