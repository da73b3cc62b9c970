package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// Routes adds the admin API of conversations to mux (behind the admin
// listener's bearer token):
//
//	GET  /admin/conversations?channel=C&state=human    the conversations
//	GET  /admin/conversations/{channel}/{id}            one, with its history (?limit=N)
//	POST /admin/conversations/{channel}/{id}/takeover   {"agent": NAME, "reason": TEXT, "allow_unseen": false}
//	POST /admin/conversations/{channel}/{id}/handback   {"agent": NAME}
//	POST /admin/conversations/{channel}/{id}/resolve    {"agent": NAME}
//	POST /admin/conversations/{channel}/{id}/read       {"agent": NAME}
//	POST /admin/conversations/{channel}/{id}/typing     {"agent": NAME}
//	POST /admin/conversations/{channel}/{id}/reply      {"agent": NAME, "messages": [...]}
//
// The agent named is the person the records name: the admin token stands
// for the operator who names them.
func (s *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/conversations", s.serveList)
	mux.HandleFunc("GET /admin/conversations/{channel}/{id}", s.serveGet)
	for _, act := range []string{"takeover", "handback", "resolve", "read", "typing", "reply"} {
		mux.HandleFunc("POST /admin/conversations/{channel}/{id}/"+act, func(w http.ResponseWriter, r *http.Request) { s.serveAction(w, r, act) })
	}
}

// StatusOf maps the service's errors to HTTP statuses: the one place.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, context.Canceled):
		return 0
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotYours):
		return http.StatusForbidden
	case errors.Is(err, ErrTypingTooSoon):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrNotHeld), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrLINE):
		return http.StatusBadGateway
	case errors.Is(err, ledger.ErrPushback):
		return http.StatusServiceUnavailable
	default:
		return http.StatusServiceUnavailable
	}
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, action string, err error) {
	code := StatusOf(err)
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(TypingEvery/time.Second)))
	}
	switch {
	case code == 0:
	case code == http.StatusBadGateway:
		// Recorded: the error names LINE's answer, not a message.
		s.log.Warn("handoff: LINE did not take an agent's send", "action", action, "err", err)
		http.Error(w, action+": "+err.Error()+"\n", code)
	case code >= 500:
		s.log.Error("handoff: admin action failed", "action", action, "remote", r.RemoteAddr, "err", err)
		http.Error(w, action+": unavailable\n", code)
	default:
		http.Error(w, action+": "+err.Error()+"\n", code)
	}
}

func (s *Service) serveList(w http.ResponseWriter, r *http.Request) {
	var chans []string
	if c := r.URL.Query().Get("channel"); c != "" {
		if _, ok := s.o.Channels[c]; !ok {
			http.Error(w, "unknown channel\n", http.StatusNotFound)
			return
		}
		chans = []string{c}
	}
	var states []State
	for _, st := range r.URL.Query()["state"] {
		if !State(st).valid() {
			http.Error(w, "state: want bot, human or resolved\n", http.StatusBadRequest)
			return
		}
		states = append(states, State(st))
	}
	cs, err := s.List(r.Context(), chans, states...)
	if err != nil {
		s.fail(w, r, "list", err)
		return
	}
	if cs == nil {
		cs = []Conversation{}
	}
	writeJSON(w, map[string]any{"conversations": cs})
}

func (s *Service) serveGet(w http.ResponseWriter, r *http.Request) {
	ch, id := r.PathValue("channel"), r.PathValue("id")
	if !ValidConversationID(id) {
		http.Error(w, "get: no such conversation: the id is not user:U…, group:C… or room:R… with LINE's 32 hexadecimal digits\n", http.StatusNotFound)
		return
	}
	c, err := s.Get(r.Context(), ch, id)
	if err != nil {
		s.fail(w, r, "get", err)
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	h, err := s.History(r.Context(), ch, id, limit)
	if err != nil {
		s.fail(w, r, "history", err)
		return
	}
	if h == nil {
		h = []Message{}
	}
	writeJSON(w, map[string]any{"conversation": c, "history": h})
}

func (s *Service) serveAction(w http.ResponseWriter, r *http.Request, act string) {
	var body struct {
		Agent    string            `json:"agent"`
		Role     string            `json:"role"`
		Reason   string            `json:"reason"`
		Messages []json.RawMessage `json:"messages"`
		// AllowUnseen lets a takeover start a conversation the channel
		// never had an event of (to push to a user first).
		AllowUnseen bool `json:"allow_unseen"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err != nil {
		http.Error(w, act+": body over 64 KiB\n", http.StatusRequestEntityTooLarge)
		return
	}
	if json.Unmarshal(b, &body) != nil {
		http.Error(w, act+": want a JSON object with agent\n", http.StatusBadRequest)
		return
	}
	if strings.TrimSpace(body.Agent) == "" {
		http.Error(w, act+": agent is required: the person the record names\n", http.StatusBadRequest)
		return
	}
	if body.Role == "" {
		body.Role = "admin_api"
	}
	ctx, ch, id := r.Context(), r.PathValue("channel"), r.PathValue("id")
	if !ValidConversationID(id) {
		http.Error(w, act+": the conversation id is not user:U…, group:C… or room:R… with LINE's 32 hexadecimal digits\n", http.StatusBadRequest)
		return
	}
	for _, c := range []struct {
		what, s string
		max     int
	}{{"agent", body.Agent, MaxNameRunes}, {"role", body.Role, MaxNameRunes}, {"reason", body.Reason, MaxReasonRunes}} {
		if err := checkText(c.what, c.s, c.max); err != nil {
			s.fail(w, r, act, err)
			return
		}
	}
	if act == "takeover" && !body.AllowUnseen {
		if _, ok := s.o.Channels[ch]; ok {
			seen, err := s.seen(ctx, ch, id)
			if err == nil && !seen {
				err = errUnseen
			}
			if err != nil {
				s.fail(w, r, act, err)
				return
			}
		}
	}
	a := Actor{Name: body.Agent, Role: body.Role}
	var res any = map[string]string{"done": act}
	switch act {
	case "takeover":
		if body.Reason == "" {
			body.Reason = "admin"
		}
		err = s.TakeOver(ctx, a, ch, id, body.Reason)
	case "handback":
		err = s.HandBack(ctx, a, ch, id)
	case "resolve":
		err = s.Resolve(ctx, a, ch, id)
	case "read":
		err = s.MarkRead(ctx, a, ch, id)
	case "typing":
		err = s.Typing(ctx, a, ch, id)
	case "reply":
		res, err = s.Reply(ctx, a, ch, id, body.Messages)
	}
	if err != nil {
		s.fail(w, r, act, err)
		return
	}
	if act != "reply" {
		if c, err := s.Get(ctx, ch, id); err == nil {
			res = c
		}
	}
	writeJSON(w, res)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
