package outbound

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestReplyTokens: a token is one send's at a time; the same send may
// claim it again (a retry), another is told who holds it; a release by
// the holder frees it, a release by another does nothing; an event noted
// before or after a claim is kept beside it; entries live ttl from their
// note or last claim, and past the bound the oldest go first.
func TestReplyTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	x := NewReplyTokens(time.Minute)
	x.now = func() time.Time { return now }

	if ok, _ := x.Claim("c", "T1", "rule hello", "send:a"); !ok {
		t.Fatal("a free token was refused")
	}
	if ok, _ := x.Claim("c", "T1", "rule hello", "send:a"); !ok {
		t.Error("the holder's retry was refused")
	}
	if ok, by := x.Claim("c", "T1", "agent alice", "send:b"); ok || by != "rule hello" {
		t.Errorf("a held token: %v, held by %q; want refused, by rule hello", ok, by)
	}
	if ok, _ := x.Claim("other", "T1", "agent alice", "send:b"); !ok {
		t.Error("the same token on another channel is another token")
	}
	x.Release("c", "T1", "send:b") // not the holder: nothing
	if ok, _ := x.Claim("c", "T1", "tool crm", "send:c"); ok {
		t.Error("a release by another freed the token")
	}
	x.Release("c", "T1", "send:a")
	if ok, _ := x.Claim("c", "T1", "tool crm", "send:c"); !ok {
		t.Error("a released token was refused")
	}

	x.Note("c", "T1", "id:E1", 7, []string{"user:U1"})
	if e, ok := x.Event("c", "T1"); !ok || e.EventKey != "id:E1" || e.Record != 7 || len(e.Subjects) != 1 {
		t.Errorf("event noted after a claim: %+v %v", e, ok)
	}
	if ok, by := x.Claim("c", "T1", "agent alice", "send:d"); ok || by != "tool crm" {
		t.Errorf("a note freed the claim: %v %q", ok, by)
	}
	if _, ok := x.Event("c", "T2"); ok {
		t.Error("an event for a token never noted")
	}

	// Expiry: T1 was claimed last at now; T3 noted 40 s later.
	now = now.Add(40 * time.Second)
	x.Note("c", "T3", "id:E3", 8, nil)
	now = now.Add(30 * time.Second) // T1's minute is over, T3's not
	if ok, _ := x.Claim("c", "T1", "agent alice", "send:e"); !ok {
		t.Error("an expired claim still held the token")
	}
	if _, ok := x.Event("c", "T1"); ok {
		t.Error("an expired entry kept its event")
	}
	if _, ok := x.Event("c", "T3"); !ok {
		t.Error("a live entry was forgotten")
	}
	now = now.Add(2 * time.Minute)
	x.Note("c", "T4", "id:E4", 9, nil)
	if n := x.len(); n != 1 {
		t.Errorf("%d tokens remembered after the others expired, want 1", n)
	}

	// The bound: the oldest go first.
	x.max = 100
	for i := range 250 {
		now = now.Add(time.Millisecond)
		x.Note("c", fmt.Sprint("B", i), "k", uint64(i), nil)
	}
	if n := x.len(); n > 100 {
		t.Errorf("%d tokens remembered, bound 100", n)
	}
	if _, ok := x.Event("c", "B249"); !ok {
		t.Error("the newest token was forgotten")
	}
	if _, ok := x.Event("c", "B0"); ok {
		t.Error("the oldest token was kept past the bound")
	}
	if len(x.fifo)-x.head > 400 {
		t.Errorf("the expiry list grew to %d for %d tokens", len(x.fifo)-x.head, x.len())
	}
}

// TestReplyTokensHoldNoTokenBytes: an entry keeps a digest of its token,
// not the token: a tool that sends megabyte tokens through the proxy makes
// the registry no larger than short ones do.
func TestReplyTokensHoldNoTokenBytes(t *testing.T) {
	x := NewReplyTokens(time.Minute)
	big := strings.Repeat("x", 1<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 64 {
		x.Claim("c", big+fmt.Sprint(i), "tool crm", fmt.Sprint("tool:", i))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("64 claims of 1 MiB tokens kept %d bytes", grew)
	}
	if ok, by := x.Claim("c", big+"7", "agent alice", "send:a"); ok || by != "tool crm" {
		t.Errorf("a long token's claim: %v %q", ok, by)
	}
	runtime.KeepAlive(big)
}

// len is how many tokens are remembered.
func (x *ReplyTokens) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.m)
}
