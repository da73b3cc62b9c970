package sqlitestore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/pipeline"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// TestDedupPerChannel: the dedup memory is per channel (a module channel
// and its primary receive the same event), and a key claimed before it
// was (the bare key, of no known channel) still makes a duplicate until it
// is forgotten.
func TestDedupPerChannel(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "ledger.db")
	s, err := sqlitestore.Open(ctx, p, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A key as the versions before claimed it.
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO dedup (key, first_ms) VALUES ('id:OLD', 1)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = sqlitestore.Open(ctx, p, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testDedupPerChannel(t, s)
}

// testDedupPerChannel runs on a store whose dedup memory holds the bare
// key "id:OLD", claimed at 1 ms.
func testDedupPerChannel(t *testing.T, s pipeline.Store) {
	ctx := context.Background()
	now := time.UnixMilli(1700000000000)
	item := func(channel, key, msg string) *pipeline.Item {
		return &pipeline.Item{Key: key, MessageKey: msg, Channel: channel, Type: "message", Outcome: pipeline.OutcomeProcess}
	}
	steps := []struct {
		items []*pipeline.Item
		want  []pipeline.Outcome
		flags []int // items flagged duplicate_message_id
	}{
		{[]*pipeline.Item{
			item("primary", "id:E", "msg:primary:1"),
			item("module", "id:E", "msg:module:1"),
			item("primary", "id:E", "msg:primary:1"),
			item("primary", "id:OLD", ""),
			item("module", "id:OLD", ""),
		}, []pipeline.Outcome{pipeline.OutcomeProcess, pipeline.OutcomeProcess, pipeline.OutcomeDuplicate, pipeline.OutcomeDuplicate, pipeline.OutcomeDuplicate}, nil},
		{[]*pipeline.Item{
			item("module", "id:E", "msg:module:1"),
			item("standby", "id:E", "msg:standby:1"),
			item("standby", "id:F", "msg:standby:1"),
		}, []pipeline.Outcome{pipeline.OutcomeDuplicate, pipeline.OutcomeProcess, pipeline.OutcomeProcess}, []int{2}},
	}
	for i, st := range steps {
		if err := s.Enqueue(ctx, uint64(i+1), st.items, now); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		for j, it := range st.items {
			flagged := len(it.Flags) == 1 && it.Flags[0] == "duplicate_message_id"
			wantFlag := false
			for _, k := range st.flags {
				wantFlag = wantFlag || k == j
			}
			if it.Outcome != st.want[j] || flagged != wantFlag || len(it.Flags) > 1 {
				t.Errorf("step %d item %d (%s in %s) = %s %v; want %s, flagged %v", i, j, it.Key, it.Channel, it.Outcome, it.Flags, st.want[j], wantFlag)
			}
		}
	}
	// The bare key is forgotten like any other: then the event is fresh.
	if n, err := s.ForgetKeys(ctx, time.UnixMilli(2)); err != nil || n != 1 {
		t.Errorf("ForgetKeys = %d, %v; want the bare key", n, err)
	}
	again := []*pipeline.Item{item("other", "id:OLD", "")}
	if err := s.Enqueue(ctx, 3, again, now); err != nil {
		t.Fatal(err)
	}
	for _, it := range again {
		if it.Outcome != pipeline.OutcomeProcess {
			t.Errorf("%s in %s after the bare key was forgotten = %s; want fresh", it.Key, it.Channel, it.Outcome)
		}
	}
}
