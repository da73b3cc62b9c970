package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/webhook"
)

// FuzzSingleURL: on POST /webhook, a body is acknowledged only when its
// destination names a channel whose secret signed it, and is appended
// under that channel, byte for byte; a body naming no channel appends
// nothing; a bad signature is a rejection.
func FuzzSingleURL(f *testing.F) {
	const botA, botB = "U0000000000000000000000000000000a", "U0000000000000000000000000000000b"
	f.Add([]byte(`{"destination":"`+botA+`","events":[]}`), 1)
	f.Add([]byte(`{"destination":"`+botB+`","events":[]}`), 1)
	f.Add([]byte(`{"destination":"`+botB+`","events":[]}`), 2)
	f.Add([]byte(`{"destination":"Unone","events":[]}`), 1)
	f.Add([]byte(`{"destination":1}`), 0)
	f.Add([]byte("\xff"), 2)
	f.Fuzz(func(t *testing.T, body []byte, signer int) {
		app := &memAppender{}
		h := webhook.New(webhook.Options{Ledger: app, MaxBody: 4096, ByBot: map[string]string{botA: "a", botB: "b"}, Channels: []webhook.Channel{
			{ID: "a", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("sa"))}},
			{ID: "b", Verifiers: []line.Verifier{line.NewHMACVerifier("secret", []byte("sb"))}},
		}})
		secrets := map[int]string{1: "sa", 2: "sb"}
		req := httptest.NewRequest("POST", "http://gw/webhook", bytes.NewReader(body))
		if s, ok := secrets[signer]; ok {
			req.Header.Set("x-line-signature", line.Sign([]byte(s), body))
		}
		rec := httptest.NewRecorder()
		h.Routes(http.NotFoundHandler(), http.NotFoundHandler(), nil).ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			es := app.wait(1)
			if len(es) != 1 || es[0].Kind != ledger.KindWebhook {
				t.Fatalf("200 with entries %v", es)
			}
			var head struct{ Destination string }
			json.Unmarshal(body, &head)
			want := map[int]string{1: "a", 2: "b"}[signer]
			if es[0].Channel != want || head.Destination != map[string]string{"a": botA, "b": botB}[want] {
				t.Fatalf("200 under channel %q for destination %q, signed by channel %q", es[0].Channel, head.Destination, want)
			}
			if _, got, err := record.DecodePayload(es[0].Payload); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("the body appended is %q, %v", got, err)
			}
		case 401:
			if es := app.wait(1); len(es) != 1 || es[0].Kind != ledger.KindRejection {
				t.Fatalf("401 with entries %v", es)
			}
		case 404, 413, 400:
			if len(app.entries) != 0 {
				t.Fatalf("%d with entries appended", rec.Code)
			}
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}
