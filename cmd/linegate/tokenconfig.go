package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/linegate/linegate/internal/chantoken"
	"github.com/linegate/linegate/internal/ledger"
)

// A channel's access token comes in one of three ways (see README.md,
// "Channel access tokens"):
//
//   - access_token (_env, _file): a token issued in the console, used as it
//     is. Long-lived tokens never expire.
//   - channel_id with the channel secret: linegate issues stateless tokens
//     (POST /oauth2/v3/token, 15 minutes each) and renews them.
//   - channel_id with assertion_key_file (or _env) and assertion_kid:
//     linegate issues channel access tokens v2.1 with a JWT assertion, for
//     token_lifetime each, renews them, and revokes them on shutdown.

var lineChannelIDPattern = regexp.MustCompile(`^[0-9]{1,20}$`)

// checkTokenConfig checks a channel's token keys, recording each mistake
// in p.
func (ch *ChannelConfig) checkTokenConfig(p *configParser, at func(string) string) {
	hasToken := ch.AccessToken != "" || ch.AccessTokenEnv != "" || ch.AccessTokenFile != ""
	hasKey := ch.AssertionKeyEnv != "" || ch.AssertionKeyFile != ""
	if ch.ChannelID != "" && !lineChannelIDPattern.MatchString(ch.ChannelID) {
		p.fail(at("channel_id"), "%q: want LINE's channel id, digits (LINE Developers Console, Basic settings)", ch.ChannelID)
	}
	if ch.ChannelID != "" && hasToken {
		p.fail(at("channel_id"), "give access_token (a token issued in the console) or channel_id (tokens linegate issues itself), not both")
	}
	if hasKey && ch.ChannelID == "" {
		p.fail(at("assertion_key_file"), "needs channel_id: the assertion signs for LINE's channel id")
	}
	if ch.AssertionKID != "" && !hasKey {
		p.fail(at("assertion_kid"), "given without assertion_key_file or assertion_key_env")
	}
	if ch.TokenLifetime != 0 {
		switch {
		case !hasKey:
			p.fail(at("token_lifetime"), "only for tokens v2.1 (assertion_key_file): stateless tokens live 15 minutes, as LINE issues them")
		case ch.TokenLifetime < time.Second || ch.TokenLifetime > chantoken.MaxLifetime:
			p.fail(at("token_lifetime"), "%v: want 1s to 720h (30 days; default 24h)", ch.TokenLifetime)
		case ch.TokenLifetime%time.Second != 0:
			p.fail(at("token_lifetime"), "%v: want whole seconds (LINE's token_exp)", ch.TokenLifetime)
		}
	}
	if ch.TokenRenewBefore != 0 {
		life := ch.TokenLifetime
		if life == 0 {
			life = chantoken.DefaultLifetime
		}
		switch {
		case ch.ChannelID == "":
			p.fail(at("token_renew_before"), "only for tokens linegate issues itself (channel_id)")
		case ch.TokenRenewBefore < 0:
			p.fail(at("token_renew_before"), "%v: want a positive duration, such as 1h (default: a third of the lifetime)", ch.TokenRenewBefore)
		case hasKey && ch.TokenRenewBefore >= life:
			p.fail(at("token_renew_before"), "%v: must be shorter than token_lifetime (%v)", ch.TokenRenewBefore, life)
		case !hasKey && ch.TokenRenewBefore >= 15*time.Minute:
			p.fail(at("token_renew_before"), "%v: must be shorter than a stateless token's 15 minutes", ch.TokenRenewBefore)
		}
	}
}

// tokenCredentials returns what linegate needs to issue the channel's
// tokens, or nil when the channel gives its token itself. Its errors are
// keyErrors, which never hold the key.
func (ch *ChannelConfig) tokenCredentials(getenv func(string) string, secret, next []byte, base string) (*chantoken.Credentials, error) {
	if ch.ChannelID == "" {
		return nil, nil
	}
	c := &chantoken.Credentials{Channel: ch.ID, ClientID: ch.ChannelID, Secret: secret, NextSecret: next, Base: base,
		Lifetime: ch.TokenLifetime, RenewBefore: ch.TokenRenewBefore}
	raw, err := (secretSource{"assertion_key", "", ch.AssertionKeyEnv, ch.AssertionKeyFile}).resolve(getenv, false)
	if err != nil || raw == nil {
		return c, err
	}
	key := "assertion_key_file"
	if ch.AssertionKeyEnv != "" {
		key = "assertion_key_env"
	}
	jwk, err := parseAssertionKey(raw)
	if err != nil {
		return nil, &keyError{key, err.Error()}
	}
	switch {
	case ch.AssertionKID != "" && jwk.KeyID != "" && jwk.KeyID != ch.AssertionKID:
		return nil, &keyError{"assertion_kid", fmt.Sprintf("%q differs from the kid in the key (%q): give one", ch.AssertionKID, jwk.KeyID)}
	case ch.AssertionKID != "":
		jwk.KeyID = ch.AssertionKID
	case jwk.KeyID == "":
		return nil, &keyError{"assertion_kid", "missing: the kid that the LINE Developers Console showed when the public key was registered"}
	}
	c.Key = jwk
	return c, nil
}

// parseAssertionKey reads an assertion signing key: a private JWK (as LINE's
// guide makes them, and `linegate token keygen`) or a PEM private key,
// RSA of 2048 bits, as LINE requires.
func parseAssertionKey(b []byte) (*jose.JSONWebKey, error) {
	var jwk jose.JSONWebKey
	if blk, _ := pem.Decode(b); blk != nil {
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			return nil, fmt.Errorf("a PEM block of type %q: want a private key (PRIVATE KEY or RSA PRIVATE KEY)", blk.Type)
		}
		if err != nil {
			return nil, errors.New("the PEM private key does not parse")
		}
		jwk.Key = k
	} else if err := json.Unmarshal(b, &jwk); err != nil {
		return nil, errors.New("neither a JWK (JSON) nor a PEM private key")
	}
	rk, ok := jwk.Key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA private key: LINE's assertion signing keys are RSA (2048 bits) private keys; give the private half")
	}
	if rk.N.BitLen() != 2048 {
		return nil, fmt.Errorf("an RSA key of %d bits: LINE requires 2048", rk.N.BitLen())
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(jose.RS256) {
		return nil, fmt.Errorf("alg %q: LINE requires RS256", jwk.Algorithm)
	}
	jwk.Algorithm = string(jose.RS256)
	return &jwk, nil
}

// startTokens issues the first tokens of the channels that issue their
// own, waiting for them at most tokenStartWait, and starts their renewals;
// it gives each such channel's secrets its token source.
func startTokens(ctx context.Context, cfg *Config, secrets map[string]channelSecrets, led *ledger.Ledger, log *slog.Logger) *chantoken.Set {
	var creds []chantoken.Credentials
	for _, ch := range cfg.Channels {
		if c := secrets[ch.ID].issue; c != nil {
			if c.Base == "" {
				c.Base = cfg.LineAPIBase
			}
			creds = append(creds, *c)
		}
	}
	set := chantoken.New(chantoken.Options{Channels: creds, Ledger: led, HTTP: &http.Client{Timeout: 15 * time.Second}, Logger: log})
	ctx, cancel := context.WithTimeout(ctx, tokenStartWait)
	defer cancel()
	set.Start(ctx)
	for id, s := range secrets {
		if src := set.Source(id); src != nil {
			s.tokens = src
			secrets[id] = s
		}
	}
	return set
}

// tokenStartWait bounds the wait for the first tokens at start.
const tokenStartWait = 20 * time.Second
