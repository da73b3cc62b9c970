package keys

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/linegate/linegate/internal/ledger"
)

// Config says where a process's key encryption keys come from.
type Config struct {
	// Current is the KEK that wraps new data keys, when it is given
	// directly (an environment variable, a KMS client).
	Current KEK
	// CurrentFile holds the current KEK when Current is nil.
	CurrentFile string
	// Create allows OpenRing to write a new KEK to CurrentFile when the
	// file does not exist, provided that the store holds no data key yet.
	// A store with data keys was written under a KEK that this process
	// lacks: a new one would unwrap none of them, and every webhook of
	// their subjects would fail. Then OpenRing refuses instead.
	Create bool
	// Previous KEKs unwrap data keys that a rotation has not re-wrapped
	// yet.
	Previous []KEK
}

// OpenRing returns a ring over store with the KEKs of c, and reports
// whether it created CurrentFile. Before it returns, it checks that the
// KEKs unwrap the data keys the store holds: for every KEK that wraps one,
// it must have a KEK of that id that unwraps one of its keys. Otherwise it
// fails with a *MismatchError naming the KEKs of the store and its own.
//
// BUG: with replicas on one PostgreSQL database, two that start at once on
// an empty database may each create a KEK of their own; the next start of
// either is refused. Give replicas their KEK (kek_file, kek_env).
func OpenRing(ctx context.Context, store Store, c Config) (*Ring, bool, error) {
	cur, created, err := c.load(ctx, store)
	if err != nil {
		return nil, false, err
	}
	return NewRing(store, cur, c.Previous...), created, nil
}

// Reconfigure gives the ring the KEKs of c, as after a configuration
// reload, if they unwrap the data keys the store holds (as in OpenRing);
// otherwise the ring keeps its KEKs. It never creates a KEK file.
func (r *Ring) Reconfigure(ctx context.Context, c Config) error {
	c.Create = false
	cur, _, err := c.load(ctx, r.store)
	if err != nil {
		return err
	}
	r.SetKEKs(cur, c.Previous...)
	return nil
}

// load returns the current KEK of c, creating its file if c allows it,
// after checking every KEK of c against the store's data keys.
func (c Config) load(ctx context.Context, store Store) (KEK, bool, error) {
	samples, err := store.KEKSamples(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("keys: read data keys: %w", err)
	}
	cur, created := c.Current, false
	if cur == nil {
		if c.CurrentFile == "" {
			return nil, false, errors.New("keys: no key encryption key given")
		}
		k, err := LoadKEKFile(c.CurrentFile)
		switch {
		case err == nil:
			cur = k
		case errors.Is(err, fs.ErrNotExist) && c.Create:
			if len(samples) > 0 {
				return nil, false, fmt.Errorf("keys: %s does not exist, and the store holds data keys wrapped by key encryption key %s: not creating a new key, which would unwrap none of them; give the key that wrapped them",
					c.CurrentFile, strings.Join(sampleKEKs(samples), ", "))
			}
			if cur, err = WriteKEKFile(c.CurrentFile); err != nil {
				return nil, false, err
			}
			created = true
		default:
			return nil, false, err
		}
	}
	if err := checkKEKs(ctx, samples, append([]KEK{cur}, c.Previous...)); err != nil {
		return nil, false, err
	}
	return cur, created, nil
}

// MismatchError says that a process's KEKs do not unwrap the data keys a
// store holds.
type MismatchError struct {
	InStore []string // the KEKs that wrap the stored data keys
	Have    []string // the process's KEKs, the current one first
	Missing []string // KEKs of the store that the process lacks
	Failed  []string // KEKs the process has under the id, that do not unwrap
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keys: the stored data keys are wrapped by key encryption key %s; this process has %s",
		strings.Join(e.InStore, ", "), strings.Join(e.Have, ", "))
	if len(e.Missing) > 0 {
		fmt.Fprintf(&b, ": %s not configured (give it as the current or a previous key)", strings.Join(e.Missing, ", "))
	}
	if len(e.Failed) > 0 {
		fmt.Fprintf(&b, ": %s does not unwrap its data keys", strings.Join(e.Failed, ", "))
	}
	return b.String()
}

// checkKEKs checks keks against one stored data key of each KEK that
// wraps any.
func checkKEKs(ctx context.Context, samples []Wrapped, keks []KEK) error {
	byID := map[string]KEK{}
	e := &MismatchError{InStore: sampleKEKs(samples)}
	for _, k := range keks {
		if _, ok := byID[k.ID()]; !ok {
			byID[k.ID()] = k
			e.Have = append(e.Have, k.ID())
		}
	}
	for _, w := range samples {
		k, ok := byID[w.KEK]
		if !ok {
			e.Missing = append(e.Missing, w.KEK)
			continue
		}
		dek, err := k.Unwrap(ctx, w.Key, dekAAD(w.Subject, w.ID))
		if err != nil || len(dek) != 32 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.Failed = append(e.Failed, w.KEK)
		}
		clear(dek)
	}
	if len(e.Missing) > 0 || len(e.Failed) > 0 {
		slices.Sort(e.Missing)
		slices.Sort(e.Failed)
		return e
	}
	return nil
}

// sampleKEKs returns the sorted ids of the KEKs of samples.
func sampleKEKs(samples []Wrapped) []string {
	var ids []string
	for _, w := range samples {
		ids = append(ids, w.KEK)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// WriteKEKFile writes a new random key encryption key to path, which must
// not exist, readable by its owner alone (0600), and returns it. A missing
// directory is created 0700.
func WriteKEKFile(path string) (*LocalKEK, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	text := GenerateKEK()
	if err := WriteNewFile(path, []byte(text+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("keys: write key encryption key: %w", err)
	}
	return ParseKEK(text)
}

// WriteNewFile creates the file path with data and mode perm, and never
// overwrites one (ledger.WriteNewFile): for keys.
func WriteNewFile(path string, data []byte, perm os.FileMode) error {
	return ledger.WriteNewFile(path, data, perm)
}
