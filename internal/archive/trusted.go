package archive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/objstore"
	"golang.org/x/mod/sumdb/note"
)

// Versioned is a bucket whose object versions, and the lock of each, can
// be read: what the start-up check needs to trust a checkpoint in it.
type Versioned interface {
	ListVersions(ctx context.Context, prefix string) ([]objstore.Version, error)
	GetVersion(ctx context.Context, key, id string) ([]byte, error)
	VersionRetainUntil(ctx context.Context, key, id string) (time.Time, error)
}

var _ Versioned = (*objstore.S3)(nil)

// Reasons an object under a checkpoint key is not trusted.
const (
	IgnoredDeleteMarker = "delete_marker" // hides the key's versions; they are read all the same
	IgnoredUnlocked     = "unlocked"      // no compliance-mode lock in force
	IgnoredNewer        = "newer_version" // a version put over the key's oldest locked one
	IgnoredMismatch     = "mismatch"      // not this log's checkpoint of the key's size
)

// Ignored is an object under a checkpoint key that the start-up check
// did not trust, and why.
type Ignored struct {
	Key, Version, Reason string
	Detail               string
}

// Trusted is a checkpoint read from the bucket that can be relied on: the
// oldest version of its key under a compliance-mode lock, a checkpoint of
// this log signed with its key, of the size its key names.
type Trusted struct {
	Key, Version string
	Size         uint64
	Signed       []byte
}

// NewestTrusted returns the bucket's newest trusted checkpoint among the
// keys checkpoint-<size><suffix> (suffix "" for the checkpoints,
// ".cosigned" for the cosigned ones), and every object it did not trust
// on the way: for each key, newest size first, only the oldest version
// under a compliance-mode lock counts (a version put over it later, by
// whoever can write the bucket, cannot replace it; a delete marker cannot
// hide it), and only when it is a checkpoint of this log (v, origin) of
// the size its key names. Keys of smaller sizes than the newest trusted
// one are not read. found is false when no key holds a trusted checkpoint.
func NewestTrusted(ctx context.Context, b Versioned, suffix string, v note.Verifier, origin string) (t Trusted, found bool, ignored []Ignored, err error) {
	vs, err := b.ListVersions(ctx, "checkpoint-")
	if err != nil {
		return Trusted{}, false, nil, fmt.Errorf("archive: list the versions of the bucket's checkpoints: %w", err)
	}
	type keyVersions struct {
		key  string
		size uint64
		vs   []objstore.Version
	}
	byKey := map[string]*keyVersions{}
	for _, x := range vs {
		num, ok := strings.CutSuffix(strings.TrimPrefix(x.Key, "checkpoint-"), suffix)
		if !ok || num == "" {
			continue
		}
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil || strconv.FormatUint(n, 10) != num {
			continue // another suffix, or not a size
		}
		k := byKey[x.Key]
		if k == nil {
			k = &keyVersions{key: x.Key, size: n}
			byKey[x.Key] = k
		}
		k.vs = append(k.vs, x)
	}
	keys := make([]*keyVersions, 0, len(byKey))
	for _, k := range byKey {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *keyVersions) int { return cmp.Compare(b.size, a.size) })
	for _, k := range keys {
		// Oldest first. S3 lists a key's versions newest first; the
		// listing order breaks ties of the modification time.
		slices.Reverse(k.vs)
		slices.SortStableFunc(k.vs, func(a, b objstore.Version) int { return a.Modified.Compare(b.Modified) })
		var chosen *objstore.Version
		for i := range k.vs {
			x := &k.vs[i]
			if x.DeleteMarker {
				ignored = append(ignored, Ignored{Key: k.key, Version: x.ID, Reason: IgnoredDeleteMarker})
				continue
			}
			if chosen != nil {
				ignored = append(ignored, Ignored{Key: k.key, Version: x.ID, Reason: IgnoredNewer,
					Detail: "put over the key's oldest locked version " + chosen.ID})
				continue
			}
			if _, err := b.VersionRetainUntil(ctx, k.key, x.ID); err != nil {
				if !errors.Is(err, objstore.ErrNotLocked) {
					return Trusted{}, false, ignored, fmt.Errorf("archive: the lock of the bucket's %s (version %s): %w", k.key, x.ID, err)
				}
				ignored = append(ignored, Ignored{Key: k.key, Version: x.ID, Reason: IgnoredUnlocked, Detail: err.Error()})
				continue
			}
			chosen = x
		}
		if chosen == nil {
			continue
		}
		signed, err := b.GetVersion(ctx, k.key, chosen.ID)
		if err != nil {
			return Trusted{}, false, ignored, fmt.Errorf("archive: read the bucket's %s (version %s): %w", k.key, chosen.ID, err)
		}
		c, err := ledger.OpenCheckpoint(signed, v, origin)
		if err == nil && c.Size != k.size {
			err = fmt.Errorf("a checkpoint of size %d under the key of size %d", c.Size, k.size)
		}
		if err != nil {
			ignored = append(ignored, Ignored{Key: k.key, Version: chosen.ID, Reason: IgnoredMismatch, Detail: err.Error()})
			continue
		}
		return Trusted{Key: k.key, Version: chosen.ID, Size: c.Size, Signed: signed}, true, ignored, nil
	}
	return Trusted{}, false, ignored, nil
}

// ReportIgnored logs each object the start-up check did not trust, at
// error level: someone wrote to the bucket what linegate did not.
func ReportIgnored(log *slog.Logger, ignored []Ignored) {
	for _, x := range ignored {
		log.Error("archive: an object under a checkpoint key of the bucket is not trusted and is ignored: written by another than linegate, or a lock removed",
			"key", x.Key, "version", x.Version, "reason", x.Reason, "detail", x.Detail)
	}
}

// OldestLocked returns the oldest version of key under a compliance-mode
// lock: what was published under the key, whatever was put over it
// since. found is false when no version of key is locked.
func OldestLocked(ctx context.Context, b Versioned, key string) (data []byte, found bool, err error) {
	vs, err := b.ListVersions(ctx, key)
	if err != nil {
		return nil, false, err
	}
	var mine []objstore.Version
	for _, x := range vs {
		if x.Key == key && !x.DeleteMarker {
			mine = append(mine, x)
		}
	}
	slices.Reverse(mine)
	slices.SortStableFunc(mine, func(a, b objstore.Version) int { return a.Modified.Compare(b.Modified) })
	for _, x := range mine {
		if _, err := b.VersionRetainUntil(ctx, key, x.ID); err != nil {
			if errors.Is(err, objstore.ErrNotLocked) {
				continue
			}
			return nil, false, err
		}
		data, err := b.GetVersion(ctx, key, x.ID)
		return data, err == nil, err
	}
	return nil, false, nil
}

// published1 returns what was published under key: its oldest locked
// version when the bucket lists versions, else its current one.
func (p *Publisher) published1(ctx context.Context, key string) ([]byte, error) {
	vb, ok := p.o.Bucket.(Versioned)
	if !ok {
		return p.o.Bucket.Get(ctx, key)
	}
	data, found, err := OldestLocked(ctx, vb, key)
	if err == nil && !found {
		err = objstore.ErrNotFound
	}
	return data, err
}
