package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/periodic"
	"github.com/linegate/linegate/internal/record"
)

// tailPoll is how often tail looks for new records while it follows.
const tailPoll = 250 * time.Millisecond

// runTail prints the ledger's records as people read them, one a line,
// and follows new ones as they are appended. Like verify it opens the
// database read-only, never takes the SQLite data directory's lock, and
// reads consistent snapshots, so that it runs beside serve. With the key
// encryption key (the config's, or -kek) it opens the payloads; without
// one it prints what the leaves say.
func runTail(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "tail", "[-config FILE] [-channel ID] [-user U...] [-from T] [-n N] [-f] [-json] [-kek FILE]")
	configPath := fs.String("config", "", "the serve config whose ledger to read (default: the built-in example)")
	channel := fs.String("channel", "", "only this channel's records")
	user := fs.String("user", "", "only the records of this subject: a LINE user U... (or user:U..., group:C..., room:R...)")
	from := fs.String("from", "", "first the records from this time: 2026-11-26 (UTC midnight) or RFC 3339")
	n := fs.Int("n", -1, "first the last N records (of those selected), then stop unless -f")
	follow := fs.Bool("f", false, "keep following new records after -n (without -n, tail always follows)")
	asJSON := fs.Bool("json", false, "print one JSON object a record, a line each")
	kekFile := fs.String("kek", "", "the key encryption key file that opens the payloads (default: the config's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	t := &tailer{e: e, channel: *channel, json: *asJSON}
	if *user != "" {
		s, err := parseSubject(*user)
		if err != nil {
			return fmt.Errorf("%w: -user %v", errUsage, err)
		}
		t.subject = s
	}
	var err error
	if t.from, err = parseWhen(*from); err != nil {
		return fmt.Errorf("%w: -from %v", errUsage, err)
	}
	nSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "n" {
			nSet = true
		}
	})
	if nSet && *n < 0 {
		return fmt.Errorf("%w: -n %d: want 0 or more", errUsage, *n)
	}
	following := !nSet || *follow
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	t.cfg, t.kekFile = cfg, *kekFile
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Where to start: the last n selected, or from a time, or from now.
	next, err := t.start(ctx, nSet, *n)
	if err != nil {
		return err
	}
	if !following {
		return nil
	}
	// Until the end (nil), or a poll that fails (its error).
	polls, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var failed error
	periodic.Every(polls, tailPoll, func(polls context.Context) {
		var err error
		if next, err = t.poll(polls, next); err != nil {
			if ctx.Err() == nil {
				failed = err
			}
			stopPolls()
		}
	})
	return failed
}

// tailer reads records from snapshots of the database and prints them.
type tailer struct {
	e       *env
	cfg     *Config
	kekFile string
	channel string
	subject string
	from    time.Time
	json    bool

	src   readOnlyStore // kept open on PostgreSQL; reopened for each SQLite snapshot
	keys  *liveKeys
	ring  ledger.Sealer
	ready bool // ring is set up (nil: no KEK)
}

// selects reports whether a record is one of those asked for, from its
// leaf and the subjects it is sealed under: no payload is opened for it.
func (t *tailer) selects(rec ledger.Record, leaf ledger.Leaf) bool {
	if t.channel != "" && leaf.Channel != t.channel {
		return false
	}
	if t.subject != "" && !slices.Contains(ledger.Subjects(rec.Keys), t.subject) {
		return false
	}
	return t.from.IsZero() || !leaf.Time.Before(t.from)
}

