package ledger

import (
	"context"
	"iter"
)

// ReadView is a read-only view of the log's storage as it was at one
// moment: the tree head, the checkpoints, the records, the leaves, the
// tiles and the count all come from the same snapshot, whatever is appended
// or integrated meanwhile. Readers that must see a tree head together with
// the tiles and records it covers (Verify, evidence export, proofs) read
// through one; a Store read method by method can show a tree head from one
// moment and a tile from a later one.
//
// The methods mean what the Store methods of the same names mean. A
// ReadView is safe for concurrent use; a backend may serialize the calls.
// It holds a read transaction open until Close (on SQLite a WAL read
// snapshot, which keeps the WAL from being reset; on PostgreSQL a
// REPEATABLE READ transaction, which holds back vacuum): close it when done.
type ReadView interface {
	TreeHead(ctx context.Context) (TreeHead, error)
	Count(ctx context.Context) (uint64, error)
	ReadLeaves(ctx context.Context, start, end uint64) ([][]byte, error)
	Records(ctx context.Context, start, end uint64) iter.Seq2[Record, error]
	ReadTile(ctx context.Context, level, index uint64) ([]byte, error)
	Checkpoints(ctx context.Context) iter.Seq2[[]byte, error]
	Close() error
}

// Snapshotter opens read-only views of the log. Every Store is one; so are
// the backends' read-only handles, which never write (linegate verify).
type Snapshotter interface {
	// Snapshot returns a view of the storage as it is now. The view lasts
	// until its Close, or until ctx is done: give it the context of the
	// whole read, not of one call.
	Snapshot(ctx context.Context) (ReadView, error)
}

// TileReader is what proofs need of storage: a ReadView, or a Store, whose
// tiles cover the tree the proof is for. (Stored tiles only grow, so a
// Store serves the proofs of any tree it has integrated.)
type TileReader interface {
	ReadTile(ctx context.Context, level, index uint64) ([]byte, error)
}
