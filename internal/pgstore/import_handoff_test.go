package pgstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/handoff"
	"github.com/linegate/linegate/internal/pgstore"
	"github.com/linegate/linegate/internal/pgstore/pgtest"
	"github.com/linegate/linegate/internal/sqlitestore"
)

// TestImportHandoff: migrate-store carries the conversations held by
// people and the notifications still queued over, so that a move to
// PostgreSQL neither hands a conversation back to the bot nor drops a
// notification; later notifications get ids after the imported ones.
func TestImportHandoff(t *testing.T) {
	ctx := context.Background()
	src, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	at := time.UnixMilli(1_700_000_000_000)
	if _, err := src.Append(ctx, nil,
		handoff.SetState{Channel: "c", ID: "user:U1", State: handoff.StateHuman, Agent: "erin", Reason: "rule:agent", At: at},
		handoff.QueueNotification{Channel: "c", Target: "slack", Body: []byte(`{"text":"waiting"}`), At: at}); err != nil {
		t.Fatal(err)
	}
	dst, err := pgstore.Open(ctx, pgtest.Schema(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.Import(ctx, src.ReadDB()); err != nil {
		t.Fatal(err)
	}
	c, err := dst.Conversation(ctx, "c", "user:U1")
	if err != nil || c.State != handoff.StateHuman || c.Agent != "erin" || c.Reason != "rule:agent" || !c.Since.Equal(at) {
		t.Fatalf("conversation after import: %+v, %v", c, err)
	}
	due, err := dst.DueNotifications(ctx, at.Add(time.Hour), 10)
	if err != nil || len(due) != 1 || due[0].Target != "slack" || string(due[0].Body) != `{"text":"waiting"}` {
		t.Fatalf("notifications after import: %+v, %v", due, err)
	}
	if _, err := dst.Append(ctx, nil, handoff.QueueNotification{Channel: "c", Target: "hook", Body: []byte(`{}`), At: at}); err != nil {
		t.Fatal(err)
	}
	due, err = dst.DueNotifications(ctx, at.Add(time.Hour), 10)
	if err != nil || len(due) != 2 || due[1].ID <= due[0].ID {
		t.Fatalf("a notification queued after the import: %+v, %v", due, err)
	}
}
