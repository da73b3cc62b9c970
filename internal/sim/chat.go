package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
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
// message event from User (with a reply token and a markAsReadToken the
// fake API honours), and writes to out every message the gateway sends to
// that user through the fake API, by reply or by push, whenever it comes:
// the bot's answers, and a person's replies while the conversation is
// handed off (shown alike, as LINE shows them). Mark-as-read and the
// loading animation show as "(read)" and "(typing…)". It returns at the
// end of in.
func Chat(ctx context.Context, in io.Reader, out io.Writer, o ChatOptions) error {
	if o.Wait <= 0 {
		o.Wait = 5 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	sc := bufio.NewScanner(in)
	msgID := time.Now().UnixMilli() * 1000
	w := &chatWatch{o: o, out: out, seq: lastSeq(o.API), tokens: map[string]bool{}, shown: make(chan struct{}, 1)}
	fmt.Fprintf(out, "Chatting as %s with %s. Type a message; end with Ctrl-D.\n", o.User, o.WebhookURL)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go w.run(wctx)
	for {
		w.prompt()
		if !sc.Scan() {
			fmt.Fprintln(out)
			return sc.Err()
		}
		w.mu.Lock()
		w.prompted = false // the Enter ended the prompt's line
		w.mu.Unlock()
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		token := o.API.IssueReplyToken("")
		w.addToken(token)
		msgID++
		body := TextEventRead(o.Destination, o.User, line, token, o.API.IssueReadToken(""), msgID, time.Now())
		w.drain()
		status, err := PostWebhook(ctx, o.Client, o.WebhookURL, o.Secret, body)
		if err != nil {
			w.printf("(the gateway could not be reached: %v)\n", err)
			continue
		}
		if status != 200 {
			w.printf("(the gateway answered %d)\n", status)
			continue
		}
		select {
		case <-w.shown:
			// More may follow: the watcher prints them as they come.
			time.Sleep(300 * time.Millisecond)
		case <-time.After(o.Wait):
			w.printf("(no reply within %v)\n", o.Wait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// chatWatch prints what the fake API receives for the chat's user.
type chatWatch struct {
	o        ChatOptions
	out      io.Writer
	mu       sync.Mutex
	seq      int64
	tokens   map[string]bool // the reply tokens of this chat
	shown    chan struct{}   // a message was shown
	prompted bool
}

func (w *chatWatch) addToken(t string) {
	w.mu.Lock()
	w.tokens[t] = true
	w.mu.Unlock()
}

func (w *chatWatch) drain() {
	select {
	case <-w.shown:
	default:
	}
}

func (w *chatWatch) prompt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.prompted {
		fmt.Fprint(w.out, "you> ")
		w.prompted = true
	}
}

// printf prints a line, on a line of its own if the prompt is showing.
func (w *chatWatch) printf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.printLocked(format, args...)
}

func (w *chatWatch) printLocked(format string, args ...any) {
	if w.prompted {
		fmt.Fprintln(w.out)
		w.prompted = false
	}
	fmt.Fprintf(w.out, format, args...)
}

func (w *chatWatch) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		w.poll()
	}
}

func (w *chatWatch) poll() {
	calls := w.o.API.Calls()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range calls {
		if c.Seq <= w.seq {
			continue
		}
		w.seq = c.Seq
		if c.Status/100 != 2 {
			continue
		}
		var req struct {
			ReplyToken string            `json:"replyToken"`
			To         json.RawMessage   `json:"to"`
			ChatID     string            `json:"chatId"`
			Messages   []json.RawMessage `json:"messages"`
		}
		if json.Unmarshal(c.Body, &req) != nil {
			continue
		}
		switch {
		case strings.HasSuffix(c.Path, "/chat/markAsRead"):
			w.printLocked("(read)\n")
			continue
		case strings.HasSuffix(c.Path, "/chat/loading/start"):
			if req.ChatID == w.o.User {
				w.printLocked("(typing…)\n")
			}
			continue
		}
		if !w.tokens[req.ReplyToken] && !strings.Contains(string(req.To), w.o.User) {
			continue
		}
		for _, m := range req.Messages {
			w.printLocked("bot> %s\n", FormatMessage(m))
			n++
		}
	}
	if n > 0 {
		select {
		case w.shown <- struct{}{}:
		default:
		}
		if !w.prompted {
			fmt.Fprint(w.out, "you> ")
			w.prompted = true
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
