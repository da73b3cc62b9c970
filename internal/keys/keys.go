// Package keys encrypts the ledger's payloads at rest.
//
// Every subject (a LINE user, group or room, or the system) has its own
// random 256-bit data key. A payload is sealed with AES-256-GCM under a key
// derived (HKDF-SHA256) from the data keys of all its subjects, so that
// destroying one subject's data key makes every payload that holds that
// subject's data unreadable at once: crypto-shredding. Data keys are stored
// wrapped by a key encryption key (KEK) that the customer supplies: a file
// or an environment variable today, a cloud KMS through the KEK interface.
//
// Rotating the KEK re-wraps the data keys (Ring.Rotate); payloads are not
// touched, so a rotation costs one small write per subject and needs no
// downtime: a Ring unwraps with the current KEK and any previous one it is
// given, and wraps new data keys with the current one.
package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/ledger"
)

// KEK wraps and unwraps data keys. A cloud KMS (AWS KMS Encrypt/Decrypt,
// Google Cloud KMS, Azure Key Vault wrapKey) implements it with calls to
// its service; LocalKEK implements it with a key the customer holds.
type KEK interface {
	// ID names the key, and is stored with every data key it wraps, so
	// that the right KEK unwraps it after a rotation. It must be stable.
	ID() string
	// Wrap encrypts a data key, binding aad.
	Wrap(ctx context.Context, dek, aad []byte) ([]byte, error)
	// Unwrap decrypts what Wrap returned for the same aad.
	Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error)
}

// KEKSize is the size of a local key encryption key.
const KEKSize = 32

// LocalKEK is a 256-bit key encryption key held by the customer, wrapping
// with AES-256-GCM.
type LocalKEK struct {
	id   string
	aead cipher.AEAD
}

// NewLocalKEK returns a KEK for a 32-byte key.
func NewLocalKEK(key []byte) (*LocalKEK, error) {
	if len(key) != KEKSize {
		return nil, fmt.Errorf("keys: a key encryption key is %d bytes, not %d", KEKSize, len(key))
	}
	block, _ := aes.NewCipher(key) // the size is right
	aead, _ := cipher.NewGCM(block)
	sum := sha256.Sum256(append([]byte("linegate kek id\x00"), key...))
	return &LocalKEK{id: "local:" + hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// ID implements KEK: "local:" and 16 hex digits of a hash of the key, which
// tell keys apart without revealing them.
func (k *LocalKEK) ID() string { return k.id }

// Wrap implements KEK.
func (k *LocalKEK) Wrap(_ context.Context, dek, aad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(dek)+k.aead.Overhead())
	rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, dek, aad), nil
}

