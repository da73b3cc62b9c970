package ledger_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// TestTilePathsDoNotWrap: a tile or entry bundle index whose range does
// not fit in 64 bits (2^56 and above) is not found; it must not wrap
// around and serve bundle 0 as immutable.
func TestTilePathsDoNotWrap(t *testing.T) {
	l := newLedger(t, openSQLite(t), ledger.Options{CheckpointInterval: 10 * time.Millisecond})
	l.Start()
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	for i := range 300 {
		if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c", Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	for path, want := range map[string]int{
		"/tile/entries/000":                               200,
		"/tile/0/000":                                     200,
		"/tile/entries/001.p/44":                          200,
		"/tile/entries/x072/x057/x594/x037/x927/936":      404, // 2^56
		"/tile/entries/x072/x057/x594/x037/x927/936.p/44": 404,
		"/tile/0/x072/x057/x594/x037/x927/936":            404,
		"/tile/entries/x144/x115/x188/x075/x855/872":      404, // 2^57
		"/tile/entries/x072/x057/x594/x037/x927/935":      404, // 2^56-1: fits, but is not there
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}
