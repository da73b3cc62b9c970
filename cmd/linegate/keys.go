package main

import (
	"context"
	"fmt"
	"time"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

func runKeys(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "keys", []subcommand{
		{"new-kek", "print (or write to a file) a new key encryption key", runKeysNewKEK},
		{"rotate", "re-wrap every data key with the config's current key encryption key", runKeysRotate},
		{"shred", "destroy a subject's data key and delete the payloads sealed with it", runKeysShred},
	}, args)
}

func runKeysNewKEK(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys new-kek", "[-out FILE]")
	out := fs.String("out", "", "the file to create, 0600, never overwritten (default: print the key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(e.stdout, keys.GenerateKEK())
		return nil
	}
	k, err := keys.WriteKEKFile(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote a new key encryption key %s to %s\n", k.ID(), *out)
	return nil
}

func runKeysRotate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys rotate", "[-config FILE]")
	configPath := fs.String("config", "", "the serve config, whose encryption.kek_file (or kek_env) is the new KEK and previous_kek_files the old ones (default: the built-in example)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := ring.Rotate(ctx)
	if err != nil {
		return err
	}
	if t, ok := store.(interface{ TruncateWAL(context.Context) error }); ok {
		if err := t.TruncateWAL(ctx); err != nil {
			return err
		}
	}
	if _, err := appendAdmin(ctx, store, ring, "keys_rotated", map[string]any{"kek": ring.Current(), "rewrapped": rep.Rewrapped}, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d data keys re-wrapped with key encryption key %s (%d already were); the previous keys can now be removed from the config\n",
		rep.Rewrapped, ring.Current(), rep.Current)
	return nil
}

func runKeysShred(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys shred", "-subject user:U... [-config FILE]")
	configPath := fs.String("config", "", "the serve config (default: the built-in example)")
	subject := fs.String("subject", "", "the subject whose data key to destroy: user:U..., group:C... or room:R... (a bare U..., C... or R... is one too; required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *subject == "" {
		return &helpHint{"keys shred", fmt.Errorf("%w: -subject is required", errUsage)}
	}
	s, err := parseSubject(*subject)
	if err != nil {
		return &helpHint{"keys shred", fmt.Errorf("%w: -subject %v", errUsage, err)}
	}
	_, store, ring, err := openConfigStore(ctx, e, *configPath, beside)
	if err != nil {
		return err
	}
	defer store.Close()
	// A subject without a data key has nothing sealed under it: never
	// written, or shredded before. Say so, and record nothing.
	have, err := store.SubjectKeys(ctx, []string{s})
	if err != nil {
		return err
	}
	if len(have) == 0 {
		fmt.Fprintf(e.stdout, "no data key exists for %s: nothing was destroyed or deleted, nothing recorded (the subject never wrote, or was shredded before; check the id)\n", s)
		return nil
	}
	at := time.Now()
	deleted, err := retention.Shred(ctx, store, ledger.NewWriter(store, ring, nil), ring, s, map[string]any{"by": "linegate keys shred"}, at)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "destroyed the data key of %s at %s; %d payloads sealed with it deleted, with a deletion record naming the subject by pseudonym %s\n",
		s, bothTimes(at), len(deleted), record.Pseudonym(s))
	return nil
}
