package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// runbookAlerts are the alerts that docs/RUNBOOK.md has a section for
// (## NAME, whose anchor the rules' runbook_url names, in lower case):
// those of deploy/prometheus/linegate-rules.yml, and the names other rule
// files give two of them.
var runbookAlerts = []string{
	"LinegateDeliveryDelayHigh", "LinegateAckLatencyHigh", "LinegateReplyLatencyHigh", "LinegateWebhookDisabled",
	"LinegateWebhookInactive", "LinegateWebhookMoved", "LinegateWebhookMonitorStale", "LinegateSignatureFailures",
	"LinegateDuplicateMessageID", "LinegateDown", "LinegateLedgerUnavailable", "LinegateLedgerWriteErrors",
	"LinegateSigningStalled", "LinegatePipelineBacklogGrowing", "LinegatePipelineBacklog", "LinegateLineAPIErrors", "LinegateLineAPIRateLimited",
	"LinegateKillSwitchLeftOn", "LinegateClockDrift", "LinegateQuotaBudgetNear", "LinegateQuotaNearEnd",
	"LinegateTokenNearExpiry", "LinegateTokenRenewalFailing", "LinegateCanaryLeak", "LinegateAlertsNotRecorded",
	"LinegateVerifyFailed", "LinegateVerifyNotRun",
	"LinegateWitnessFork", "LinegateArchiveStale", "LinegateArchiveUntrusted",
	"LinegateDestinationFailing", "LinegateFanoutInternalError",
}

// runbookPositional are the commands that take positional arguments, and
// how many.
var runbookPositional = map[string]int{"verify-bundle": 1}

// TestRunbookCommands: every linegate command line of docs/RUNBOOK.md (in
// its code blocks and its inline code) names a real command and flags it
// accepts: the binary parses the line as written, with -h after it, and
// prints its usage (exit 0) without opening anything.
func TestRunbookCommands(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := runbookCommandLines(string(doc))
	if len(lines) < 20 {
		t.Fatalf("found %d linegate command lines in docs/RUNBOOK.md: the parser misses them", len(lines))
	}
	for _, args := range lines {
		cmd := args[1]
		code, out := runCLI(t, append(args[1:], "-h")...)
		if code != 0 || !strings.HasPrefix(out, "Usage: linegate "+cmd) {
			t.Errorf("%s\n  does not parse: exit %d:\n%s", strings.Join(args, " "), code, out)
			continue
		}
		// Positional arguments: only where the command takes them.
		name := strings.Fields(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "Usage: linegate "))
		if got := runbookPositionals(args[1:], out); got != runbookPositional[name[0]] {
			t.Errorf("%s\n  has %d positional arguments, want %d", strings.Join(args, " "), got, runbookPositional[name[0]])
		}
	}
}

// runbookPositionals counts the arguments of a command line that are neither its
// command words nor flags or their values, by the flags its usage lists.
func runbookPositionals(args []string, usage string) int {
	valued := map[string]bool{}
	for _, l := range strings.Split(usage, "\n") {
		if m := regexp.MustCompile(`^  -([A-Za-z0-9-]+)( [a-z]+)?`).FindStringSubmatch(l); m != nil {
			valued[m[1]] = m[2] != ""
		}
	}
	// The command words: those in the usage line's "linegate ..." before
	// the first flag.
	words := 0
	for _, w := range strings.Fields(strings.TrimPrefix(strings.SplitN(usage, "\n", 2)[0], "Usage: linegate ")) {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[") || strings.ToUpper(w) == w {
			break
		}
		words++
	}
	n := 0
	for i := words; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			n++
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if valued[name] && !hasValue {
			i++
		}
	}
	return n
}

