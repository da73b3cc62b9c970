package incident

import (
	"strings"
	"testing"
)

// TestMarkdownCellsInert: what an alert's labels hold (set by whoever
// controls Alertmanager) cannot break a row of timeline.md, add a line
// that looks like a row, link elsewhere, or reach a terminal as escapes.
func TestMarkdownCellsInert(t *testing.T) {
	in := "X | | 0 |\r| 2026-12-02T12:06:00Z | kill switch OFF [click](http://evil.example/) <script>\x00\u202e\x1b[31m"
	got := mdCell(in)
	for _, bad := range []string{"\r", "\n", "\x00", "\x1b", "\u202e", "<script>", " | "} {
		if strings.Contains(got, bad) {
			t.Errorf("mdCell(%q) = %q: holds %q", in, got, bad)
		}
	}
	if strings.Contains(strings.ReplaceAll(got, `\]`, ""), "](") {
		t.Errorf("mdCell(%q) = %q: a link", in, got)
	}
	if !strings.Contains(got, `\[click\]`) || !strings.Contains(got, `\<script\>`) {
		t.Errorf("mdCell(%q) = %q: the text is not kept, escaped", in, got)
	}
}
