package ledgertest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

// keyStore returns s as a keys.Store, or skips the test.
func keyStore(t *testing.T, s ledger.Store) keys.Store {
	ks, ok := s.(keys.Store)
	if !ok {
		t.Skip("the store keeps no data keys")
	}
	return ks
}

func testKEK(t *testing.T) *keys.LocalKEK {
	k, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testSealedRoundTrip appends sealed records of several subjects through a
// ledger, reads them back with their keys, and verifies them, before and
// after the store is reopened.
func testSealedRoundTrip(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.New(t)
	kek := testKEK(t)
	ring := keys.NewRing(keyStore(t, s), kek)
	const origin = "example.com/ledgertest"
	signer, verifier := newSigner(t, origin)
	l, err := ledger.New(ctx, s, ledger.Options{Origin: origin, Signer: signer, Verifier: verifier, CheckpointInterval: time.Hour, Sealer: ring})
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	subjects := [][]string{nil, {"user:U1"}, {"group:C1", "user:U1"}, {"user:U2"}, {"room:R1", "user:U3"}}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c",
				Payload: fmt.Appendf(nil, "secret payload %d", i), Subjects: subjects[i%len(subjects)]}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(s ledger.Store, ring *keys.Ring) {
		n := 0
		for rec, err := range s.Records(ctx, 0, 50) {
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Keys) == 0 || bytes.Contains(rec.Payload, []byte("secret payload")) {
				t.Fatalf("record %d is not sealed", rec.Index)
			}
			p, err := ledger.OpenPayload(ctx, ring, rec)
			if err != nil || !bytes.HasPrefix(p, []byte("secret payload ")) {
				t.Fatalf("record %d: %q, %v", rec.Index, p, err)
			}
			n++
		}
		if n != 50 {
			t.Fatalf("%d records", n)
		}
		if _, err := ledger.Verify(ctx, s, verifier, origin, nil, ring); err != nil {
			t.Fatal(err)
		}
		// Without keys, the structure only: every payload left sealed.
		if rep, err := ledger.Verify(ctx, s, verifier, origin, nil, nil); err != nil || rep.Unopened != 50 {
			t.Fatalf("verify without keys = %+v, %v; want 50 payloads unopened", rep, err)
		}
	}
	check(s, ring)
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	// A new ring (a new process) over the reopened store: keys come from
	// the store.
	check(s, keys.NewRing(keyStore(t, s), kek))
}

// testSubjectKeys checks the keys.Store contract: the first key stored for
// a subject stays, listing is in subject order, and a re-wrap is a
// compare-and-swap.
func testSubjectKeys(t *testing.T, h Harness) {
	ctx := context.Background()
	ks := keyStore(t, open(t, h))
	w := func(subj string, id byte, kek string) keys.Wrapped {
		return keys.Wrapped{Subject: subj, ID: []byte{id, 1, 2, 3}, KEK: kek, Key: []byte{id, 9}, CreatedMs: 1}
	}
	got, err := ks.AddSubjectKeys(ctx, []keys.Wrapped{w("user:B", 1, "k1"), w("user:A", 2, "k1")})
	if err != nil || len(got) != 2 {
		t.Fatalf("add: %v, %v", got, err)
	}
	got, err = ks.AddSubjectKeys(ctx, []keys.Wrapped{w("user:A", 3, "k1"), w("user:C", 4, "k1")})
	if err != nil || len(got) != 2 {
		t.Fatalf("add again: %v, %v", got, err)
	}
	for _, g := range got {
		if g.Subject == "user:A" && g.ID[0] != 2 {
			t.Errorf("a second key replaced the first for user:A")
		}
	}
	list, err := ks.ListSubjectKeys(ctx, "", 10)
	if err != nil || len(list) != 3 || list[0].Subject != "user:A" || list[2].Subject != "user:C" {
		t.Fatalf("list: %v, %v", list, err)
	}
	if list, _ := ks.ListSubjectKeys(ctx, "user:A", 1); len(list) != 1 || list[0].Subject != "user:B" {
		t.Fatalf("list after user:A: %v", list)
	}
	nw := w("user:A", 2, "k2")
	if ok, err := ks.RewrapSubjectKey(ctx, "k0", nw); ok || err != nil {
		t.Errorf("re-wrap from the wrong KEK = %v, %v", ok, err)
	}
	if ok, err := ks.RewrapSubjectKey(ctx, "k1", nw); !ok || err != nil {
		t.Errorf("re-wrap = %v, %v", ok, err)
	}
	if ok, _ := ks.RewrapSubjectKey(ctx, "k1", nw); ok {
		t.Error("a second re-wrap from k1 succeeded")
	}
	got, err = ks.SubjectKeys(ctx, []string{"user:A", "user:Z"})
	if err != nil || len(got) != 1 || got[0].KEK != "k2" {
		t.Fatalf("read: %v, %v", got, err)
	}
	// One key of each KEK: user:B or user:C for k1, user:A for k2.
	samples, err := ks.KEKSamples(ctx)
	if err != nil || len(samples) != 2 {
		t.Fatalf("KEK samples: %v, %v", samples, err)
	}
	byKEK := map[string]string{}
	for _, s := range samples {
		byKEK[s.KEK] = s.Subject
	}
	if byKEK["k2"] != "user:A" || (byKEK["k1"] != "user:B" && byKEK["k1"] != "user:C") {
		t.Errorf("KEK samples: %v", samples)
	}
}
