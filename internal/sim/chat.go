package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ChatOptions configures Chat.
type ChatOptions struct {
	// WebhookURL is the gateway's webhook URL for the channel.
	WebhookURL string
	// Secret signs the webhooks, as LINE does with the channel secret.
	Secret []byte
	// API is the fake Messaging API the gateway sends its replies to.
	API *API
	// User is the LINE user id the typed lines come from.
	User string
	// Destination is the bot's user id in the webhook body.
	Destination string
	// Wait is how long to wait for the bot's answer (default 5s).
	Wait   time.Duration
	Client *http.Client
}

// Chat reads lines from in, sends each to the gateway as a signed text
// message event from User (with a reply token the fake API honours), and
// writes to out every message the gateway then sends to that user through
// the fake API, by reply or by push. It returns at the end of in.
func Chat(ctx context.Context, in io.Reader, out io.Writer, o ChatOptions) error {
	if o.Wait <= 0 {
		o.Wait = 5 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	sc := bufio.NewScanner(in)
	msgID := time.Now().UnixMilli() * 1000
	fmt.Fprintf(out, "Chatting as %s with %s. Type a message; end with Ctrl-D.\n", o.User, o.WebhookURL)
	for {
		fmt.Fprint(out, "you> ")
		if !sc.Scan() {
			fmt.Fprintln(out)
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		seq := lastSeq(o.API)
		token := o.API.IssueReplyToken("")
		msgID++
		body := TextEvent(o.Destination, o.User, line, token, msgID, time.Now())
		status, err := PostWebhook(ctx, o.Client, o.WebhookURL, o.Secret, body)
		if err != nil {
			fmt.Fprintf(out, "(the gateway could not be reached: %v)\n", err)
			continue
		}
		if status != 200 {
			fmt.Fprintf(out, "(the gateway answered %d)\n", status)
			continue
		}
		n := waitMessages(ctx, o, seq, token, out)
		if n == 0 {
			fmt.Fprintf(out, "(no reply within %v)\n", o.Wait)
		}
	}
}

func lastSeq(a *API) int64 {
	calls := a.Calls()
	if len(calls) == 0 {
		return 0
	}
	return calls[len(calls)-1].Seq
}

// waitMessages prints the messages sent to the chat's user after seq,
// until none has come for a short while after the first, or Wait passes.
func waitMessages(ctx context.Context, o ChatOptions, seq int64, token string, out io.Writer) int {
	deadline := time.Now().Add(o.Wait)
	var lastAt time.Time
	n := 0
	for time.Now().Before(deadline) {
		for _, c := range o.API.Calls() {
			if c.Seq <= seq {
				continue
			}
			seq = c.Seq
			if c.Status/100 != 2 {
				continue
			}
			var req struct {
				ReplyToken string            `json:"replyToken"`
				To         json.RawMessage   `json:"to"`
				Messages   []json.RawMessage `json:"messages"`
			}
			if json.Unmarshal(c.Body, &req) != nil {
				continue
			}
			if req.ReplyToken != token && !strings.Contains(string(req.To), o.User) {
				continue
			}
			for _, m := range req.Messages {
				fmt.Fprintf(out, "bot> %s\n", FormatMessage(m))
				n++
			}
			lastAt = time.Now()
		}
		if n > 0 && time.Since(lastAt) > 300*time.Millisecond {
			break
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(20 * time.Millisecond):
		}
	}
	return n
}

// FormatMessage renders a Messaging API message object as one line of
// text for a terminal.
func FormatMessage(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	s := func(k string) string { v, _ := m[k].(string); return v }
	switch t := s("type"); t {
	case "text", "textV2":
		return s("text")
	case "sticker":
		return fmt.Sprintf("[sticker %s/%s]", s("packageId"), s("stickerId"))
	case "image", "video", "audio":
		return fmt.Sprintf("[%s %s]", t, s("originalContentUrl"))
	case "location":
		return fmt.Sprintf("[location] %s, %s", s("title"), s("address"))
	case "flex", "template", "imagemap":
		var texts []string
		collectTexts(m["contents"], &texts)
		collectTexts(m["template"], &texts)
		out := fmt.Sprintf("[%s] %s", t, s("altText"))
		if len(texts) > 0 {
			out += ": " + strings.Join(texts, " | ")
		}
		return out
	default:
		return "[" + t + "]"
	}
}

// collectTexts gathers the visible texts and button labels of a Flex or
// template message, in document order.
func collectTexts(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range []string{"text", "label", "title"} {
			if s, ok := v[k].(string); ok && s != "" {
				*out = append(*out, s)
			}
		}
		for _, k := range []string{"header", "hero", "body", "footer", "contents", "columns", "actions", "action", "template"} {
			if c, ok := v[k]; ok {
				collectTexts(c, out)
			}
		}
	case []any:
		for _, c := range v {
			collectTexts(c, out)
		}
	}
}
