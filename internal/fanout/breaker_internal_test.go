package fanout

import (
	"slices"
	"testing"
	"time"
)

// deadDay drives a destination's breaker through days of failures as the
// worker does (an attempt whenever the breaker lets one through, at most
// one a second while it is closed), and returns the attempts' times.
func deadDay(t *testing.T, o Options, days int) []time.Duration {
	t.Helper()
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := start
	o.Destinations = []*Destination{{Name: "dead", Channel: "c", URL: "https://dead.example/hook", Secret: []byte("s")}}
	o.Now = func() time.Time { return now }
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	w := f.byName["dead"]
	var at []time.Duration
	for now.Before(start.Add(time.Duration(days) * 24 * time.Hour)) {
		if w.waiting(now) {
			now = w.openUntil
			continue
		}
		if w.allow(now) {
			at = append(at, now.Sub(start))
			w.result(false, true, "no answer: connection failed", now)
		}
		now = now.Add(time.Second)
	}
	return at
}

// TestDeadDestinationBounded: a destination that never answers is
// attempted a bounded number of times a day, each attempt one record:
// breaker_failures attempts open the breaker, then the probes come after
// 30s, 60s, 120s... doubling up to the 1h cap. With the defaults that is
// 5 + 29 = 34 attempts the first day, and 24 a day after (docs/FANOUT.md);
// at the fixed 30s cooldown it was about 86,400 / 30 = 2,880 a day. A success starts the
// cooldown over at 30s.
func TestDeadDestinationBounded(t *testing.T) {
	at := deadDay(t, Options{}, 2)
	first := 0
	for _, a := range at {
		if a < 24*time.Hour {
			first++
		}
	}
	if first != 34 || len(at)-first != 24 {
		t.Errorf("%d attempts in the first day of a dead destination, %d in the second; want 34 (5 to open the breaker, 29 probes) and 24", first, len(at)-first)
	}
	var gaps []time.Duration
	for i := 5; i < len(at); i++ {
		gaps = append(gaps, at[i]-at[i-1])
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour}
	if len(gaps) < len(want) || !slices.Equal(gaps[:len(want)], want) {
		t.Errorf("gaps between the probes %v, want %v then 1h", gaps, want)
	}
	for _, g := range gaps[len(want):] {
		if g != time.Hour {
			t.Errorf("a probe after %v, want 1h once capped", g)
		}
	}

	// A smaller cap, and a success that resets the cooldown.
	at = deadDay(t, Options{BreakerFailures: 1, BreakerCooldown: time.Minute, BreakerMaxCooldown: 4 * time.Minute}, 1)
	// At 0, 1m, 3m, 7m, then every 4m: 7m + 4m*k < 24h.
	if want := 4 + (24*60-7-1)/4; len(at) != want {
		t.Errorf("cap 4m: %d attempts a day, want %d", len(at), want)
	}
	f, err := New(Options{Destinations: []*Destination{{Name: "d", Channel: "c", URL: "https://d.example/", Secret: []byte("s")}}, BreakerFailures: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, now := f.byName["d"], time.Now()
	for range 4 {
		w.result(false, true, "x", now)
		now = w.openUntil
		w.allow(now)
	}
	if w.cooldown() != 4*time.Minute {
		t.Errorf("cooldown after 4 openings: %v, want 4m", w.cooldown())
	}
	w.result(true, true, "", now)
	w.result(false, true, "x", now)
	if got := w.openUntil.Sub(now); got != 30*time.Second {
		t.Errorf("cooldown after a success and a failure: %v, want 30s", got)
	}
}
