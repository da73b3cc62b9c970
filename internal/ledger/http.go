package ledger

import (
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strconv"
)

// Handler serves the log's public read side in the C2SP tlog-tiles layout,
// relative to the path it is mounted at (strip the prefix first):
//
//	GET checkpoint
//	GET tile/<L>/<N>[.p/<W>]
//	GET tile/entries/<N>[.p/<W>]
//
// Entry bundles hold the leaves, which carry no personal data. Resources
// beyond the latest checkpoint are 404. Full tiles and bundles never change
// and are served as immutable.
func (l *Ledger) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /checkpoint", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(l.Head().Checkpoint)
	})
	mux.HandleFunc("GET /tile/entries/{n...}", func(w http.ResponseWriter, r *http.Request) {
		n, width, err := parseN(r.PathValue("n"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		size := l.Head().Size
		start, end, ok := tileRange(n, width, size)
		if !ok {
			http.NotFound(w, r)
			return
		}
		leaves, err := l.store.ReadLeaves(r.Context(), start, end)
		if err != nil {
			l.serveErr(w, r, err)
			return
		}
		var b []byte
		for _, leaf := range leaves {
			b = binary.BigEndian.AppendUint16(b, uint16(len(leaf)))
			b = append(b, leaf...)
		}
		serveTile(w, width, b)
	})
	mux.HandleFunc("GET /tile/{level}/{n...}", func(w http.ResponseWriter, r *http.Request) {
		level, err := strconv.ParseUint(r.PathValue("level"), 10, 6)
		n, width, err2 := parseN(r.PathValue("n"))
		if err != nil || err2 != nil || strconv.FormatUint(level, 10) != r.PathValue("level") {
			http.Error(w, "malformed tile path", http.StatusBadRequest)
			return
		}
		// The number of hashes at this level is the tree size shifted.
		count := l.Head().Size >> (TileHeight * level)
		start, end, ok := tileRange(n, width, count)
		if !ok {
			http.NotFound(w, r)
			return
		}
		data, err := l.store.ReadTile(r.Context(), level, n)
		if err != nil {
			l.serveErr(w, r, err)
			return
		}
		want := int(end-start) * hashSize
		if len(data) < want {
			http.NotFound(w, r)
			return
		}
		serveTile(w, width, data[:want])
	})
	return mux
}

// tileRange returns the range of items that tile or bundle n of the given
// width (0: full) covers, and whether a tree with count items at that
// level has it. An n whose range does not fit in 64 bits is not there
// (it must not wrap around to a tile near the start).
func tileRange(n uint64, width int, count uint64) (start, end uint64, ok bool) {
	w := uint64(width)
	if width == 0 {
		w = TileWidth
	}
	if n > (math.MaxUint64-w)/TileWidth {
		return 0, 0, false
	}
	start = n * TileWidth
	end = start + w
	if end > count {
		return 0, 0, false
	}
	return start, end, true
}

func serveTile(w http.ResponseWriter, width int, b []byte) {
	w.Header().Set("Content-Type", "application/octet-stream")
	if width == 0 {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(b)
}

func (l *Ledger) serveErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	l.log.Error("log read failed", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}
