package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"golang.org/x/mod/sumdb/note"
)

// runAcknowledgeRollback records that the database was restored to an
// older tree than the log published, so that serve starts again: the
// records beyond the restored tree are lost, and the ledger says so.
func runAcknowledgeRollback(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "acknowledge-rollback", "[-config FILE] -reason TEXT")
	configPath := flags.String("config", "", "the serve config (default: the built-in example)")
	reason := flags.String("reason", "", "why the database was restored (a ticket, an incident): recorded in the ledger")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: -reason is required: say why the database was restored", errUsage)
	}
	// Exclusive: with the gateway stopped, which refuses to start anyway.
	cfg, store, ring, err := openConfigStore(ctx, e, *configPath, exclusive)
	if err != nil {
		return err
	}
	defer store.Close()
	verifier, err := loadVerifier(vkeyPath(cfg.Log.KeyFile))
	if err != nil {
		return err
	}
	head, err := store.TreeHead(ctx)
	if err != nil {
		return err
	}
	// Acknowledging a rollback cannot mend a tree head that does not hold.
	if _, err := ledger.CheckHead(ctx, store, head, verifier, cfg.Log.Origin); err != nil {
		return err
	}
	published, err := publishedCheckpoints(cfg.Log.PublishDir, cfg.Log.AnchorsDir, verifier, cfg.Log.Origin)
	if err != nil {
		return err
	}
	inBucket, err := bucketCheckpoint(ctx, e, cfg, verifier)
	if err != nil {
		return err
	}
	published = append(published, inBucket...)
	ack := ledger.RollbackAck{RestoredSize: head.Size, LostFrom: head.Size,
		Reason: *reason, Time: time.Now().UTC().Format(time.RFC3339)}
	var names []string
	for _, ext := range published {
		c, err := ledger.CheckPublished(ctx, store, head, ext, verifier, cfg.Log.Origin)
		var ie *ledger.InconsistentError
		if errors.As(err, &ie) {
			ack.Lost = append(ack.Lost, ledger.LostCheckpoint{Name: ext.Name, Size: c.Size, Checkpoint: string(ext.Signed)})
			ack.LostTo = max(ack.LostTo, c.Size)
			names = append(names, fmt.Sprintf("%s (size %d)", ext.Name, c.Size))
			continue
		}
		if err != nil {
			return err
		}
	}
	if len(ack.Lost) == 0 {
		fmt.Fprintf(e.stdout, "nothing to acknowledge: the database's tree (size %d) extends the published checkpoint and every anchor\n", head.Size)
		return nil
	}
	detail, err := adminDetail(ack)
	if err != nil {
		return err
	}
	idx, err := appendAdmin(ctx, store, ring, ledger.ActionRollbackAcknowledged, detail, nil)
	if err != nil {
		return err
	}
	span := fmt.Sprintf("records %d..%d", ack.LostFrom, ack.LostTo-1)
	if ack.LostFrom >= ack.LostTo {
		span = "the published tree"
	}
	fmt.Fprintf(e.stdout, "rollback acknowledged by record %d: %s lost, as published in %s; serve will start, and verify reports the loss\n",
		idx, span, strings.Join(names, ", "))
	return nil
}

// publishedCheckpoints returns the checkpoints published outside the
// database: the checkpoint file, if there is one, and every anchor.
func publishedCheckpoints(publishDir, anchorsDir string, v note.Verifier, origin string) ([]ledger.External, error) {
	var out []ledger.External
	b, err := os.ReadFile(filepath.Join(publishDir, "checkpoint"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		out = append(out, ledger.External{Name: "published checkpoint file", Signed: b})
	}
	anchors, err := ledger.ReadAnchors(anchorsDir, v, origin)
	if err != nil {
		return nil, err
	}
	for _, a := range anchors {
		out = append(out, ledger.External{Name: "anchor " + a.Name(), Signed: a.Signed()})
	}
	return out, nil
}

// adminDetail turns a record body into the detail of an admin record,
// numbers kept exact.
func adminDetail(body any) (map[string]any, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var m map[string]any
	return m, d.Decode(&m)
}

// withRollbackHint adds to New's refusal of a database that does not
// extend what the log published how to go on, if the restore is intended.
func withRollbackHint(cfg *Config, err error) error {
	var ie *ledger.InconsistentError
	if !errors.As(err, &ie) {
		return err
	}
	config := ""
	if !cfg.builtin {
		config = " -config " + cfg.path
	}
	return fmt.Errorf("%w; if this restore is intended, run `linegate acknowledge-rollback%s -reason TEXT`", err, config)
}
