// Package incident builds an incident's timeline from the ledger: the
// operators' actions (kill switch, dry-run, rule sets with their hashes,
// key rotations, webhook changes, canaries), the alerts received, and, a
// line a minute, the signature failures, the webhooks answered 503 and the
// Messaging API's errors and 429s. Every entry names the ledger records it
// comes from, so that an evidence bundle of those records proves it.
//
// It reads one snapshot of the ledger and never writes.
package incident

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
)

// Selection says which records a timeline covers: record time in
// [From, To) (a zero end is open), and one channel or all ("").
type Selection struct {
	From, To time.Time
	Channel  string
}

// The kinds of timeline entries.
const (
	KindAdmin             = "admin"              // an operator's action, a canary, a webhook change, ...
	KindAlert             = "alert"              // an alert received (alert_firing, alert_resolved)
	KindSignatureFailures = "signature_failures" // a minute's webhooks refused for their signature
	KindUnavailable       = "unavailable"        // a minute's webhooks answered 503
	KindLineAPI           = "line_api"           // a minute's Messaging API errors and 429s
	KindQuotaHold         = "quota_hold"         // a minute's sends held back for the quota
)

// Entry is one line of the timeline.
type Entry struct {
	// Time is the record's time; for counts, the time of the first
	// record counted. RFC 3339, UTC.
	Time time.Time `json:"time"`
	// Minute is the minute that counts are of: they never span one, nor
	// an admin action or alert between their records.
	Minute  *time.Time `json:"minute,omitempty"`
	Kind    string     `json:"kind"`
	Action  string     `json:"action,omitempty"` // an admin record's action
	Channel string     `json:"channel,omitempty"`
	// Summary says what happened, for people.
	Summary string `json:"summary"`
	// Detail is an admin record's detail, as recorded.
	Detail map[string]any `json:"detail,omitempty"`
	// Counts, for a minute's entry: by reason (bad_signature,
	// missing_signature, unavailable) or by status ("429", "500", "0"
	// for no answer).
	Counts map[string]int64 `json:"counts,omitempty"`
	// RequestIDs are the x-line-request-id of the Messaging API calls
	// that failed, for LINE support.
	RequestIDs []string `json:"x_line_request_ids,omitempty"`
	// Records are the ledger indexes of the records the entry comes
	// from: all of them are in the evidence bundle.
	Records []uint64 `json:"records"`
}

// Totals count what a timeline holds.
type Totals struct {
	AdminActions      int   `json:"admin_actions"`
	Alerts            int   `json:"alerts"`
	SignatureFailures int64 `json:"signature_failures"`
	Unavailable       int64 `json:"unavailable_503"`
	LineAPIErrors     int64 `json:"line_api_errors"`
	LineAPIRateLimits int64 `json:"line_api_429s"`
	QuotaHolds        int64 `json:"quota_holds"`
}

// Timeline is an incident's timeline: timeline.json.
type Timeline struct {
	From        string    `json:"from"` // RFC 3339 UTC, or "open"
	To          string    `json:"to"`
	Channel     string    `json:"channel,omitempty"`
	Origin      string    `json:"origin"`
	TreeSize    uint64    `json:"tree_size"` // the checkpoint the records are read from
	GeneratedAt time.Time `json:"generated_at"`
	Totals      Totals    `json:"totals"`
	Entries     []Entry   `json:"entries"`
	// Evidence is the evidence bundle's directory, beside the timeline.
	Evidence string `json:"evidence,omitempty"`
	// Sealed counts records in range left out because their data key
	// was destroyed or their payload deleted.
	Sealed int `json:"records_unreadable,omitempty"`
}

