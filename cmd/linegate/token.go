package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
)

func runToken(ctx context.Context, e *env, args []string) error {
	return runSubcommand(ctx, e, "token", []subcommand{
		{"keygen", "create an assertion signing key pair for channel access tokens v2.1", runTokenKeygen},
	}, args)
}

// runTokenKeygen writes an assertion signing key pair as LINE specifies
// it: RSA 2048, RS256, for signing. The public JWK is registered in the
// LINE Developers Console, which answers its kid; the private JWK stays
// with linegate (assertion_key_file, with assertion_kid).
func runTokenKeygen(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "token keygen", "-out DIR")
	out := flags.String("out", "", "directory to write assertion.key.json (private, 0600) and assertion.pub.json (public: register it in the console) into")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -out is required", errUsage)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	priv, pub, err := newAssertionKey()
	if err != nil {
		return err
	}
	keyFile, pubFile := filepath.Join(*out, "assertion.key.json"), filepath.Join(*out, "assertion.pub.json")
	if err := keys.WriteNewFile(keyFile, append(priv, '\n'), 0o600); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; not overwriting a key", keyFile)
	} else if err != nil {
		return err
	}
	if err := ledger.WriteFileAtomic(pubFile, append(pub, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `wrote %s (private: keep it secret) and %s (public)
Register the public key in the LINE Developers Console (the channel's Basic settings,
Assertion Signing Key), then give the channel in the config:
  channel_id: <the channel id>
  assertion_key_file: %s
  assertion_kid: <the kid the console shows>
Public key:
%s
`, keyFile, pubFile, keyFile, pub)
	return nil
}

// newAssertionKey returns a new key pair as JWKs: the private one, and the
// public one with use "sig" and alg RS256, as the console wants it.
func newAssertionKey() (priv, pub []byte, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	jwk := jose.JSONWebKey{Key: k, Algorithm: string(jose.RS256), Use: "sig"}
	if priv, err = json.MarshalIndent(jwk, "", "  "); err != nil {
		return nil, nil, err
	}
	if pub, err = json.MarshalIndent(jwk.Public(), "", "  "); err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}
