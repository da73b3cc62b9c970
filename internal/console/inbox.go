package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/linegate/linegate/internal/line"
)

// historyLimit is how many lines of a conversation's history its page
// shows.
const historyLimit = 200

// inboxData is the inbox page's.
type inboxData struct {
	Waiting, Mine, Others, Bot []Conversation
	Unavailable                string
	Channels                   []string // the user's, for opening a conversation
}

func (c *Console) inbox(w http.ResponseWriter, r *http.Request, s *session) {
	d := &inboxData{Channels: s.user.channels(c.o.Channels)}
	if c.o.Conversations == nil {
		d.Unavailable = "Human handoff is not running in this gateway."
		c.render(w, r, http.StatusOK, "inbox", sessionPage(r, s, "Inbox", d))
		return
	}
	convs, err := c.o.Conversations.List(r.Context(), s.user.channels(c.o.Channels), StateHuman, StateBot)
	if err != nil {
		c.failConv(w, r, s, err)
		return
	}
	for _, cv := range convs {
		if !s.user.may(cv.Channel) { // the engine's filter, checked again
			continue
		}
		switch {
		case cv.State == StateHuman && cv.Agent == "":
			d.Waiting = append(d.Waiting, cv)
		case cv.State == StateHuman && cv.Agent == s.user.Name:
			d.Mine = append(d.Mine, cv)
		case cv.State == StateHuman:
			d.Others = append(d.Others, cv)
		default:
			d.Bot = append(d.Bot, cv)
		}
	}
	c.render(w, r, http.StatusOK, "inbox", sessionPage(r, s, "Inbox", d))
}

// openConversation sends the agent to a conversation named by channel and
// LINE id (U..., C..., R..., or the subject), to take over one that was
// never handed off.
func (c *Console) openConversation(w http.ResponseWriter, r *http.Request, s *session) {
	channel := r.FormValue("channel")
	subj, ok := line.ParseSubject(strings.TrimSpace(r.FormValue("id")))
	if !ok || !line.ValidSubject(subj) {
		c.errorPage(w, r, s, http.StatusBadRequest, "Want a LINE user, group or room id (U..., C... or R...).")
		return
	}
	if !s.user.may(channel) {
		c.errorPage(w, r, s, http.StatusForbidden, "This conversation is not of your channels.")
		return
	}
	http.Redirect(w, r, "/console/inbox/"+url.PathEscape(channel)+"/"+url.PathEscape(subj), http.StatusSeeOther)
}

// convData is a conversation page's.
type convData struct {
	Conv    Conversation
	History []Message
	Held    bool // held by this user
	// MayRelease: this user may hand it back or resolve it (no one else
	// holds it, or an admin).
	MayRelease bool
	ReadNote   string
}

// conversation shows a conversation and its history. Opening a
// conversation that waits for a person marks its messages read on LINE.
func (c *Console) conversation(w http.ResponseWriter, r *http.Request, s *session) {
	channel, id, ok := c.convTarget(w, r, s)
	if !ok {
		return
	}
	ctx := r.Context()
	cv, err := c.o.Conversations.Get(ctx, channel, id)
	if err != nil {
		c.failConv(w, r, s, err)
		return
	}
	d := &convData{Conv: cv, Held: cv.State == StateHuman && cv.Agent == s.user.Name,
		MayRelease: cv.Agent == "" || cv.Agent == s.user.Name || s.user.Role == RoleAdmin}
	if d.History, err = c.o.Conversations.History(ctx, channel, id, historyLimit); err != nil {
		c.failConv(w, r, s, err)
		return
	}
	if cv.State == StateHuman && unread(d.History) {
		// A conversation none of whose messages carries a token has
		// nothing to mark (ErrInvalid).
		if err := c.o.Conversations.MarkRead(ctx, actor(s), channel, id); err != nil && ctx.Err() == nil && !errors.Is(err, ErrInvalid) {
			c.log.Warn("console: mark as read failed", "channel", channel, "err", err)
			d.ReadNote = "Could not mark the messages read on LINE."
		}
	}
	c.render(w, r, http.StatusOK, "conversation", sessionPage(r, s, "Conversation", d))
}

// unread reports whether the user wrote since the conversation was last
// marked read (a markAsRead sent, in its history: one held back by the
// kill switch marked nothing).
func unread(h []Message) bool {
	for i := len(h) - 1; i >= 0; i-- {
		switch {
		case h[i].Type == markAsRead && h[i].Outcome == "sent":
			return false
		case h[i].From == "user":
			return true
		}
	}
	return false
}

// markAsRead is the type of a mark as read in a conversation's history.
const markAsRead = "markAsRead"

// convTarget reads the channel and conversation of the path, and refuses
// (403) a channel the user may not see, before anything is read.
func (c *Console) convTarget(w http.ResponseWriter, r *http.Request, s *session) (channel, id string, ok bool) {
	channel, id = r.PathValue("channel"), r.PathValue("id")
	if !s.user.may(channel) {
		c.errorPage(w, r, s, http.StatusForbidden, "This conversation is not of your channels.")
		return "", "", false
	}
	if c.o.Conversations == nil {
		c.errorPage(w, r, s, http.StatusNotFound, "Human handoff is not running in this gateway.")
		return "", "", false
	}
	return channel, id, true
}