// Unwrap implements KEK.
func (k *LocalKEK) Unwrap(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(wrapped) < n {
		return nil, errors.New("keys: wrapped key too short")
	}
	dek, err := k.aead.Open(nil, wrapped[:n], wrapped[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("keys: data key does not unwrap with key encryption key %s", k.id)
	}
	return dek, nil
}

// GenerateKEK returns a new random key encryption key in the text form
// that ParseKEK reads: standard base64 of 32 bytes.
func GenerateKEK() string {
	b := make([]byte, KEKSize)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// ParseKEK reads a key encryption key in text form (base64 of 32 bytes,
// surrounding white space ignored). Its errors never contain the text.
func ParseKEK(text string) (*LocalKEK, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, errors.New("keys: a key encryption key is base64 text (linegate keys new-kek writes one)")
	}
	return NewLocalKEK(b)
}

// LoadKEKFile reads a key encryption key from a file.
func LoadKEKFile(path string) (*LocalKEK, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	k, err := ParseKEK(string(b))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// Wrapped is a subject's data key as stored: wrapped by a KEK.
type Wrapped struct {
	Subject   string
	ID        []byte // random, unique: a new key for the same subject has a new id
	KEK       string // the id of the KEK that wrapped it
	Key       []byte // the wrapped data key
	CreatedMs int64
}

// Store keeps the wrapped data keys. Declared here, by its consumer.
// Destroying a key is the retention store's business (it deletes the
// key's payloads in the same transaction).
type Store interface {
	// SubjectKeys returns the stored keys of those subjects that have one.
	SubjectKeys(ctx context.Context, subjects []string) ([]Wrapped, error)
	// AddSubjectKeys stores, in one transaction, each key whose subject
	// has none, and returns the key stored for each subject: the one given,
	// or the one that was there (another process may have been first).
	AddSubjectKeys(ctx context.Context, keys []Wrapped) ([]Wrapped, error)
	// ListSubjectKeys returns up to limit keys whose subjects sort after
	// after, in subject order.
	ListSubjectKeys(ctx context.Context, after string, limit int) ([]Wrapped, error)
	// RewrapSubjectKey replaces the wrapping of the key with w's subject
	// and id, if it is still wrapped by oldKEK; it reports whether it did.
	RewrapSubjectKey(ctx context.Context, oldKEK string, w Wrapped) (bool, error)
	// KEKSamples returns one stored key for each KEK that wraps any (none
	// if the store holds no key), so that a process can check at start
	// that its KEKs unwrap every stored key without reading them all.
	KEKSamples(ctx context.Context) ([]Wrapped, error)
}

// sealedV1 is the first byte of a payload sealed by this code:
//
//	u8 version (1) | 12-byte nonce | AES-256-GCM ciphertext and tag
//
// The record names its subject keys, so the sealed bytes need not.
const sealedV1 = 1

// Ring seals and opens payloads with the subjects' data keys, which it
// creates on first use and caches unwrapped in memory. It implements
// ledger.Sealer and is safe for concurrent use.
type Ring struct {
	store Store
	now   func() time.Time

	mu      sync.RWMutex
	current KEK
	keks    map[string]KEK
	deks    map[string]dataKey     // by subject
	aeads   map[string]cipher.AEAD // by the joined subject keys
	created chan struct{}          // a one-slot lock: one creation at a time

	pendMu  sync.Mutex
	pending *creation // the subjects waiting for the next creation
}

type dataKey struct {
	id  []byte
	key []byte
}

// Bounds of the caches: past them a cache is emptied and refilled from the
// store, which costs one read per subject.
const (
	maxCachedKeys  = 1 << 17
	maxCachedAEADs = 1 << 14
	// maxCachedSet is the most keys a cached cipher is for. A record's
	// subjects are one conversation's (a user; a group or room and its
	// member), sets that come back record after record; a delivery to a
	// destination carries several conversations' events, a set that
	// hardly comes back: cached, such sets would fill the cache and push
	// out the ones that do, and the garbage collector would trace them
	// until it is emptied.
	maxCachedSet = 2
)

var _ ledger.Sealer = (*Ring)(nil)

// NewRing returns a ring over store that wraps new data keys with current
// and unwraps with current or any of previous.
func NewRing(store Store, current KEK, previous ...KEK) *Ring {
	r := &Ring{store: store, now: time.Now, created: make(chan struct{}, 1)}
	r.SetKEKs(current, previous...)
	return r
}

// SetKEKs changes the key encryption keys, as after a configuration reload:
// new data keys are wrapped with current from now on.
func (r *Ring) SetKEKs(current KEK, previous ...KEK) {
	keks := map[string]KEK{current.ID(): current}
	for _, k := range previous {
		if _, ok := keks[k.ID()]; !ok {
			keks[k.ID()] = k
		}
	}
	r.mu.Lock()
	r.current, r.keks = current, keks
	if r.deks == nil {
		r.deks, r.aeads = map[string]dataKey{}, map[string]cipher.AEAD{}
	}
	r.mu.Unlock()
}

// Current returns the id of the KEK that wraps new data keys.
func (r *Ring) Current() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.current.ID()
}

// Reset implements ledger.Sealer.
func (r *Ring) Reset() {
	r.mu.Lock()
	r.deks, r.aeads = map[string]dataKey{}, map[string]cipher.AEAD{}
	r.mu.Unlock()
}

func dekAAD(subject string, id []byte) []byte {
	return fmt.Appendf(nil, "linegate data key v1\x00%s\x00%x", subject, id)
}

// Seal implements ledger.Sealer.
func (r *Ring) Seal(ctx context.Context, subjects []string, aad, plaintext []byte) ([]byte, []ledger.SubjectKey, error) {
	if len(subjects) == 0 {
		subjects = []string{ledger.SubjectSystem}
	}
	deks, err := r.dataKeys(ctx, subjects, true)
	if err != nil {
		return nil, nil, err
	}
	refs := make([]ledger.SubjectKey, len(subjects))
	for i, s := range subjects {
		refs[i] = ledger.SubjectKey{Subject: s, ID: deks[i].id}
	}
	aead, err := r.aead(refs, deks)
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = sealedV1
	rand.Read(out[1:])
	return aead.Seal(out, out[1:], plaintext, aad), refs, nil
}

// Open implements ledger.Sealer.
func (r *Ring) Open(ctx context.Context, refs []ledger.SubjectKey, aad, sealed []byte) ([]byte, error) {
	subjects := make([]string, len(refs))
	for i, k := range refs {
		subjects[i] = k.Subject
	}
	deks, err := r.dataKeys(ctx, subjects, false)
	if err != nil {
		return nil, err
	}
	for i, d := range deks {
		if string(d.id) != string(refs[i].ID) {
			return nil, ledger.ErrKeyDestroyed // the subject has a newer key
		}
	}
	aead, err := r.aead(refs, deks)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != sealedV1 {
		return nil, errors.New("keys: malformed sealed payload")
	}
	p, err := aead.Open(nil, sealed[1:1+n], sealed[1+n:], aad)
	if err != nil {
		return nil, errors.New("keys: sealed payload fails authentication")
	}
	return p, nil
}

// aead returns the cipher for a set of subject keys: AES-256-GCM under
// HKDF-SHA256 of the data keys, in the order of refs, with the subjects
// and key ids as the info. One key per set of keys, with random 96-bit
// nonces, is safe far beyond the records one subject will ever have
// (NIST SP 800-38D's 2^32 messages per key).
func (r *Ring) aead(refs []ledger.SubjectKey, deks []dataKey) (cipher.AEAD, error) {
	id := ledger.FormatKeys(refs)
	r.mu.RLock()
	a, ok := r.aeads[id]
	r.mu.RUnlock()
	if ok {
		return a, nil
	}
	secret := make([]byte, 0, 32*len(deks))
	for _, d := range deks {
		secret = append(secret, d.key...)
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "linegate payload v1\x00"+id, 32)
	if err != nil {
		return nil, fmt.Errorf("keys: derive payload key: %w", err)
	}
	block, _ := aes.NewCipher(key)
	a, _ = cipher.NewGCM(block)
	if len(refs) > maxCachedSet {
		return a, nil
	}
	r.mu.Lock()
	if len(r.aeads) >= maxCachedAEADs {
		clear(r.aeads)
	}
	r.aeads[id] = a
	r.mu.Unlock()
	return a, nil
}

// dataKeys returns the data keys of subjects, in their order, from the
// cache, then the store; with create, subjects without a key get one.
func (r *Ring) dataKeys(ctx context.Context, subjects []string, create bool) ([]dataKey, error) {
	out := make([]dataKey, len(subjects))
	var missing []int
	r.mu.RLock()
	for i, s := range subjects {
		if d, ok := r.deks[s]; ok {
			out[i] = d
		} else {
			missing = append(missing, i)
		}
	}
	r.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	for _, i := range missing {
		if !ledger.ValidSubject(subjects[i]) {
			return nil, fmt.Errorf("keys: %q is not a subject", subjects[i])
		}
	}
	if err := r.load(ctx, subjects, missing, out); err != nil {
		return nil, err
	}
	var still []int
	for _, i := range missing {
		if out[i].key == nil {
			still = append(still, i)
		}
	}
	if len(still) == 0 {
		return out, nil
	}
	if !create {
		return nil, ledger.ErrKeyDestroyed
	}
	var want []string
	for _, i := range still {
		want = append(want, subjects[i])
	}
	if err := r.create(ctx, want); err != nil {
		return nil, err
	}
	if err := r.load(ctx, subjects, still, out); err != nil {
		return nil, err
	}
	for _, i := range still {
		if out[i].key == nil {
			return nil, errors.New("keys: a new data key was not stored")
		}
	}
	return out, nil
}

// creation is a group of subjects whose keys are created in one store
// transaction.
type creation struct {
	subjects map[string]bool
	done     chan struct{}
	err      error
}

// create makes data keys for subjects that have none, and caches them.
// Creations are group-committed: one store transaction at a time, each
// for every subject that waited meanwhile, so that a burst of first
// contacts (a campaign's new followers) costs a few commits, not one
// each, on the write lock that acknowledgements wait for.
func (r *Ring) create(ctx context.Context, subjects []string) error {
	r.pendMu.Lock()
	if r.pending == nil {
		r.pending = &creation{subjects: map[string]bool{}, done: make(chan struct{})}
	}
	b := r.pending
	for _, s := range subjects {
		b.subjects[s] = true
	}
	r.pendMu.Unlock()
	select {
	case r.created <- struct{}{}: // the creator's turn
	case <-b.done: // another caller created this group
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.created }()
	r.pendMu.Lock()
	if r.pending == b {
		r.pending = nil // later callers gather in a new group
	}
	r.pendMu.Unlock()
	select {
	case <-b.done:
		return b.err // done while this caller waited for its turn
	default:
	}
	b.err = r.createNow(ctx, b.subjects)
	close(b.done)
	return b.err
}

func (r *Ring) createNow(ctx context.Context, subjects map[string]bool) error {
	var want []string
	r.mu.RLock()
	kek := r.current
	for s := range subjects {
		if _, ok := r.deks[s]; !ok {
			want = append(want, s)
		}
	}
	r.mu.RUnlock()
	if len(want) == 0 {
		return nil
	}
	// Another process may make some meanwhile: AddSubjectKeys keeps the
	// first key stored for a subject and returns it.
	var add []Wrapped
	for _, s := range want {
		dek, id := make([]byte, 32), make([]byte, 16)
		rand.Read(dek)
		rand.Read(id)
		w, err := kek.Wrap(ctx, dek, dekAAD(s, id))
		if err != nil {
			return fmt.Errorf("keys: wrap a new data key: %w", err)
		}
		add = append(add, Wrapped{Subject: s, ID: id, KEK: kek.ID(), Key: w, CreatedMs: r.now().UnixMilli()})
	}
	got, err := r.store.AddSubjectKeys(ctx, add)
	if err != nil {
		return fmt.Errorf("keys: store new data keys: %w", err)
	}
	return r.cache(ctx, got)
}

// load fills out[i] for the indices given, from the cache or the store.
func (r *Ring) load(ctx context.Context, subjects []string, idx []int, out []dataKey) error {
	var want []string
	r.mu.RLock()
	for _, i := range idx {
		if d, ok := r.deks[subjects[i]]; ok {
			out[i] = d
		} else {
			want = append(want, subjects[i])
		}
	}
	r.mu.RUnlock()
	if len(want) == 0 {
		return nil
	}
	ws, err := r.store.SubjectKeys(ctx, want)
	if err != nil {
		return fmt.Errorf("keys: read data keys: %w: %w", ledger.ErrUnavailable, err)
	}
	if err := r.cache(ctx, ws); err != nil {
		return err
	}
	r.mu.RLock()
	for _, i := range idx {
		if d, ok := r.deks[subjects[i]]; ok {
			out[i] = d
		}
	}
	r.mu.RUnlock()
	return nil
}

// cache unwraps stored keys into the cache.
func (r *Ring) cache(ctx context.Context, ws []Wrapped) error {
	r.mu.RLock()
	keks := r.keks
	r.mu.RUnlock()
	got := make(map[string]dataKey, len(ws))
	for _, w := range ws {
		kek, ok := keks[w.KEK]
		if !ok {
			return fmt.Errorf("keys: a data key is wrapped by key encryption key %s, which is not configured", w.KEK)
		}
		dek, err := kek.Unwrap(ctx, w.Key, dekAAD(w.Subject, w.ID))
		if err != nil {
			return err
		}
		if len(dek) != 32 {
			return errors.New("keys: a data key unwrapped to the wrong size")
		}
		got[w.Subject] = dataKey{id: w.ID, key: dek}
	}
	r.mu.Lock()
	if len(r.deks)+len(got) > maxCachedKeys {
		clear(r.deks)
		clear(r.aeads)
	}
	for s, d := range got {
		r.deks[s] = d
	}
	r.mu.Unlock()
	return nil
}

// RotateReport says what a rotation did.
type RotateReport struct {
	Rewrapped int // data keys now wrapped by the current KEK
	Current   int // data keys that already were
}

// Rotate re-wraps with the current KEK every data key wrapped by another
// one, page by page, each key with a compare-and-swap, so that it can run
// while gateways are serving. Afterwards the previous KEKs can be removed.
func (r *Ring) Rotate(ctx context.Context) (RotateReport, error) {
	var rep RotateReport
	r.mu.RLock()
	cur, keks := r.current, r.keks
	r.mu.RUnlock()
	after := ""
	for {
		page, err := r.store.ListSubjectKeys(ctx, after, 500)
		if err != nil {
			return rep, fmt.Errorf("keys: list data keys: %w", err)
		}
		if len(page) == 0 {
			return rep, nil
		}
		for _, w := range page {
			after = w.Subject
			if w.KEK == cur.ID() {
				rep.Current++
				continue
			}
			old, ok := keks[w.KEK]
			if !ok {
				return rep, fmt.Errorf("keys: a data key is wrapped by key encryption key %s, which is not configured: give it as a previous key", w.KEK)
			}
			dek, err := old.Unwrap(ctx, w.Key, dekAAD(w.Subject, w.ID))
			if err != nil {
				return rep, err
			}
			nw, err := cur.Wrap(ctx, dek, dekAAD(w.Subject, w.ID))
			clear(dek)
			if err != nil {
				return rep, fmt.Errorf("keys: re-wrap: %w", err)
			}
			oldKEK := w.KEK
			w.KEK, w.Key = cur.ID(), nw
			ok, err = r.store.RewrapSubjectKey(ctx, oldKEK, w)
			if err != nil {
				return rep, fmt.Errorf("keys: re-wrap: %w", err)
			}
			if ok {
				rep.Rewrapped++
			}
			// Not swapped: the key was destroyed or re-wrapped meanwhile.
		}
	}
}