// start prints what comes before following, and returns the index of the
// first record to follow from.
func (t *tailer) start(ctx context.Context, nSet bool, n int) (uint64, error) {
	view, done, err := t.snapshot(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	count, err := view.Count(ctx)
	if err != nil {
		return 0, err
	}
	switch {
	case nSet:
		// The last n selected, looking back a chunk at a time.
		var picked []ledger.Record
		for hi := count; hi > 0 && len(picked) < n; {
			lo := hi - min(hi, 1024)
			var chunk []ledger.Record
			for rec, err := range view.Records(ctx, lo, hi) {
				if err != nil {
					return 0, err
				}
				var leaf ledger.Leaf
				if leaf.UnmarshalBinary(rec.Leaf) == nil && t.selects(rec, leaf) {
					chunk = append(chunk, rec)
				}
			}
			picked = append(chunk, picked...)
			hi = lo
		}
		if len(picked) > n {
			picked = picked[len(picked)-n:]
		}
		for _, rec := range picked {
			if err := t.print(ctx, view, rec); err != nil {
				return 0, err
			}
		}
	case !t.from.IsZero():
		for rec, err := range view.Records(ctx, 0, count) {
			if err != nil {
				return 0, err
			}
			var leaf ledger.Leaf
			if leaf.UnmarshalBinary(rec.Leaf) == nil && t.selects(rec, leaf) {
				if err := t.print(ctx, view, rec); err != nil {
					return 0, err
				}
			}
		}
	}
	return count, nil
}

// poll prints the selected records appended since next, and returns the
// index to poll from next.
func (t *tailer) poll(ctx context.Context, next uint64) (uint64, error) {
	view, done, err := t.snapshot(ctx)
	if err != nil {
		return next, err
	}
	defer done()
	count, err := view.Count(ctx)
	if err != nil || count <= next {
		return next, err
	}
	for rec, err := range view.Records(ctx, next, count) {
		if err != nil {
			return next, err
		}
		var leaf ledger.Leaf
		if leaf.UnmarshalBinary(rec.Leaf) == nil && t.selects(rec, leaf) {
			if err := t.print(ctx, view, rec); err != nil {
				return next, err
			}
		}
		next = rec.Index + 1
	}
	return next, nil
}

// snapshot opens a view of the database as it is now, read-only. An
// SQLite database is opened again for each: a file opened while no
// gateway ran is read as immutable, and would never show new records.
func (t *tailer) snapshot(ctx context.Context) (ledger.ReadView, func(), error) {
	if t.src == nil {
		src, err := openReadOnly(ctx, t.e, t.cfg, t.cfg.DataDir)
		if err != nil {
			return nil, nil, err
		}
		t.src = src
	}
	view, err := t.src.Snapshot(ctx)
	if err != nil {
		t.closeSource()
		return nil, nil, err
	}
	if err := t.setKeys(ctx, view); err != nil {
		view.Close()
		t.closeSource()
		return nil, nil, err
	}
	return view, func() {
		view.Close()
		if dsn, _ := t.cfg.databaseDSN(t.e.getenv); dsn == "" {
			t.closeSource()
		}
	}, nil
}

func (t *tailer) closeSource() {
	if t.src != nil {
		t.src.Close()
		t.src = nil
	}
}

// setKeys points the key ring at the view's data keys; the first time, it
// opens the ring, once its KEKs are known to unwrap them.
func (t *tailer) setKeys(ctx context.Context, view ledger.ReadView) error {
	vk, ok := view.(viewKeys)
	if !ok {
		return errors.New("the store's snapshots hold no data keys")
	}
	if t.keys == nil {
		t.keys = &liveKeys{}
	}
	t.keys.set(vk)
	if t.ready {
		return nil
	}
	ec := t.cfg.Encryption
	var err error
	var ring *keys.Ring
	switch {
	case t.kekFile != "":
		ring, _, err = keys.OpenRing(ctx, snapshotKeys{t.keys}, keys.Config{CurrentFile: t.kekFile})
	case ec.KEKFile == "" && ec.KEKEnv == "" && !fileExists(t.cfg.defaultKEKFile()):
		fmt.Fprintf(t.e.stderr, "note: no key encryption key (%s): payloads are not opened; give -kek\n", t.cfg.defaultKEKFile())
	default:
		ring, err = openRing(ctx, t.e, t.cfg, snapshotKeys{t.keys}, false, nil)
	}
	if err != nil {
		return err
	}
	if ring != nil {
		t.ring = ring
	}
	t.ready = true
	return nil
}

// liveKeys reads the data keys of the snapshot tail reads now.
type liveKeys struct {
	mu sync.Mutex
	vk viewKeys
}

func (l *liveKeys) set(vk viewKeys) {
	l.mu.Lock()
	l.vk = vk
	l.mu.Unlock()
}

func (l *liveKeys) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	l.mu.Lock()
	vk := l.vk
	l.mu.Unlock()
	return vk.SubjectKeys(ctx, subjects)
}

func (l *liveKeys) KEKSamples(ctx context.Context) ([]keys.Wrapped, error) {
	l.mu.Lock()
	vk := l.vk
	l.mu.Unlock()
	return vk.KEKSamples(ctx)
}

// tailLine is a record as tail -json prints it.
type tailLine struct {
	Index     uint64          `json:"index"`
	Time      string          `json:"time"`       // RFC 3339, UTC
	LocalTime string          `json:"local_time"` // RFC 3339, the local zone
	Kind      string          `json:"kind"`
	Channel   string          `json:"channel"`
	Retention string          `json:"retention,omitempty"`
	Subjects  []string        `json:"subjects,omitempty"`
	Payload   string          `json:"payload"` // open, deleted, sealed, key_destroyed
	Summary   string          `json:"summary"`
	Meta      *record.Meta    `json:"meta,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"` // the body's JSON (a webhook's as LINE sent it)
}

