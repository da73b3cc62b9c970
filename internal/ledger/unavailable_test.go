package ledger_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

// flakyKeys is a key store whose reads fail while down is set, as a
// database that went away.
type flakyKeys struct {
	keys.Store
	down atomic.Bool
}

func (f *flakyKeys) SubjectKeys(ctx context.Context, subjects []string) ([]keys.Wrapped, error) {
	if f.down.Load() {
		return nil, errors.New("FATAL: terminating connection due to administrator command")
	}
	return f.Store.SubjectKeys(ctx, subjects)
}

// TestKeysUnavailableIsNotRefusal: a record whose data keys cannot be
// read while the database is away is integrated once they can, never
// refused as if it were forged (which would keep the ledger unready for
// good).
func TestKeysUnavailableIsNotRefusal(t *testing.T) {
	ctx := context.Background()
	store := openSQLite(t)
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatal(err)
	}
	fk := &flakyKeys{Store: store.(keys.Store)}
	ring := keys.NewRing(fk, kek)
	l := newLedger(t, store, ledger.Options{CheckpointInterval: time.Hour, Sealer: ring})
	l.Start()
	defer l.Close(ctx)
	if _, err := l.Append(ctx, ledger.Entry{Kind: ledger.KindWebhook, Time: time.Now(), Channel: "c",
		Payload: []byte(`{"events":[]}`), Subjects: []string{"user:U0123456789abcdef0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	fk.down.Store(true)
	ring.Reset() // as after a failed append: the cached keys are gone
	// Sync waits for the integration, which fails while the keys cannot be
	// read: it gives up at its deadline.
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = l.Sync(sctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync while the keys cannot be read: %v; want it to wait", err)
	}
	if err := l.Ready(ctx); err != nil {
		t.Errorf("Ready while the keys cannot be read: %v; want ready (the record is not refused)", err)
	}
	fk.down.Store(false)
	head, err := l.Sync(ctx)
	if err != nil || head.Size != 1 {
		t.Fatalf("Sync once the keys can be read: size %d, %v", head.Size, err)
	}
}