// conversationAction takes over, hands back, resolves, replies, or shows
// the user typing.
func (c *Console) conversationAction(w http.ResponseWriter, r *http.Request, s *session) {
	channel, id, ok := c.convTarget(w, r, s)
	if !ok {
		return
	}
	ctx, a := r.Context(), actor(s)
	back := "/console/inbox/" + r.PathValue("channel") + "/" + r.PathValue("id")
	var err error
	done := r.PathValue("action")
	switch done {
	case "takeover":
		err = c.o.Conversations.TakeOver(ctx, a, channel, id, "console")
	case "handback":
		err = c.o.Conversations.HandBack(ctx, a, channel, id)
	case "resolve":
		err = c.o.Conversations.Resolve(ctx, a, channel, id)
	case "typing":
		// Started moments ago: the animation still shows (no call).
		if err = c.o.Conversations.Typing(ctx, a, channel, id); err != nil && !errors.Is(err, ErrTypingTooSoon) {
			c.failConv(w, r, s, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	case "reply":
		msgs, merr := replyMessages(r.PostFormValue("text"), r.PostFormValue("sticker_package"), r.PostFormValue("sticker_id"), r.PostFormValue("quick_replies"))
		if merr != nil {
			c.errorPage(w, r, s, http.StatusBadRequest, merr.Error())
			return
		}
		var res ReplyResult
		if res, err = c.o.Conversations.Reply(ctx, a, channel, id, msgs); err == nil && res.Outcome != "sent" {
			done = "reply_held"
		}
	default:
		c.errorPage(w, r, s, http.StatusNotFound, "No such action.")
		return
	}
	if err != nil {
		c.failConv(w, r, s, err)
		return
	}
	redirect(w, r, back, done)
}

// failConv answers an error of the handoff engine.
func (c *Console) failConv(w http.ResponseWriter, r *http.Request, s *session, err error) {
	switch {
	case errors.Is(err, context.Canceled):
	case errors.Is(err, ErrNotFound):
		c.errorPage(w, r, s, http.StatusNotFound, "No such conversation.")
	case errors.Is(err, ErrNotYours):
		c.errorPage(w, r, s, http.StatusForbidden, "Another person holds this conversation: only they reply to it, and only an admin hands it back or resolves it. Nothing was done.")
	case errors.Is(err, ErrLINE):
		// Recorded as failed; the error names LINE's status and words
		// about the request, never the messages.
		c.log.Warn("console: LINE did not take an agent's send", "user", s.user.Name, "err", err)
		c.errorPage(w, r, s, http.StatusBadGateway, strings.TrimPrefix(err.Error(), "handoff: ")+".")
	case errors.Is(err, ErrNotHeld):
		c.errorPage(w, r, s, http.StatusConflict, "The bot holds this conversation: take it over first.")
	case errors.Is(err, ErrConflict):
		c.errorPage(w, r, s, http.StatusConflict, "The conversation changed meanwhile (another agent, a rule, or its idle time): nothing was done. Reload it and try again.")
	case errors.Is(err, ErrInvalid):
		c.errorPage(w, r, s, http.StatusBadRequest, "Refused: "+strings.TrimPrefix(err.Error(), "handoff: invalid request: "))
	default:
		c.log.Error("console: conversation", "user", s.user.Name, "err", err)
		c.errorPage(w, r, s, http.StatusServiceUnavailable, "The store or the ledger is unavailable: nothing was done. Try again in a moment.")
	}
}

// LINE's bounds on what the reply box makes.
const (
	maxTextChars      = 5000
	maxQuickReplies   = 13
	maxQuickLabelRune = 20
)

// replyMessages builds the messages of the reply box: a text message, a
// sticker, or both (text first); quick replies, one label a line (or
// comma-separated), become message actions on the last message.
func replyMessages(text, pkg, sticker, quick string) ([]json.RawMessage, error) {
	var msgs []map[string]any
	text = strings.TrimSpace(text)
	if text != "" {
		if utf8.RuneCountInString(text) > maxTextChars {
			return nil, fmt.Errorf("The text is over LINE's %d characters.", maxTextChars)
		}
		msgs = append(msgs, map[string]any{"type": "text", "text": text})
	}
	pkg, sticker = strings.TrimSpace(pkg), strings.TrimSpace(sticker)
	if pkg != "" || sticker != "" {
		if !digits(pkg) || !digits(sticker) {
			return nil, errors.New("A sticker needs its package id and sticker id, both numbers (LINE's sticker list).")
		}
		msgs = append(msgs, map[string]any{"type": "sticker", "packageId": pkg, "stickerId": sticker})
	}
	if len(msgs) == 0 {
		return nil, errors.New("Write a text or choose a sticker.")
	}
	var items []map[string]any
	for _, l := range strings.FieldsFunc(quick, func(r rune) bool { return r == '\n' || r == ',' }) {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if utf8.RuneCountInString(l) > maxQuickLabelRune {
			return nil, fmt.Errorf("A quick reply's label is at most %d characters.", maxQuickLabelRune)
		}
		items = append(items, map[string]any{"type": "action", "action": map[string]any{"type": "message", "label": l, "text": l}})
	}
	if len(items) > maxQuickReplies {
		return nil, fmt.Errorf("At most %d quick replies.", maxQuickReplies)
	}
	if len(items) > 0 {
		msgs[len(msgs)-1]["quickReply"] = map[string]any{"items": items}
	}
	out := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func digits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
