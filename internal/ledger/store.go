package ledger

import (
	"context"
	"errors"
	"iter"
)

// ErrNotFound is returned by a Store when a record, leaf, tile or tree head
// does not exist.
var ErrNotFound = errors.New("ledger: not found")

// ErrConflict is returned by Store.Integrate when the stored tree head is no
// longer the one the caller integrated from: another sequencer won the race.
// The caller must reload the tree head and start over; nothing was written.
var ErrConflict = errors.New("ledger: tree head changed concurrently")

// ErrUnsupportedEffect is returned by Store.Append for an effect the store
// does not know how to apply. Nothing was written.
var ErrUnsupportedEffect = errors.New("ledger: the store cannot apply this effect")

// A Group is records and the effects that commit with them
// (Store.AppendGroups).
type Group struct {
	Records []Record
	Effects []Effect
}

// Effect is a change of state that takes effect only together with the
// records that document it: dequeuing the events whose outcomes are
// recorded, deleting payloads and destroying data keys with their deletion
// record, switching the kill switch with the admin record that says who
// did. Effects are plain values declared by the packages that own the
// state (pipeline, retention, outbound); each Store applies them inside
// its append transaction (Store.Append), so that an audited action never
// takes effect without its record, nor is recorded without taking effect.
type Effect interface {
	// EffectName names the change, for errors and logs.
	EffectName() string
}

// TreeHead is the integrated state of the log: its size, its root hash, and
// the signed checkpoint (a C2SP tlog-checkpoint signed note) for them.
// Checkpoint is nil only for the empty, never-signed log a Store starts with.
type TreeHead struct {
	Size       uint64
	Hash       [32]byte
	Checkpoint []byte
}

// Tile is the content of one tlog tile of height 8: Width hashes of 32 bytes
// at Level, number Index. A tile grows from partial to full (256 hashes); a
// wider tile always starts with the bytes of a narrower one.
type Tile struct {
	Level, Index uint64
	Data         []byte
}

// Store is the durable storage of the ledger. It is declared here, by its
// consumer; every implementation passes the suite in package ledgertest.
//
// A Store is safe for concurrent use by several goroutines and, for stores
// that are shared by several gateway processes (PostgreSQL), by several
// processes: every method is a transaction of its own.
//
// Records are appended and integrated in two steps, as in Sunlight and
// Tessera. Append makes records durable and gives them their final indices;
// only the sequencer integrates them later into tiles and a new tree head,
// and the Store never computes a hash. Crash ordering: records are durable
// before their index is acknowledged; tiles, the tree head and the signed
// checkpoint are committed together by Integrate, which is a compare-and-
// swap on the tree size, so a stale sequencer can never publish a tree head
// inconsistent with a newer one.
type Store interface {
	// Append stores records durably in one transaction, assigns them
	// consecutive indices following every record appended before, and
	// returns the first index. When Append returns nil, the records survive
	// a crash; when it returns an error, none of them were stored. Indices
	// are dense: committed records always form a prefix of the index space.
	// The Index field of the records passed in is ignored.
	//
	// Effects are applied in the same transaction, in order, after the
	// records are inserted: either the records and every effect commit,
	// or nothing does. A Store applies the effects it knows and fails with
	// ErrUnsupportedEffect on others; an effect's own refusal (a hold that
	// does not exist, a claim lost to another process) is returned as it is.
	Append(ctx context.Context, recs []Record, effects ...Effect) (first uint64, err error)

	// AppendGroups commits several groups of records and effects in one
	// transaction, each group all or nothing as if it were appended by
	// Append on its own, in order: the records of the groups that commit
	// get consecutive indices in the order of the groups. errs[i] is the
	// refusal of group i (its records and effects are not stored; the
	// others are); err fails them all (nothing is stored). It is how the
	// one writer of a Ledger commits the appends and effects of every
	// caller in one durable commit.
	AppendGroups(ctx context.Context, groups []Group) (firsts []uint64, errs []error, err error)

	// Count returns the number of records appended so far (integrated or
	// not): the index the next appended record will get.
	Count(ctx context.Context) (uint64, error)

	// ReadLeaves returns the leaves of records [start, end). It returns
	// ErrNotFound if any of them is missing.
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)

	// Records iterates over the records [start, end) in index order, with
	// their payloads (nil where deleted). A missing index is reported as a
	// Record whose Leaf is nil, so that callers can name the gap.
	Records(ctx context.Context, start, end uint64) iter.Seq2[Record, error]

	// TreeHead returns the current tree head. A new Store returns the empty
	// tree head (size 0, no checkpoint), never ErrNotFound.
	TreeHead(ctx context.Context) (TreeHead, error)

	// ReadTile returns the stored data of tile (level, index), which may be
	// partial, or ErrNotFound.
	ReadTile(ctx context.Context, level, index uint64) ([]byte, error)

	// Integrate commits, in one transaction, the tiles and the new tree head
	// (whose checkpoint is also added to the checkpoint history), provided
	// the stored tree head is still exactly old: its size and its hash (a
	// compare-and-swap on the previous head, not on a size, so that a head
	// of the same size with another hash is a conflict too); otherwise it
	// returns ErrConflict and writes nothing. Tiles replace stored tiles of
	// the same coordinates. That the new head extends the old one is for
	// the sequencer to prove before it signs.
	Integrate(ctx context.Context, old TreeHead, head TreeHead, tiles []Tile) error

	// Checkpoints iterates over every checkpoint ever committed by
	// Integrate, in the order of their tree sizes.
	Checkpoints(ctx context.Context) iter.Seq2[[]byte, error]

	// Snapshot returns a read-only view of the store as it is now, which
	// later writes do not change (ReadView): readers that check a tree
	// head against its tiles and records read through one.
	Snapshotter

	// Ping reports whether the store can be reached and written to.
	Ping(ctx context.Context) error

	// Close releases the store's resources.
	Close() error
}
