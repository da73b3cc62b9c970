package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters of new hashes: 19 MiB, two passes, one lane (the
// OWASP baseline for argon2id).
const (
	argonMemory  = 19 * 1024
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters of a stored argon2id hash: a hash that asks for
// more would let a config make every login cost a gigabyte.
const (
	maxArgonMemory = 1 << 20 // KiB: 1 GiB
	maxArgonTime   = 16
)

// ErrBadHash is the error of a password hash that is neither argon2id in
// the PHC string format nor bcrypt.
var ErrBadHash = errors.New(`want an argon2id hash ("$argon2id$v=19$m=...,t=...,p=...$salt$hash") or a bcrypt hash ("$2a$" or "$2b$"); make one with linegate console hash-password`)

// HashPassword hashes a password with argon2id, in the PHC string format:
// $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH (base64 without padding).
func HashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// HashBcrypt hashes a password with bcrypt at its default cost, for
// operators whose other tools want bcrypt. Passwords over 72 bytes are
// refused (bcrypt ignores what follows).
func HashBcrypt(password string) (string, error) {
	b, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	return string(b), nil
}

// argonHash is a parsed argon2id PHC string.
type argonHash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func parseArgon(s string) (*argonHash, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, ErrBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return nil, fmt.Errorf("argon2id: version %q: want v=%d", parts[2], argon2.Version)
	}
	h := &argonHash{}
	var threads uint32
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &threads); err != nil || n != 3 ||
		fmt.Sprintf("m=%d,t=%d,p=%d", h.memory, h.time, threads) != parts[3] {
		return nil, fmt.Errorf("argon2id: parameters %q: want m=KiB,t=passes,p=lanes", parts[3])
	}
	switch {
	case h.memory < 8*1024 || h.memory > maxArgonMemory:
		return nil, fmt.Errorf("argon2id: m=%d: want 8192 to %d KiB", h.memory, maxArgonMemory)
	case h.time < 1 || h.time > maxArgonTime:
		return nil, fmt.Errorf("argon2id: t=%d: want 1 to %d", h.time, maxArgonTime)
	case threads < 1 || threads > 255:
		return nil, fmt.Errorf("argon2id: p=%d: want 1 to 255", threads)
	}
	h.threads = uint8(threads)
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return nil, errors.New("argon2id: salt: want at least 8 bytes in base64 without padding")
	}
	if h.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return nil, errors.New("argon2id: hash: want 16 to 64 bytes in base64 without padding")
	}
	return h, nil
}

// CheckHash reports whether s is a password hash CheckPassword takes.
func CheckHash(s string) error {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		_, err := parseArgon(s)
		return err
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return fmt.Errorf("bcrypt: %w", err)
		}
		return nil
	}
	return ErrBadHash
}

// CheckPassword reports whether password matches hash, in time that does
// not depend on where they differ.
func CheckPassword(hash, password string) bool {
	if strings.HasPrefix(hash, "$argon2id$") {
		h, err := parseArgon(hash)
		if err != nil {
			return false
		}
		key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
		return subtle.ConstantTimeCompare(key, h.key) == 1
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}