// Records returns every record the timeline cites, sorted, each once.
func (t *Timeline) Records() []uint64 {
	out := []uint64{}
	for _, e := range t.Entries {
		out = append(out, e.Records...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// minute is the key of a minute's counts.
type minute struct {
	at      time.Time
	kind    string
	channel string
}

// Build reads the records of view up to its tree head that sel selects,
// opening them with sealer, and returns their timeline.
func Build(ctx context.Context, view ledger.ReadView, sealer ledger.Sealer, origin string, sel Selection) (*Timeline, error) {
	head, err := view.TreeHead(ctx)
	if err != nil {
		return nil, err
	}
	t := &Timeline{From: end(sel.From), To: end(sel.To), Channel: sel.Channel, Origin: origin, TreeSize: head.Size,
		GeneratedAt: time.Now().UTC(), Entries: []Entry{}}
	// Counts go to the open entry of their minute, kind and channel;
	// an admin action or alert closes them all, so that the timeline
	// keeps the order of what happened.
	open := map[minute]int{} // -> index in t.Entries
	bucket := func(at time.Time, kind, channel string) *Entry {
		k := minute{at.UTC().Truncate(time.Minute), kind, channel}
		i, ok := open[k]
		if !ok {
			m := k.at
			t.Entries = append(t.Entries, Entry{Time: at.UTC(), Minute: &m, Kind: kind, Channel: channel, Counts: map[string]int64{}})
			i = len(t.Entries) - 1
			open[k] = i
		}
		return &t.Entries[i]
	}
	for rec, err := range view.Records(ctx, 0, head.Size) {
		if err != nil {
			return nil, err
		}
		var leaf ledger.Leaf
		if rec.Leaf == nil || leaf.UnmarshalBinary(rec.Leaf) != nil {
			continue
		}
		if !sel.From.IsZero() && leaf.Time.Before(sel.From) || !sel.To.IsZero() && !leaf.Time.Before(sel.To) {
			continue
		}
		switch leaf.Kind {
		case ledger.KindAdmin, ledger.KindRejection, ledger.KindOutbound:
		default:
			continue
		}
		if sel.Channel != "" && leaf.Kind != ledger.KindAdmin && leaf.Channel != sel.Channel {
			continue
		}
		if rec.Payload == nil {
			t.Sealed++
			continue
		}
		payload, err := ledger.OpenPayload(ctx, sealer, rec)
		if errors.Is(err, ledger.ErrKeyDestroyed) {
			t.Sealed++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", rec.Index, err)
		}
		meta, body, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", rec.Index, err)
		}
		switch b := body.(type) {
		case *record.Admin:
			ch, _ := b.Detail["channel"].(string)
			if labels, ok := b.Detail["labels"].(map[string]any); ok && ch == "" {
				ch, _ = labels["channel"].(string) // an alert's
			}
			if sel.Channel != "" && ch != "" && ch != sel.Channel {
				continue
			}
			e := Entry{Time: leaf.Time.UTC(), Kind: KindAdmin, Action: b.Action, Channel: ch, Detail: b.Detail,
				Summary: adminSummary(b), Records: []uint64{rec.Index}}
			if strings.HasPrefix(b.Action, "alert_") {
				e.Kind = KindAlert
				t.Totals.Alerts++
			} else {
				t.Totals.AdminActions++
			}
			t.Entries = append(t.Entries, e)
			clear(open)
		case *record.Rejection:
			reason, n := strings.TrimPrefix(meta.Reason, "summary: "), int64(1)
			if meta.Suppressed > 0 {
				n = meta.Suppressed
			}
			kind := KindSignatureFailures
			switch reason {
			case "bad_signature", "missing_signature":
				t.Totals.SignatureFailures += n
			case "unavailable":
				kind = KindUnavailable
				t.Totals.Unavailable += n
			default:
				continue
			}
			e := bucket(leaf.Time, kind, leaf.Channel)
			e.Counts[reason] += n
			e.Records = append(e.Records, rec.Index)
		case *record.Outbound:
			if b.Outcome != "sent" && strings.Contains(strings.ToLower(b.Reason), "quota") {
				t.Totals.QuotaHolds++
				e := bucket(leaf.Time, KindQuotaHold, leaf.Channel)
				e.Counts[b.Class]++
				e.Records = append(e.Records, rec.Index)
				continue
			}
			failed := false
			for _, a := range b.Attempts {
				status := a.Status
				switch {
				case status == 429:
					t.Totals.LineAPIRateLimits++
				case status == 0 && a.Error != "", status >= 400 && !(status == 409 && a.AcceptedRequest != ""):
					t.Totals.LineAPIErrors++
				default:
					continue
				}
				e := bucket(leaf.Time, KindLineAPI, leaf.Channel)
				e.Counts[fmt.Sprint(status)]++
				if a.RequestID != "" {
					e.RequestIDs = append(e.RequestIDs, a.RequestID)
				}
				if !failed {
					e.Records = append(e.Records, rec.Index)
					failed = true
				}
			}
		}
	}
	for i := range t.Entries {
		if e := &t.Entries[i]; e.Counts != nil {
			e.Summary = minuteSummary(e)
		}
	}
	sort.SliceStable(t.Entries, func(i, j int) bool {
		a, b := t.Entries[i], t.Entries[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		return a.Records[0] < b.Records[0]
	})
	return t, nil
}

// end formats an end of the range.
func end(t time.Time) string {
	if t.IsZero() {
		return "open"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// minuteSummary says what a minute's counts are.
func minuteSummary(e *Entry) string {
	var total int64
	var parts []string
	for _, k := range sortedKeys(e.Counts) {
		total += e.Counts[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, e.Counts[k]))
	}
	what := map[string]string{
		KindSignatureFailures: "webhooks refused for their signature (401)",
		KindUnavailable:       "webhooks answered 503: the ledger could not take them",
		KindLineAPI:           "Messaging API calls failed or rate limited, by status (0: no answer)",
		KindQuotaHold:         "sends held back for the month's quota, by class",
	}[e.Kind]
	return fmt.Sprintf("%d %s: %s", total, what, strings.Join(parts, ", "))
}

// adminSummary says what an admin action did, for people.
// byWhom names the person of an action taken in the console (", by
// NAME"), or nothing.
func byWhom(d map[string]any) string {
	if by, ok := d["by"].(string); ok && by != "" {
		return ", by " + by
	}
	return ""
}

func adminSummary(a *record.Admin) string {
	d := a.Detail
	s := func(k string) string {
		if v, ok := d[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	onOff := func() string {
		if on, _ := d["on"].(bool); on {
			return "ON"
		}
		return "OFF"
	}
	switch a.Action {
	case "kill_switch":
		return fmt.Sprintf("kill switch %s (reason: %s)", onOff(), orNone(s("reason"))) + byWhom(d)
	case "dry_run":
		ch := s("channel")
		if ch == "" {
			ch = "every channel"
		}
		return fmt.Sprintf("dry-run %s for %s", onOff(), ch) + byWhom(d)
	case "rules_changed", "rules_reloaded":
		return fmt.Sprintf("rule set %s: sha256 %s (was %s), by %s", strings.TrimPrefix(a.Action, "rules_"), s("sha256"), orNone(s("previous_sha256")), orNone(s("trigger")))
	case "canary_start":
		return fmt.Sprintf("canary %s sent to the canary group of %s", s("marker"), s("channel"))
	case "canary_run":
		if s("outcome") == "ok" {
			ms, _ := d["round_trip_ms"].(float64)
			return fmt.Sprintf("canary %s came back from the canary group of %s in %.0f ms", s("marker"), s("channel"), ms)
		}
		return fmt.Sprintf("canary %s to the canary group of %s: %s (push %s)", s("marker"), s("channel"), s("outcome"), s("send"))
	case "canary_leak":
		return fmt.Sprintf("CANARY LEAK (%s) on %s: %s seen outside the canary group", s("direction"), s("channel"), s("markers"))
	case "keys_rotated":
		return fmt.Sprintf("key encryption key rotation: %s data keys re-wrapped under %s", s("rewrapped"), s("kek"))
	case "alert_firing", "alert_resolved":
		name := s("alertname")
		if name == "" {
			if labels, ok := d["labels"].(map[string]any); ok {
				name = fmt.Sprint(labels["alertname"])
			}
		}
		return fmt.Sprintf("alert %s %s", orNone(name), strings.ToUpper(strings.TrimPrefix(a.Action, "alert_")))
	}
	return a.Action + " " + compact(d)
}

func orNone(s string) string {
	if s == "" {
		return "none given"
	}
	return s
}

// compact renders a detail as sorted key=value pairs, each value cut at
// 80 characters.
func compact(d map[string]any) string {
	var parts []string
	for _, k := range sortedKeys(d) {
		v, _ := json.Marshal(d[k])
		s := string(v)
		if len(s) > 80 {
			s = s[:77] + "..."
		}
		parts = append(parts, k+"="+s)
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteJSON writes the timeline as timeline.json.
func (t *Timeline) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(t)
}

// WriteMarkdown writes the timeline for people: timeline.md.
func (t *Timeline) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Incident timeline\n\n")
	fmt.Fprintf(&b, "- Period: %s to %s (UTC)\n", t.From, t.To)
	if t.Channel != "" {
		fmt.Fprintf(&b, "- Channel: %s\n", t.Channel)
	} else {
		fmt.Fprintf(&b, "- Channels: all\n")
	}
	fmt.Fprintf(&b, "- Ledger: %s, read up to the checkpoint at tree size %d\n", t.Origin, t.TreeSize)
	fmt.Fprintf(&b, "- Generated: %s\n", t.GeneratedAt.Format(time.RFC3339))
	if t.Evidence != "" {
		fmt.Fprintf(&b, "- Evidence: `%s/`, every record cited below, with its inclusion proof; check it with `linegate verify-bundle -vkey log.vkey %s`\n", t.Evidence, t.Evidence)
	}
	if t.Sealed > 0 {
		fmt.Fprintf(&b, "- %d records of the period are unreadable (payload deleted or data key destroyed) and left out\n", t.Sealed)
	}
	fmt.Fprintf(&b, "\n## Totals\n\n| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| admin actions | %d |\n| alerts | %d |\n| signature failures (401) | %d |\n| webhooks answered 503 | %d |\n| Messaging API errors | %d |\n| Messaging API 429s | %d |\n| sends held back for the quota | %d |\n",
		t.Totals.AdminActions, t.Totals.Alerts, t.Totals.SignatureFailures, t.Totals.Unavailable, t.Totals.LineAPIErrors, t.Totals.LineAPIRateLimits, t.Totals.QuotaHolds)
	fmt.Fprintf(&b, "\n## Timeline\n\n")
	if len(t.Entries) == 0 {
		fmt.Fprintf(&b, "Nothing recorded in the period.\n")
	} else {
		fmt.Fprintf(&b, "| time (UTC) | what | channel | records |\n|---|---|---|---|\n")
	}
	for _, e := range t.Entries {
		when := e.Time.Format(time.RFC3339Nano)
		if e.Minute != nil {
			when += " (in the minute from " + e.Minute.Format("15:04") + ")"
		}
		what := e.Summary
		if len(e.RequestIDs) > 0 {
			what += "; x-line-request-id " + strings.Join(e.RequestIDs, ", ")
		}
		var recs []string
		for _, r := range e.Records {
			recs = append(recs, fmt.Sprint(r))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", when, mdCell(what), mdCell(e.Channel), strings.Join(recs, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdCell makes text from the ledger (an alert's labels, a reason) one
// inert table cell: control and format characters (CR, NUL, escape
// sequences, bidirectional overrides) become U+FFFD, so that a cell never
// breaks its row or misleads a terminal; the characters Markdown acts on
// (links, HTML, code, the cell's bars) are escaped.
func mdCell(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteByte(' ')
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError:
			b.WriteRune(utf8.RuneError)
		case strings.ContainsRune(`\|[]<>`+"`", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
