package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/oplog"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/record"
)

// The outcomes the proxy records beyond outbound's: a call that is not a
// message send and that LINE answered 2xx, and a request refused before
// anything was checked (an endpoint or a reply the tool may not make).
const (
	Forwarded outbound.Outcome = "forwarded"
	Refused   outbound.Outcome = "refused"
)

// Headers the proxy sets on answers it makes itself.
const (
	// HeaderDryRun marks an answer to a request that dry-run kept from
	// LINE: the body has LINE's shape, nothing was sent.
	HeaderDryRun = "X-Linegate-Dry-Run"
	// HeaderHeld says why a request was held back or refused
	// (kill_switch, consent, quota, reply_token).
	HeaderHeld = "X-Linegate-Held"
	// HeaderRemoved counts the recipients removed from a multicast for
	// want of an opt-in.
	HeaderRemoved = "X-Linegate-Removed-Without-Consent"
)

// answerHeaders are the headers of LINE's answer that the tool gets.
var answerHeaders = []string{"X-Line-Request-Id", "X-Line-Accepted-Request-Id", "Retry-After", "Content-Type"}

// ServeHTTP serves LINE's Messaging API paths (/v2/bot/...), for a tool
// with one channel, and /channels/{channel}/v2/bot/... for any of a tool's
// channels.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, channel := r.URL.Path, ""
	if rest, ok := strings.CutPrefix(path, "/channels/"); ok {
		channel, path, _ = strings.Cut(rest, "/")
		path = "/" + path
	}
	if !strings.HasPrefix(path, "/v2/bot/") || !plainPath(path) || r.URL.RawPath != "" {
		lineError(w, http.StatusNotFound, "Not found")
		return
	}
	// The path LINE gets is the path matched: no escapes, only the
	// characters of LINE's paths and ids (paths.go).
	if strings.Contains(r.URL.EscapedPath(), "%") || !pathChars.MatchString(path) {
		lineError(w, http.StatusBadRequest, "linegate: the path has characters that LINE's paths and ids do not use")
		return
	}
	query, ok := checkQuery(r.Method, path, r.URL.RawQuery)
	if !ok {
		lineError(w, http.StatusBadRequest, "linegate: this call takes no such query string")
		return
	}
	t := p.authenticate(r)
	if t == nil {
		lineError(w, http.StatusUnauthorized, "Authentication failed. Confirm that the access token in the authorization header is valid.")
		return
	}
	switch {
	case channel == "" && len(t.Channels) == 1:
		channel = t.Channels[0]
	case channel == "":
		lineError(w, http.StatusBadRequest, "linegate: this proxy token acts for several channels: use the base URL .../channels/{channel id}")
		return
	case !t.channels[channel]:
		lineError(w, http.StatusForbidden, fmt.Sprintf("linegate: tool %q may not act for channel %q", t.Name, channel))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.o.MaxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			lineError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is too large (max %d bytes)", p.o.MaxBody))
			return
		}
		lineError(w, http.StatusBadRequest, "linegate: the request body could not be read")
		return
	}
	x := &exchange{p: p, t: t, r: r, w: w, channel: channel, path: path, query: query, body: body, now: p.o.Now(),
		kind: sendKind(r.Method, path)}
	x.run()
}

