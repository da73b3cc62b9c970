package keys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
)

// memStore is an in-memory Store for the ring's own logic; the SQLite and
// PostgreSQL stores pass the shared suite in package ledgertest.
type memStore struct {
	mu   sync.Mutex
	keys map[string]Wrapped
	adds int
}

func newMemStore() *memStore { return &memStore{keys: map[string]Wrapped{}} }

func (m *memStore) SubjectKeys(_ context.Context, subjects []string) ([]Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Wrapped
	for _, s := range subjects {
		if w, ok := m.keys[s]; ok {
			out = append(out, w)
		}
	}
	return out, nil
}

func (m *memStore) AddSubjectKeys(_ context.Context, ws []Wrapped) ([]Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Wrapped
	for _, w := range ws {
		if _, ok := m.keys[w.Subject]; !ok {
			m.keys[w.Subject] = w
			m.adds++
		}
		out = append(out, m.keys[w.Subject])
	}
	return out, nil
}

func (m *memStore) ListSubjectKeys(_ context.Context, after string, limit int) ([]Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var subs []string
	for s := range m.keys {
		if s > after {
			subs = append(subs, s)
		}
	}
	slices.Sort(subs)
	var out []Wrapped
	for _, s := range subs[:min(limit, len(subs))] {
		out = append(out, m.keys[s])
	}
	return out, nil
}

func (m *memStore) RewrapSubjectKey(_ context.Context, oldKEK string, w Wrapped) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.keys[w.Subject]
	if !ok || !bytes.Equal(cur.ID, w.ID) || cur.KEK != oldKEK {
		return false, nil
	}
	m.keys[w.Subject] = w
	return true, nil
}

func (m *memStore) KEKSamples(_ context.Context) ([]Wrapped, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var out []Wrapped
	for _, w := range m.keys {
		if !seen[w.KEK] {
			seen[w.KEK] = true
			out = append(out, w)
		}
	}
	return out, nil
}

func (m *memStore) destroy(subject string) {
	m.mu.Lock()
	delete(m.keys, subject)
	m.mu.Unlock()
}

func newKEK(t *testing.T) *LocalKEK {
	k, err := ParseKEK(GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLocalKEK(t *testing.T) {
	ctx := context.Background()
	k := newKEK(t)
	w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := k.Unwrap(ctx, w, []byte("aad")); err != nil || string(d) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("unwrap: %q, %v", d, err)
	}
	if _, err := k.Unwrap(ctx, w, []byte("other")); err == nil {
		t.Error("unwrapped under other associated data")
	}
	if _, err := newKEK(t).Unwrap(ctx, w, []byte("aad")); err == nil {
		t.Error("unwrapped with another KEK")
	}
	if k.ID() == newKEK(t).ID() || !strings.HasPrefix(k.ID(), "local:") {
		t.Errorf("ids: %s", k.ID())
	}
	for _, bad := range []string{"", "not base64 at all!", "c2hvcnQ="} {
		_, err := ParseKEK(bad)
		if err == nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Errorf("ParseKEK(%q) = %v", bad, err)
		}
	}
}