// print prints one record.
func (t *tailer) print(ctx context.Context, view ledger.ReadView, rec ledger.Record) error {
	var leaf ledger.Leaf
	if err := leaf.UnmarshalBinary(rec.Leaf); err != nil {
		return fmt.Errorf("record %d: %w", rec.Index, err)
	}
	l := tailLine{Index: rec.Index, Time: leaf.Time.UTC().Format(time.RFC3339Nano), LocalTime: leaf.Time.Local().Format(time.RFC3339Nano),
		Kind: leaf.Kind.String(), Channel: leaf.Channel, Retention: leaf.Retention, Subjects: ledger.Subjects(rec.Keys), Payload: "open"}
	payload, err := ledger.OpenPayload(ctx, t.ring, rec)
	switch {
	case rec.Payload == nil:
		l.Payload, l.Summary = "deleted", "(payload deleted)"
	case errors.Is(err, ledger.ErrNoSealer):
		l.Payload, l.Summary = "sealed", "(sealed: give the key encryption key to read it)"
	case errors.Is(err, ledger.ErrKeyDestroyed):
		l.Payload, l.Summary = "key_destroyed", "(its subject's data key was destroyed)"
	case err != nil:
		return fmt.Errorf("record %d: %w", rec.Index, err)
	default:
		meta, body, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			l.Summary = fmt.Sprintf("(does not decode: %v)", err)
			break
		}
		l.Meta, l.Summary = meta, summarize(leaf.Kind, meta, body)
		if t.json {
			if w, ok := body.(*record.Webhook); ok {
				l.Body = json.RawMessage(w.Raw)
			} else if b, err := json.Marshal(body); err == nil {
				l.Body = b
			}
			if !json.Valid(l.Body) {
				l.Body = nil
			}
		}
	}
	if t.json {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(t.e.stdout, "%s\n", b)
		return err
	}
	channel := leaf.Channel
	if channel == "" {
		channel = "-" // the system's own records
	}
	_, err = fmt.Fprintf(t.e.stdout, "%s  %-7s %-8s %-9s %s\n", leaf.Time.Local().Format("2006-01-02 15:04:05.000 MST"),
		"#"+strconv.FormatUint(rec.Index, 10), channel, leaf.Kind, l.Summary)
	return err
}

// summarize says in a line what a record holds.
func summarize(k ledger.Kind, meta *record.Meta, body record.Body) string {
	switch b := body.(type) {
	case *record.Webhook:
		return summarizeWebhook(meta, b.Raw)
	case *record.Rejection:
		if meta.Suppressed > 0 && meta.Reason == "summary: unavailable" {
			return fmt.Sprintf("%d signed webhooks answered 503 since %s: the ledger could not take them (LINE redelivers)", meta.Suppressed, time.UnixMilli(meta.SinceMs).Local().Format("15:04:05"))
		}
		if meta.Suppressed > 0 {
			return fmt.Sprintf("%d more requests rejected since %s, not recorded one by one", meta.Suppressed, time.UnixMilli(meta.SinceMs).Local().Format("15:04:05"))
		}
		s := fmt.Sprintf("rejected: %s, %d bytes", meta.Reason, meta.BodySize)
		if meta.Remote != "" {
			s += " from " + meta.Remote
		}
		return s
	case *record.Outcome:
		s := fmt.Sprintf("event %d of #%d (%s): %s", b.Index, b.Record, b.Type, b.Outcome)
		if b.Reason != "" {
			s += ": " + b.Reason
		}
		if len(b.Flags) > 0 {
			s += " [" + strings.Join(b.Flags, ", ") + "]"
		}
		return s
	case *record.Outbound:
		return summarizeOutbound(b)
	case *record.Admin:
		s := b.Action
		if b.Subject != "" {
			s += " " + b.Subject
		}
		if len(b.Detail) > 0 {
			if d, err := json.Marshal(b.Detail); err == nil {
				s += " " + truncate(string(d), 160)
			}
		}
		return s
	case *record.Media:
		return summarizeMedia(b)
	case *record.Deletion:
		s := fmt.Sprintf("%d payloads deleted: %s", len(b.Deleted), b.Reason)
		if b.Subject != "" {
			s += " (subject " + b.Subject + ")"
		}
		if len(b.Deleted) > 0 {
			var ids []string
			for _, i := range b.Deleted[:min(len(b.Deleted), 8)] {
				ids = append(ids, "#"+strconv.FormatUint(i, 10))
			}
			if len(b.Deleted) > 8 {
				ids = append(ids, "...")
			}
			s += ": " + strings.Join(ids, " ")
		}
		return s
	}
	return k.String()
}

