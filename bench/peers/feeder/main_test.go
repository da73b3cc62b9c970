package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
)

// sdkServer is a destination on LINE's Go SDK: it takes what its SDK
// verifies with secret and keeps each request's events.
type sdkServer struct {
	*httptest.Server
	mu        sync.Mutex
	requests  [][]webhook.EventInterface
	refused   int
	maxEvents int
}

func newSDKServer(t *testing.T, secret string) *sdkServer {
	s := &sdkServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb, err := webhook.ParseRequest(secret, r)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.refused++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.requests = append(s.requests, cb.Events)
		s.maxEvents = max(s.maxEvents, len(cb.Events))
	}))
	t.Cleanup(s.Close)
	return s
}

// replyTokens counts the events s took with and without a reply token,
// and the requests that carried any.
func (s *sdkServer) replyTokens() (with, without, requests int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, evs := range s.requests {
		if len(evs) > 0 {
			requests++
		}
		for _, e := range evs {
			// Each event type of the SDK that LINE gives a reply token
			// has the field.
			v := reflect.Indirect(reflect.ValueOf(e))
			if f := v.FieldByName("ReplyToken"); f.IsValid() && f.String() != "" {
				with++
			} else {
				without++
			}
		}
	}
	return
}

// TestFeeder runs the feeder against two destinations on LINE's SDK: every
// event it makes reaches both, in requests of at most the batch, the reply
// token kept for the owner only; its count says so.
func TestFeeder(t *testing.T) {
	owner, crm := newSDKServer(t, "owner-secret"), newSDKServer(t, "crm-secret")
	var out bytes.Buffer
	err := run([]string{"-rate", "400", "-duration", "500ms", "-batch", "7",
		"-dest", owner.URL + ",owner-secret,owner", "-dest", crm.URL + ",crm-secret"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || lines[0] != "ready" {
		t.Fatalf("output %q: want ready, then the counts", out.String())
	}
	var v struct{ Made, Given, Failed int64 }
	if err := json.Unmarshal([]byte(lines[1]), &v); err != nil {
		t.Fatal(err)
	}
	if v.Made != 200 || v.Given != 2*v.Made || v.Failed != 0 {
		t.Fatalf("made %d events (want 200: 400/s for 500ms), given %d (want twice that), %d failed", v.Made, v.Given, v.Failed)
	}
	withOwner, withoutOwner, reqs := owner.replyTokens()
	_, withoutCRM, _ := crm.replyTokens()
	if int64(withOwner+withoutOwner) != v.Made || int64(withoutCRM) != v.Made {
		t.Fatalf("the owner took %d events, the CRM %d without a reply token: want %d each", withOwner+withoutOwner, withoutCRM, v.Made)
	}
	if withOwner == 0 {
		t.Fatal("the owner took no event with its reply token")
	}
	if owner.maxEvents > 7 || crm.maxEvents > 7 || reqs < 2 {
		t.Fatalf("requests of up to %d and %d events (want 7 at most), %d requests with events to the owner", owner.maxEvents, crm.maxEvents, reqs)
	}
	if owner.refused+crm.refused != 0 {
		t.Fatalf("the destinations refused %d requests", owner.refused+crm.refused)
	}

	// A destination that does not verify the feeder's signature: the
	// feeder fails before it begins.
	out.Reset()
	if err := run([]string{"-duration", "100ms", "-dest", crm.URL + ",another-secret"}, &out); err == nil {
		t.Fatalf("a destination that refuses every request: no error, output %q", out.String())
	}
}
