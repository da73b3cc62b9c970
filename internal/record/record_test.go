package record

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestRoundTrip: every kind's body decodes into the type it was encoded
// from, with the same fields, and a webhook's raw body is kept byte for
// byte.
func TestRoundTrip(t *testing.T) {
	raw := []byte(`{"destination":"U1", "events":[]}` + "\n")
	at := time.UnixMilli(1_800_000_000_000).UTC()
	tests := []Body{
		&Webhook{Raw: raw},
		&Outcome{Record: 7, Index: 1, Key: "id:E1", Type: "message", Outcome: "processed", Flags: []string{"drift"}, ReceivedMs: 5, DoneMs: 6},
		&Outbound{EventKey: "id:E1", Record: 7, Endpoint: "push", Outcome: "sent", Class: "transactional",
			Request: json.RawMessage(`{"to":"U1"}`), RetryKey: "k",
			Attempts: []Attempt{{Status: 200, RequestID: "r1", LatencyMs: 1.5, At: at}, {Status: 500}}},
		&Admin{Action: "consent", Subject: "user:U1", Detail: map[string]any{"opt_in": true}},
		&Deletion{Deleted: []uint64{1, 2}, Reason: "retention period over", Basis: map[uint64]string{1: "retention", 2: "request"}},
	}
	for _, b := range tests {
		t.Run(b.Kind().String(), func(t *testing.T) {
			p, err := Encode(&Meta{Channel: "c", ReceivedMs: 9}, b)
			if err != nil {
				t.Fatal(err)
			}
			m, got, err := Decode(b.Kind(), p)
			if err != nil {
				t.Fatal(err)
			}
			if m.Channel != "c" || m.ReceivedMs != 9 {
				t.Errorf("meta %+v", m)
			}
			if w, ok := b.(*Webhook); ok {
				if !bytes.Equal(got.(*Webhook).Raw, w.Raw) {
					t.Errorf("raw body %q, want %q", got.(*Webhook).Raw, w.Raw)
				}
				return
			}
			if !reflect.DeepEqual(got, b) {
				t.Errorf("decoded %#v, want %#v", got, b)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	p, err := EncodePayload(&Meta{}, []byte(`{"deleted": "not a list"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Decode(KindDeletion, p); err == nil {
		t.Error("a malformed deletion body decoded")
	}
	if _, _, err := Decode(Kind(99), p); err == nil || !strings.Contains(err.Error(), "unknown kind") {
		t.Errorf("unknown kind: %v", err)
	}
	if _, _, err := Decode(KindAdmin, []byte{0, 0}); err == nil {
		t.Error("a short payload decoded")
	}
}

// TestSubjects: the subjects a body names are those its record is sealed
// under; a deletion names none (it must outlive every subject's key) and
// refers to a shredded subject by pseudonym.
func TestSubjects(t *testing.T) {
	if s := (&Admin{Action: "consent", Subject: "user:U1"}).Subjects(); len(s) != 1 || s[0] != "user:U1" {
		t.Errorf("admin subjects %v", s)
	}
	if s := (&Admin{Action: "kill_switch"}).Subjects(); s != nil {
		t.Errorf("system admin subjects %v", s)
	}
	if s := (&Deletion{Subject: Pseudonym("user:U1")}).Subjects(); s != nil {
		t.Errorf("deletion subjects %v", s)
	}
	p := Pseudonym("user:U1")
	if !strings.HasPrefix(p, "sha256:") || strings.Contains(p, "U1") || p == Pseudonym("user:U2") {
		t.Errorf("pseudonym %q", p)
	}
}