// TestRingShredding: a payload sealed for several subjects opens only
// while every one of their keys exists; a new key for a subject does not
// open what the old key sealed.
func TestRingShredding(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRing(st, newKEK(t))
	aad := []byte("leaf")
	both, bothKeys, err := r.Seal(ctx, []string{"group:C1", "user:U1"}, aad, []byte("in the group"))
	if err != nil {
		t.Fatal(err)
	}
	alone, aloneKeys, err := r.Seal(ctx, []string{"group:C1"}, aad, []byte("group only"))
	if err != nil {
		t.Fatal(err)
	}
	sys, sysKeys, err := r.Seal(ctx, nil, aad, []byte("admin"))
	if err != nil || len(sysKeys) != 1 || sysKeys[0].Subject != ledger.SubjectSystem {
		t.Fatalf("system seal: %v %v", sysKeys, err)
	}
	if bytes.Contains(both, []byte("in the group")) {
		t.Fatal("sealed bytes hold the plaintext")
	}
	if p, err := r.Open(ctx, bothKeys, aad, both); err != nil || string(p) != "in the group" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := r.Open(ctx, bothKeys, []byte("other leaf"), both); err == nil {
		t.Error("opened under another leaf")
	}
	tampered := bytes.Clone(both)
	tampered[len(tampered)-1] ^= 1
	if _, err := r.Open(ctx, bothKeys, aad, tampered); err == nil {
		t.Error("opened a changed payload")
	}

	st.destroy("user:U1")
	r.Reset()
	if _, err := r.Open(ctx, bothKeys, aad, both); !errors.Is(err, ledger.ErrKeyDestroyed) {
		t.Errorf("open after the user's key was destroyed: %v", err)
	}
	if p, err := r.Open(ctx, aloneKeys, aad, alone); err != nil || string(p) != "group only" {
		t.Errorf("the group's own payload: %q %v", p, err)
	}
	if p, err := r.Open(ctx, sysKeys, aad, sys); err != nil || string(p) != "admin" {
		t.Errorf("system payload: %q %v", p, err)
	}
	// The user comes back: a new key, which does not open the old payload.
	if _, _, err := r.Seal(ctx, []string{"user:U1"}, aad, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(ctx, bothKeys, aad, both); !errors.Is(err, ledger.ErrKeyDestroyed) {
		t.Errorf("a new key opened the old payload: %v", err)
	}
	if _, _, err := r.Seal(ctx, []string{"user:U 1"}, aad, nil); err == nil {
		t.Error("sealed for a malformed subject")
	}
}

// TestRingCachesRecurringSets: the ciphers of one or two subjects' keys
// are cached; those of larger sets (a delivery's several conversations)
// are made for each record and open what they sealed.
func TestRingCachesRecurringSets(t *testing.T) {
	ctx := context.Background()
	r := NewRing(newMemStore(), newKEK(t))
	aad := []byte("leaf")
	for _, subjects := range [][]string{{"user:U1"}, {"group:C1", "user:U1"}, {"user:U1"}} {
		if _, _, err := r.Seal(ctx, subjects, aad, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	type sealed struct {
		refs []ledger.SubjectKey
		box  []byte
	}
	var many []sealed
	for i := range 50 {
		subjects := []string{"user:U1", fmt.Sprintf("user:V%d", i), fmt.Sprintf("user:W%d", i)}
		box, refs, err := r.Seal(ctx, subjects, aad, fmt.Appendf(nil, "to three, %d", i))
		if err != nil {
			t.Fatal(err)
		}
		many = append(many, sealed{refs, box})
	}
	r.mu.RLock()
	n := len(r.aeads)
	r.mu.RUnlock()
	if n != 2 {
		t.Errorf("%d ciphers cached, want 2 (one subject, and two)", n)
	}
	for i, s := range many {
		if p, err := r.Open(ctx, s.refs, aad, s.box); err != nil || string(p) != fmt.Sprintf("to three, %d", i) {
			t.Fatalf("open %d: %q, %v", i, p, err)
		}
	}
}

// TestRingConcurrentFirstUse: many first records of one subject at once
// make one data key.
func TestRingConcurrentFirstUse(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRing(st, newKEK(t))
	var wg sync.WaitGroup
	sealed := make([][]byte, 64)
	refs := make([][]ledger.SubjectKey, 64)
	for i := range sealed {
		wg.Go(func() {
			var err error
			if sealed[i], refs[i], err = r.Seal(ctx, []string{"user:U7"}, nil, []byte("x")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if st.adds != 1 {
		t.Errorf("%d keys stored, want 1", st.adds)
	}
	r2 := NewRing(st, r.current) // another process
	for i := range sealed {
		if _, err := r2.Open(ctx, refs[i], nil, sealed[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRotate: after a rotation every key unwraps with the new KEK alone; a
// KEK that is not configured is named.
func TestRotate(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	oldK, newK := newKEK(t), newKEK(t)
	r := NewRing(st, oldK)
	var refs [][]ledger.SubjectKey
	var sealed [][]byte
	for _, s := range []string{"user:A", "user:B", "room:R"} {
		b, k, err := r.Seal(ctx, []string{s}, nil, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		sealed, refs = append(sealed, b), append(refs, k)
	}
	if _, err := NewRing(st, newK).Rotate(ctx); err == nil || !strings.Contains(err.Error(), oldK.ID()) {
		t.Errorf("rotate without the old KEK: %v", err)
	}
	rep, err := NewRing(st, newK, oldK).Rotate(ctx)
	if err != nil || rep.Rewrapped != 3 {
		t.Fatalf("rotate: %+v %v", rep, err)
	}
	if rep, err := NewRing(st, newK, oldK).Rotate(ctx); err != nil || rep.Rewrapped != 0 || rep.Current != 3 {
		t.Errorf("second rotate: %+v %v", rep, err)
	}
	fresh := NewRing(st, newK)
	for i := range sealed {
		if p, err := fresh.Open(ctx, refs[i], nil, sealed[i]); err != nil || len(p) == 0 {
			t.Errorf("after rotation: %q %v", p, err)
		}
	}
	if _, err := NewRing(st, oldK).Open(ctx, refs[0], nil, sealed[0]); err == nil {
		t.Error("the old KEK alone still opens")
	}
}