// plainPath reports whether a path has no empty, "." or ".." segment, so
// that the path matched against a tool's endpoints is the one LINE sees
// ("*" must not stand for "..", nor an escaped slash for two segments).
func plainPath(path string) bool {
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// exchange is one request of a tool being handled.
type exchange struct {
	p       *Proxy
	t       *tool
	r       *http.Request
	w       http.ResponseWriter
	channel string
	path    string
	query   string // the checked query string sent to LINE
	body    []byte
	kind    string // sendKind
	now     time.Time

	label    string // the endpoint, for metrics
	rec      record.Outbound
	subjects []string
	eventRec uint64
	// replyToken is a reply's token, claimed before the call.
	replyToken string
}

// held is an answer the proxy makes itself, in LINE's shape.
type held struct {
	outcome outbound.Outcome
	reason  string
	status  int
	header  string // HeaderHeld's value
	message string
	// detail, if set, is LINE's details entry for the property named
	// (LINE's ErrorResponse): message stays LINE's own words.
	detail, property string
}

func (x *exchange) run() {
	t, r := x.t, x.r
	x.rec = record.Outbound{Tool: t.Name, Endpoint: x.path, Class: ""}
	if x.query != "" {
		x.rec.Extra = map[string]string{"query": x.query}
	}
	x.subjectsFromPath()
	if x.label = t.allowed(r.Method, x.path); x.label == "" {
		x.label = "not allowed"
		x.finish(&held{outcome: Refused, reason: "endpoint not allowed for the tool", status: http.StatusForbidden,
			message: fmt.Sprintf("linegate: tool %q may not call %s %s (its endpoints are in linegate's config)", t.Name, r.Method, x.path)})
		return
	}
	if !x.readBody() {
		return
	}
	if h := x.check(); h != nil {
		x.finish(h)
		return
	}
	x.forward()
}

// readBody records the request body: the exact JSON, or for another
// content type its size and SHA-256. A send must be a JSON object.
func (x *exchange) readBody() bool {
	if len(x.body) == 0 {
		if x.kind != "" {
			lineError(x.w, http.StatusBadRequest, "The request body has 1 error(s)")
			return false
		}
		return true
	}
	if json.Valid(x.body) {
		// Before anything reads it: the proxy must read the values LINE
		// reads (see scanJSON).
		if err := scanJSON(x.body); err != nil {
			lineError(x.w, http.StatusBadRequest, "linegate: the request body is refused: "+err.Error())
			return false
		}
		x.setRequest()
	} else {
		if x.kind != "" {
			lineError(x.w, http.StatusBadRequest, "Request body has invalid JSON")
			return false
		}
		sum := sha256.Sum256(x.body)
		x.extra("body_sha256", hex.EncodeToString(sum[:]))
		x.extra("body_bytes", fmt.Sprint(len(x.body)))
	}
	if x.kind == "" {
		return true
	}
	var req struct {
		To         json.RawMessage `json:"to"`
		ReplyToken string          `json:"replyToken"`
	}
	if err := json.Unmarshal(x.body, &req); err != nil {
		lineError(x.w, http.StatusBadRequest, "Request body has invalid JSON")
		return false
	}
	var to []string
	var one string
	if json.Unmarshal(req.To, &one) == nil && one != "" {
		to = []string{one}
	} else {
		json.Unmarshal(req.To, &to)
	}
	for _, id := range to {
		if s, ok := line.ParseSubject(id); ok {
			x.subjects = append(x.subjects, s)
		}
	}
	if x.kind == "reply" && req.ReplyToken != "" {
		x.replyToken = req.ReplyToken
		if e, ok := x.p.o.Replies.Event(x.channel, req.ReplyToken); ok {
			x.rec.EventKey, x.eventRec = e.EventKey, e.Record
			x.subjects = append(x.subjects, e.Subjects...)
		}
	}
	return true
}

// setRequest records the JSON body to send. The record's codec compacts
// JSON, so the SHA-256 of the exact bytes sent is recorded beside it.
func (x *exchange) setRequest() {
	x.rec.Request = bytes.Clone(x.body)
	sum := sha256.Sum256(x.body)
	x.extra("request_sha256", hex.EncodeToString(sum[:]))
}

func (x *exchange) extra(k, v string) {
	if x.rec.Extra == nil {
		x.rec.Extra = map[string]string{}
	}
	x.rec.Extra[k] = v
}

// subjectsFromPath adds the users, groups and rooms a path names (a
// profile, a group's members).
func (x *exchange) subjectsFromPath() {
	for _, seg := range strings.Split(x.path, "/") {
		if lineID.MatchString(seg) {
			if s, ok := line.ParseSubject(seg); ok {
				x.subjects = append(x.subjects, s)
			}
		}
	}
}

// check applies, in order, reply token ownership, consent, the kill
// switch, the quota budget and dry-run, and returns the answer of a
// request held back or refused (nil: forward it).
func (x *exchange) check() *held {
	p, t := x.p, x.t
	write := x.r.Method != http.MethodGet
	switch x.kind {
	case "reply":
		x.rec.Class = string(outbound.Transactional)
		owner := ""
		if p.o.ReplyOwners != nil {
			owner = p.o.ReplyOwners.ReplyOwner(x.channel)
		}
		if owner == "" || t.Destination != owner {
			return &held{outcome: Refused, reason: "reply token not owned by the tool", status: http.StatusForbidden,
				message: fmt.Sprintf("linegate: tool %q does not own the reply tokens of channel %q: push instead", t.Name, x.channel)}
		}
	case "push":
		x.rec.Class = string(outbound.Transactional)
		if t.PromotionalPush {
			x.rec.Class = string(outbound.Promotional)
			if h := x.consentPush(); h != nil {
				return h
			}
		}
	case "multicast":
		x.rec.Class = string(outbound.Promotional)
		if h := x.consentMulticast(); h != nil {
			return h
		}
	case "broadcast", "narrowcast":
		x.rec.Class = string(outbound.Promotional)
		if !t.AllowBroadcast {
			return &held{outcome: outbound.Blocked, reason: "promotional " + x.kind + " to recipients whose consent cannot be checked (the tool's allow_broadcast is off)",
				status: http.StatusForbidden, header: "consent",
				message: fmt.Sprintf("linegate: a %s reaches users whose consent linegate cannot check: refused (allow_broadcast is off for tool %q)", x.kind, t.Name)}
		}
		x.extra("consent", "not checked: "+x.kind+" allowed by the tool's allow_broadcast")
	}
	if write && p.o.Gate.KillSwitch() {
		return &held{outcome: outbound.Suppressed, reason: "kill switch on", status: http.StatusServiceUnavailable, header: "kill_switch",
			message: "linegate: the kill switch is on: the request was held back and recorded, not sent to LINE"}
	}
	if x.rec.Class == string(outbound.Promotional) {
		if why := p.o.Gate.QuotaHeld(x.r.Context(), x.channel); why != "" {
			return &held{outcome: outbound.Held, reason: why, status: http.StatusTooManyRequests, header: "quota",
				message: "linegate: the channel's quota budget for promotional messages is reached: held back and recorded"}
		}
	}
	if write && p.o.Gate.DryRun(x.channel) {
		h := &held{outcome: outbound.DryRun, reason: "dry-run: not sent", status: http.StatusOK}
		if x.kind == "narrowcast" {
			h.status = http.StatusAccepted
		}
		return h
	}
	return nil
}

// consentPush holds back a promotional push to anyone but a user who
// opted in.
func (x *exchange) consentPush() *held {
	var req struct {
		To string `json:"to"`
	}
	json.Unmarshal(x.body, &req)
	if !strings.HasPrefix(req.To, "U") {
		return &held{outcome: outbound.Blocked, reason: "promotional message without a user to have consent from", status: http.StatusForbidden, header: "consent",
			message: "linegate: a promotional push goes to a user who opted in, not to a group or a room"}
	}
	ok, err := x.p.o.Consent.OptedIn(x.r.Context(), x.channel, req.To)
	if err != nil {
		return x.consentError(err)
	}
	if !ok {
		return &held{outcome: outbound.Blocked, reason: "promotional message to a user with no opt-in on record", status: http.StatusForbidden, header: "consent",
			message: "linegate: the user has not opted in to promotional messages: held back and recorded"}
	}
	return nil
}

// consentMulticast removes from a multicast the users who have not opted
// in; the body sent keeps every other field as the tool wrote it.
func (x *exchange) consentMulticast() *held {
	var req map[string]json.RawMessage
	var to []string
	if json.Unmarshal(x.body, &req) != nil || json.Unmarshal(req["to"], &to) != nil || len(to) == 0 {
		return nil // LINE answers the malformed request
	}
	var keep, removed []string
	for _, u := range to {
		ok, err := x.p.o.Consent.OptedIn(x.r.Context(), x.channel, u)
		if err != nil {
			return x.consentError(err)
		}
		if ok {
			keep = append(keep, u)
		} else {
			removed = append(removed, u)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	x.extra("removed_without_consent", strings.Join(removed, ","))
	x.extra("recipients_asked", fmt.Sprint(len(to)))
	x.w.Header().Set(HeaderRemoved, fmt.Sprint(len(removed)))
	if len(keep) == 0 {
		return &held{outcome: outbound.Blocked, reason: "promotional multicast: no recipient has opted in", status: http.StatusForbidden, header: "consent",
			message: "linegate: no recipient of the multicast has opted in to promotional messages: nothing was sent"}
	}
	req["to"], _ = json.Marshal(keep)
	x.body, _ = json.Marshal(req)
	x.setRequest()
	return nil
}

func (x *exchange) consentError(err error) *held {
	x.p.fails.Log(slog.LevelError, oplog.Key{Class: "consent_lookup_failed", Channel: x.channel}, "proxy: consent lookup failed", "tool", x.t.Name, "err", err.Error())
	return &held{outcome: outbound.Failed, reason: "consent lookup failed", status: http.StatusServiceUnavailable,
		message: "linegate: consent could not be checked: nothing was sent, try again"}
}

// forward makes the call to LINE, records it, and answers the tool with
// LINE's answer.
func (x *exchange) forward() {
	p, r := x.p, x.r
	ch := p.o.Channels[x.channel]
	if err := p.o.Gate.Wait(r.Context(), x.channel); err != nil {
		x.finish(&held{outcome: outbound.Failed, reason: "rate limit wait: " + err.Error(), status: http.StatusTooManyRequests,
			message: "linegate: the channel's rate limit: not sent"})
		return
	}
	var call *outbound.Call
	if x.replyToken != "" {
		// The token is claimed before the call, from the registry
		// linegate's rules and people's replies claim from: a token one
		// of them holds would be refused by LINE. Answered as LINE
		// answers a spent token, so that the tool pushes as it would.
		claim := "tool:" + x.t.Name + ":" + uuid.NewString()
		ok, by := p.o.Replies.Claim(x.channel, x.replyToken, "tool "+x.t.Name, claim)
		if !ok {
			x.finish(&held{outcome: Refused, reason: "reply token already used by " + by, status: http.StatusBadRequest, header: "reply_token",
				message: "Invalid reply token", property: "replyToken",
				detail: "linegate: already used by " + holderKind(by) + ": push instead"})
			return
		}
		defer func() {
			if call == nil || !call.MayHaveTaken() { // LINE cannot have taken it: still good
				p.o.Replies.Release(x.channel, x.replyToken, claim)
			}
		}()
	}
	base := ""
	if dataPath.MatchString(x.path) {
		base = ch.DataBase
		if base == "" {
			base = DefaultDataBase
		}
		if r.Method == http.MethodGet {
			x.stream(ch.Client, base)
			return
		}
	}
	fr := outbound.ForwardRequest{Endpoint: "proxy", Method: r.Method, Base: base, Path: x.path, Idempotent: r.Method == http.MethodGet}
	if x.query != "" {
		fr.Path += "?" + x.query
	}
	if len(x.body) > 0 {
		fr.Body, fr.ContentType = x.body, r.Header.Get("Content-Type")
		if fr.ContentType == "" {
			fr.ContentType = "application/json"
		}
	}
	if keyed(x.kind) {
		fr.RetryKey = strings.TrimSpace(r.Header.Get("X-Line-Retry-Key"))
		if fr.RetryKey == "" {
			fr.RetryKey = uuid.NewString()
			x.extra("retry_key_by", "linegate")
		} else {
			x.extra("retry_key_by", "tool")
		}
		x.rec.RetryKey = fr.RetryKey
	}
	// The call goes on if the tool hangs up: what LINE took is recorded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 60*time.Second)
	defer cancel()
	call = ch.Client.Forward(ctx, fr)
	x.rec.Attempts = call.Attempts
	last := call.Last()
	switch {
	case call.OK() && x.kind != "":
		x.rec.Outcome = string(outbound.Sent)
		if x.kind == "push" || x.kind == "multicast" {
			p.o.Gate.CountQuota(x.channel, x.messagesCounted())
		}
	case call.OK():
		x.rec.Outcome = string(Forwarded)
	default:
		x.rec.Outcome, x.rec.Reason = string(outbound.Failed), call.String()
	}
	if !x.record() {
		return
	}
	if last.Status == 0 {
		lineError(x.w, http.StatusBadGateway, "linegate: no answer from LINE's Messaging API")
		return
	}
	for _, k := range answerHeaders {
		for _, v := range last.Headers[k] {
			x.w.Header().Add(k, v)
		}
	}
	x.w.WriteHeader(last.Status)
	x.w.Write(call.Raw)
}

// holderKind says who holds a reply token, for the tool refused it: a
// person's name stays in the record.
func holderKind(holder string) string {
	switch kind, _, _ := strings.Cut(holder, " "); kind {
	case "agent":
		return "a person's reply"
	case "rule":
		return "linegate's rules"
	default:
		return "a tool's reply"
	}
}

// messagesCounted is how many messages a send counts against the quota,
// as far as the proxy knows: one per recipient of a push or a multicast
// (a group's members, and the friends a broadcast reaches, are counted by
// LINE, and known at the next poll).
func (x *exchange) messagesCounted() int64 {
	var req struct {
		To json.RawMessage `json:"to"`
	}
	json.Unmarshal(x.body, &req)
	var to []string
	if json.Unmarshal(req.To, &to) == nil {
		return int64(len(to))
	}
	return 1
}

// finish records a request the proxy answered itself, and answers.
func (x *exchange) finish(h *held) {
	x.rec.Outcome, x.rec.Reason = string(h.outcome), h.reason
	if !x.record() {
		return
	}
	if h.header != "" {
		x.w.Header().Set(HeaderHeld, h.header)
	}
	if h.outcome == outbound.DryRun {
		x.w.Header().Set(HeaderDryRun, "true")
		switch x.kind {
		case "push", "reply":
			writeJSON(x.w, h.status, map[string]any{"sentMessages": []any{}})
		default:
			writeJSON(x.w, h.status, struct{}{})
		}
		return
	}
	if h.detail != "" {
		writeJSON(x.w, h.status, map[string]any{"message": h.message,
			"details": []map[string]string{{"message": h.detail, "property": h.property}}})
		return
	}
	lineError(x.w, h.status, h.message)
}

// record appends the request's record, and reports whether it is durable;
// if not, it has answered the tool.
func (x *exchange) record() bool {
	p := x.p
	x.rec.Subj = record.SortedSubjects(x.subjects)
	x.rec.Record = x.eventRec
	meta := &record.Meta{Channel: x.channel, ReceivedMs: x.now.UnixMilli(), Method: x.r.Method, Path: x.r.URL.Path, Remote: x.r.RemoteAddr}
	if ua := x.r.Header.Get("User-Agent"); ua != "" {
		meta.Headers = map[string][]string{"User-Agent": {ua}}
	}
	p.requests.WithLabelValues(x.t.Name, x.label, x.rec.Outcome).Inc()
	payload, err := record.Encode(meta, &x.rec)
	if err == nil {
		err = outbound.AppendRetrying(p.o.Ledger, ledger.Entry{Kind: ledger.KindOutbound, Time: x.now, Channel: x.channel,
			Retention: p.o.Channels[x.channel].Retention, Payload: payload, Subjects: x.rec.Subjects()})
	}
	args := []any{"tool", x.t.Name, "channel", x.channel, "endpoint", x.label, "outcome", x.rec.Outcome}
	if ids := x.rec.RequestIDs(); len(ids) > 0 {
		args = append(args, "x_line_request_id", ids[len(ids)-1])
	}
	if err != nil {
		p.fails.Log(slog.LevelError, oplog.Key{Class: "tool_call_unrecorded", Channel: x.channel}, "proxy: the request could not be recorded", append(args, "err", err.Error())...)
		msg := "linegate: the request could not be recorded: not sent"
		if len(x.rec.Attempts) > 0 {
			msg = "linegate: LINE was called but the call could not be recorded; see x-line-request-id"
			if ids := x.rec.RequestIDs(); len(ids) > 0 {
				x.w.Header().Set("X-Line-Request-Id", ids[len(ids)-1])
			}
		}
		lineError(x.w, http.StatusInternalServerError, msg)
		return false
	}
	if x.rec.Outcome == string(outbound.Failed) {
		p.fails.Log(slog.LevelWarn, oplog.Key{Class: "tool_call_failed", Channel: x.channel}, "proxy: a tool's call failed", append(args, "reason", x.rec.Reason)...)
	} else {
		p.o.Logger.Debug("proxy: a tool's call", args...)
	}
	return true
}

// stream carries a content download from the data API to the tool as it
// comes (content can be large), then records it: its status, request id,
// size and SHA-256, not the content.
func (x *exchange) stream(c *outbound.Client, base string) {
	a := record.Attempt{At: time.Now()}
	status := 0
	defer func() {
		x.rec.Attempts = []record.Attempt{a}
		if status/100 == 2 {
			x.rec.Outcome = string(Forwarded)
		} else {
			x.rec.Outcome, x.rec.Reason = string(outbound.Failed), fmt.Sprintf("content %d", status)
		}
		if x.record() && status == 0 {
			lineError(x.w, http.StatusBadGateway, "linegate: no answer from LINE's data API")
		}
	}()
	token, err := c.AccessToken(x.r.Context())
	if err != nil {
		a.Error = "no channel access token"
		return
	}
	url := base + x.path
	if x.query != "" {
		url += "?" + x.query
	}
	req, err := http.NewRequestWithContext(x.r.Context(), http.MethodGet, url, nil)
	if err != nil {
		a.Error = "bad request URL"
		return
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		a.Error = "no answer from the data API"
		a.LatencyMs = float64(time.Since(start)) / float64(time.Millisecond)
		return
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	a.Status, a.RequestID = status, resp.Header.Get("X-Line-Request-Id")
	a.Headers = map[string][]string{}
	for _, k := range append(answerHeaders, "Content-Length") {
		if v := resp.Header.Values(k); len(v) > 0 {
			a.Headers[k] = v
			x.w.Header()[k] = v
		}
	}
	h := sha256.New()
	x.w.WriteHeader(status)
	n, err := io.Copy(io.MultiWriter(x.w, h), resp.Body)
	a.LatencyMs = float64(time.Since(start)) / float64(time.Millisecond)
	x.extra("content_bytes", fmt.Sprint(n))
	x.extra("content_sha256", hex.EncodeToString(h.Sum(nil)))
	if err != nil {
		a.Error = "content copy interrupted"
		x.p.fails.Log(slog.LevelWarn, oplog.Key{Class: "content_interrupted", Channel: x.channel}, "proxy: a content download was interrupted", "tool", x.t.Name)
	}
}
