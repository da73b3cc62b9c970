package keys

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// otherKEK claims the id of another KEK, as a wrong key behind a KMS alias
// would.
type otherKEK struct {
	KEK
	id string
}

func (k otherKEK) ID() string { return k.id }

// sealFor makes a data key for subject, wrapped by kek.
func sealFor(t *testing.T, st Store, kek KEK, subject string) {
	t.Helper()
	if _, _, err := NewRing(st, kek).Seal(context.Background(), []string{subject}, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRingCreatesKEKOnlyForAnEmptyStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "kek")
	st := newMemStore()
	r, created, err := OpenRing(ctx, st, Config{CurrentFile: path, Create: true})
	if err != nil || !created {
		t.Fatalf("first open: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kek file: %v, %v", fi, err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	} else if di.Mode().Perm() != 0o700 {
		t.Errorf("kek directory mode %v, want 0700", di.Mode().Perm())
	}
	if ents, err := os.ReadDir(filepath.Dir(path)); err != nil || len(ents) != 1 {
		t.Errorf("kek directory holds %d files, want the key alone (%v)", len(ents), err)
	}
	sealFor(t, st, r.current, "user:U1")
	r2, created, err := OpenRing(ctx, st, Config{CurrentFile: path, Create: true})
	if err != nil || created || r2.Current() != r.Current() {
		t.Fatalf("second open: %v, created %v, %v", r2, created, err)
	}

	// The key file is lost, or this replica never had it: the data keys
	// exist, so no new key is made.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, created, err = OpenRing(ctx, st, Config{CurrentFile: path, Create: true})
	if err == nil || created || !strings.Contains(err.Error(), r.Current()) || !strings.Contains(err.Error(), "not creating") {
		t.Fatalf("open without the key over data keys: created %v, %v", created, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a key file was created: %v", err)
	}
	// Without Create, a missing file is an error on an empty store too.
	if _, _, err := OpenRing(ctx, newMemStore(), Config{CurrentFile: path}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open of a missing file without create: %v", err)
	}
}

func TestOpenRingChecksKEKs(t *testing.T) {
	ctx := context.Background()
	a, b, c := newKEK(t), newKEK(t), newKEK(t)
	st := newMemStore()
	sealFor(t, st, a, "user:A")
	sealFor(t, st, b, "user:B")
	impostor := otherKEK{KEK: c, id: a.ID()}
	for _, tc := range []struct {
		name            string
		cfg             Config
		missing, failed []string
	}{
		{"current and previous", Config{Current: c, Previous: []KEK{a, b}}, nil, nil},
		{"previous alone missing", Config{Current: a}, []string{b.ID()}, nil},
		{"another key", Config{Current: c}, []string{a.ID(), b.ID()}, nil},
		{"a wrong key under the right id", Config{Current: impostor, Previous: []KEK{b}}, nil, []string{a.ID()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := OpenRing(ctx, st, tc.cfg)
			if tc.missing == nil && tc.failed == nil {
				if err != nil || r.Current() != tc.cfg.Current.ID() {
					t.Fatalf("open: %v", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("open = %v, want a *MismatchError", err)
			}
			want := []string{a.ID(), b.ID()}
			slices.Sort(want)
			if !slices.Equal(me.InStore, want) || !slices.Equal(me.Missing, sorted(tc.missing)) || !slices.Equal(me.Failed, tc.failed) {
				t.Errorf("mismatch %+v", me)
			}
			for _, id := range append(want, tc.cfg.Current.ID()) {
				if !strings.Contains(err.Error(), id) {
					t.Errorf("the error does not name %s: %v", id, err)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestReconfigureKeepsKEKsThatDoNotUnwrap(t *testing.T) {
	ctx := context.Background()
	a, b := newKEK(t), newKEK(t)
	st := newMemStore()
	r := NewRing(st, a)
	sealFor(t, st, a, "user:A")
	if err := r.Reconfigure(ctx, Config{Current: b}); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("reconfigure without the old key: %v", err)
	}
	if r.Current() != a.ID() {
		t.Errorf("a refused reconfiguration changed the current key")
	}
	if err := r.Reconfigure(ctx, Config{Current: b, Previous: []KEK{a}}); err != nil || r.Current() != b.ID() {
		t.Errorf("reconfigure with the old key as previous: %v, current %s", err, r.Current())
	}
	path := filepath.Join(t.TempDir(), "kek")
	if err := r.Reconfigure(ctx, Config{CurrentFile: path, Create: true, Previous: []KEK{a}}); err == nil {
		t.Error("reconfigure created a key file")
	}
}

func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := WriteNewFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(path, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second write = %v, want fs.ErrExist", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "one" || fi.Mode().Perm() != 0o600 {
		t.Errorf("file %q, mode %v", b, fi.Mode().Perm())
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
		t.Errorf("%d files left in the directory, want 1 (%v)", len(ents), err)
	}
}
