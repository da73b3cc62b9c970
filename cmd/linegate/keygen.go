package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"golang.org/x/mod/sumdb/note"
)

func runKeygen(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "keygen", "-out DIR [-origin NAME]")
	out := flags.String("out", "", "directory to write log.key (private, 0600) and log.vkey (public) into")
	origin := flags.String("origin", "example.com/linegate/demo", "the log's origin, which names the key; must equal log.origin in the config")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -out is required", errUsage)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	keyFile := filepath.Join(*out, "log.key")
	vkey, err := generateKey(keyFile, *origin)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s (private) and %s (public)\n%s\n", keyFile, vkeyPath(keyFile), vkey)
	return nil
}

// vkeyPath is the public key file beside a private key file.
func vkeyPath(keyFile string) string {
	return strings.TrimSuffix(keyFile, filepath.Ext(keyFile)) + ".vkey"
}

// generateKey writes a new Ed25519 signed-note key pair named origin,
// refusing to overwrite an existing key. It returns the verifier key.
func generateKey(keyFile, origin string) (string, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	// Never overwrite a key that signed checkpoints. Both files are written
	// whole or not at all, and their directory is synced.
	err = keys.WriteNewFile(keyFile, []byte(skey+"\n"), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%s already exists; not overwriting a checkpoint key", keyFile)
	}
	if err != nil {
		return "", err
	}
	// The public key, readable by all.
	if err := ledger.WriteFileAtomic(vkeyPath(keyFile), []byte(vkey+"\n"), 0o644); err != nil {
		return "", err
	}
	return vkey, nil
}

// loadKeys reads the checkpoint key pair and checks that it is named origin.
func loadKeys(keyFile, origin string) (note.Signer, note.Verifier, error) {
	skey, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ledger.NewSigner(skey)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	verifier, err := loadVerifier(vkeyPath(keyFile))
	if err != nil {
		return nil, nil, err
	}
	if signer.Name() != origin || verifier.Name() != origin {
		return nil, nil, fmt.Errorf("checkpoint key %s is named %q, but log.origin is %q", keyFile, signer.Name(), origin)
	}
	if signer.KeyHash() != verifier.KeyHash() {
		return nil, nil, fmt.Errorf("%s and %s are not one key pair", keyFile, vkeyPath(keyFile))
	}
	return signer, verifier, nil
}

func loadVerifier(vkeyFile string) (note.Verifier, error) {
	b, err := os.ReadFile(vkeyFile)
	if err != nil {
		return nil, err
	}
	v, err := ledger.NewVerifier(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vkeyFile, err)
	}
	return v, nil
}