// summarizeWebhook lists a webhook's events: type, source, and a message's
// text, truncated.
func summarizeWebhook(meta *record.Meta, raw []byte) string {
	var w struct {
		Events []struct {
			Type   string `json:"type"`
			Mode   string `json:"mode"`
			Source *struct {
				Type    string `json:"type"`
				UserID  string `json:"userId"`
				GroupID string `json:"groupId"`
				RoomID  string `json:"roomId"`
			} `json:"source"`
			Message *struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"message"`
			Postback *struct {
				Data string `json:"data"`
			} `json:"postback"`
			Unsend *struct {
				MessageID string `json:"messageId"`
			} `json:"unsend"`
			DeliveryContext *struct {
				IsRedelivery bool `json:"isRedelivery"`
			} `json:"deliveryContext"`
		} `json:"events"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return fmt.Sprintf("webhook, %d bytes (not JSON)", len(raw))
	}
	if len(w.Events) == 0 {
		return "webhook with no events (a verification)"
	}
	var parts []string
	for _, ev := range w.Events {
		s := ev.Type
		if ev.Message != nil {
			s += " " + ev.Message.Type
		}
		if src := ev.Source; src != nil {
			switch {
			case src.UserID != "" && src.GroupID != "":
				s += " from " + src.UserID + " in " + src.GroupID
			case src.UserID != "" && src.RoomID != "":
				s += " from " + src.UserID + " in " + src.RoomID
			case src.UserID != "":
				s += " from " + src.UserID
			case src.GroupID != "":
				s += " in " + src.GroupID
			case src.RoomID != "":
				s += " in " + src.RoomID
			}
		}
		if ev.Message != nil && ev.Message.Text != "" {
			s += " " + strconv.Quote(truncate(ev.Message.Text, 80))
		}
		if ev.Postback != nil {
			s += " data " + strconv.Quote(truncate(ev.Postback.Data, 80))
		}
		if ev.Unsend != nil {
			s += ": message " + ev.Unsend.MessageID + " unsent by the user"
		}
		if ev.Mode != "" && ev.Mode != "active" {
			s += " (" + ev.Mode + ")"
		}
		if ev.DeliveryContext != nil && ev.DeliveryContext.IsRedelivery {
			s += " (redelivery)"
		}
		parts = append(parts, s)
	}
	s := strings.Join(parts, "; ")
	if meta != nil && meta.Verifier == "next_secret" {
		s += " [signed with next_secret]"
	}
	return s
}

// summarizeOutbound says what a send was, and what became of it.
func summarizeOutbound(b *record.Outbound) string {
	what := b.Endpoint
	if b.Rule != "" {
		what += " by rule " + b.Rule
	}
	if b.Tool != "" {
		what += " by tool " + b.Tool
	}
	if b.Record != 0 || b.EventKey != "" {
		// A tool's call names no webhook unless it replies to an event
		// linegate saw (record 0 is the log's first, never a webhook).
		what += fmt.Sprintf(" for #%d", b.Record)
	}
	if b.Endpoint == "destination" {
		return summarizeDelivery(what, b)
	}
	if b.Endpoint == "forward" {
		s := what + " to " + b.URL
		if b.Status != 0 {
			s += fmt.Sprintf(": %d", b.Status)
		}
		if b.Error != "" {
			s += ": " + b.Error
		}
		return s
	}
	switch b.Outcome {
	case "sent", "failed", "":
		s := what + ": " + b.Outcome
		if b.Outcome == "" {
			s = what
		}
		if len(b.Attempts) > 0 {
			last := b.Attempts[len(b.Attempts)-1]
			if last.Status != 0 {
				s += fmt.Sprintf(", HTTP %d", last.Status)
			}
			if last.Error != "" {
				s += ", " + last.Error
			}
			if len(b.Attempts) > 1 {
				s += fmt.Sprintf(" after %d attempts", len(b.Attempts))
			}
		}
		if ids := b.RequestIDs(); len(ids) > 0 {
			s += ", x-line-request-id " + strings.Join(ids, " ")
		}
		if b.Reason != "" {
			s += " (" + b.Reason + ")"
		}
		return s
	}
	// Held back: the kill switch, dry-run, consent.
	s := what + ": held back, " + b.Outcome
	if b.Reason != "" {
		s += ": " + b.Reason
	}
	return s
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