// runbookCommandLines returns the linegate command lines of a Markdown
// document, split into words as a shell would: from its code blocks (with
// continued lines joined, and each command of a pipeline or list) and from
// its inline code spans.
func runbookCommandLines(doc string) [][]string {
	var cmds []string
	inBlock := false
	var cur string
	for _, l := range strings.Split(doc, "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			if strings.HasSuffix(trimmed, `\`) {
				cur += strings.TrimSuffix(trimmed, `\`) + " "
				continue
			}
			cmds = append(cmds, runbookSplit(cur+trimmed)...)
			cur = ""
			continue
		}
		for _, m := range regexp.MustCompile("`(linegate [^`]+)`").FindAllStringSubmatch(l, -1) {
			cmds = append(cmds, m[1])
		}
	}
	var out [][]string
	for _, c := range cmds {
		w := runbookWords(c)
		if len(w) >= 2 && w[0] == "sudo" && len(w) > 3 && w[1] == "-u" {
			w = w[3:]
		}
		if len(w) >= 2 && w[0] == "linegate" && !strings.HasPrefix(w[1], "-") {
			out = append(out, w)
		}
	}
	return out
}

// runbookSplit splits a shell line at ;, && and | outside quotes, and
// drops a comment.
func runbookSplit(line string) []string {
	var out []string
	var cur strings.Builder
	quote := rune(0)
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || unicode.IsSpace(rs[i-1])):
			i = len(rs)
			continue
		case r == ';' || r == '|' || r == '&':
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(out, cur.String())
}

// runbookWords splits a command into words, quotes removed.
func runbookWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
				continue
			}
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case unicode.IsSpace(r):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// TestRunbookAnchors: every alert has its section in docs/RUNBOOK.md (the
// alert rules link to it), every link within the runbook leads to one of
// its sections, and, where deploy/prometheus/linegate-rules.yml is, each
// of its alerts has a section and each of its links to the runbook
// resolves.
func TestRunbookAnchors(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	inBlock := false
	for _, l := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inBlock = !inBlock
		}
		if h, ok := strings.CutPrefix(l, "## "); ok && !inBlock {
			anchors[runbookSlug(h)] = true
		} else if h, ok := strings.CutPrefix(l, "# "); ok && !inBlock {
			anchors[runbookSlug(h)] = true
		}
	}
	for _, a := range runbookAlerts {
		if !anchors[strings.ToLower(a)] {
			t.Errorf("docs/RUNBOOK.md has no section ## %s", a)
		}
	}
	// Each section of an alert is in the table of signals, and says what
	// the alert means and what to do (or names the alert it is another
	// name of).
	for _, sec := range strings.Split(string(doc), "\n## ")[1:] {
		name, text, _ := strings.Cut(sec, "\n")
		if !strings.HasPrefix(name, "Linegate") {
			continue
		}
		if !strings.Contains(text, "**What it means.**") && !strings.Contains(text, "The same signal as") {
			t.Errorf("section %s does not say what the alert means", name)
		}
		if !strings.Contains(string(doc), "| ["+name+"](#"+strings.ToLower(name)+") |") && !strings.Contains(text, "The same signal as") {
			t.Errorf("alert %s is not in the table of signals", name)
		}
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(string(doc), -1) {
		if !anchors[m[1]] {
			t.Errorf("docs/RUNBOOK.md links to #%s, which is none of its sections", m[1])
		}
	}
	rules, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "linegate-rules.yml"))
	if os.IsNotExist(err) {
		t.Log("deploy/prometheus/linegate-rules.yml is not here: its links are not checked")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*-?\s*alert:\s*(\S+)`).FindAllStringSubmatch(string(rules), -1) {
		if !anchors[strings.ToLower(m[1])] {
			t.Errorf("alert %s has no section in docs/RUNBOOK.md", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`RUNBOOK\.md#([A-Za-z0-9_-]+)`).FindAllStringSubmatch(string(rules), -1) {
		if !anchors[m[1]] {
			t.Errorf("linegate-rules.yml links to docs/RUNBOOK.md#%s, which is none of its sections", m[1])
		}
	}
}

// runbookSlug is the anchor GitHub gives a heading: lower case, spaces as
// hyphens, punctuation dropped.
func runbookSlug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		}
	}
	return b.String()
}
