package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/record"
)

// TestPipelineDedupPerChannel runs the pipeline on PostgreSQL: the same
// event sent to two channels (a module channel and its primary) is handled
// once by each, a redelivery to either is a duplicate, and an event whose
// key an older version claimed without its channel stays a duplicate in
// every channel.
func TestPipelineDedupPerChannel(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, err = conn.Exec(ctx, "INSERT INTO dedup (key, first_ms) VALUES ('id:01PGOLD', $1)", now.UnixMilli())
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	webhook := func(channel, id string, redelivery bool) ledger.Record {
		body := fmt.Sprintf(`{"destination":"U0123456789abcdef0123456789abcdef","events":[{"type":"message","mode":"active","timestamp":%d,"webhookEventId":%q,"deliveryContext":{"isRedelivery":%v},"source":{"type":"user","userId":"U1"},"replyToken":"r","message":{"id":"1","type":"text","text":"hi","quoteToken":"q"}}]}`,
			now.UnixMilli(), id, redelivery)
		payload, err := record.EncodePayload(&record.Meta{Channel: channel, ReceivedMs: now.UnixMilli()}, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := ledger.NewRecord(ledger.Entry{Kind: ledger.KindWebhook, Time: now, Channel: channel, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	recs := []ledger.Record{
		webhook("primary", "01PGSHARED", false),
		webhook("module", "01PGSHARED", false),
		webhook("module", "01PGSHARED", true),
		webhook("primary", "01PGSHARED", true),
		webhook("primary", "01PGOLD", false),
		webhook("module", "01PGOLD", false),
	}
	if _, err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	handled := &channelAction{n: map[string]int{}}
	p := pipeline.New(pipeline.Options{Ledger: s, Store: s, Poll: 5 * time.Millisecond, Linger: time.Millisecond, Action: handled})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(pctx); err != nil {
			t.Error(err)
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if idle, err := p.Idle(ctx); err != nil {
			t.Fatal(err)
		} else if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never idle")
		}
	}
	cancel()
	<-done
	want := map[string]int{"primary/id:01PGSHARED": 1, "module/id:01PGSHARED": 1}
	if fmt.Sprint(handled.n) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", handled.n, want)
	}
}

// channelAction counts the events handled, by channel and key.
type channelAction struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *channelAction) Handle(_ context.Context, it *pipeline.Item, _ *line.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n[it.Channel+"/"+it.Key]++
	return nil
}
