package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// TileHeight is the height of every tile: 256 hashes to a full tile, as in
// C2SP tlog-tiles.
const TileHeight = 8

// TileWidth is the number of hashes (or entries) in a full tile or bundle.
const TileWidth = 1 << TileHeight

// hashSize is the size of one hash in a tile.
const hashSize = 32

// TilePath returns the C2SP tlog-tiles path of a hash tile, relative to the
// log's prefix: tile/<L>/<N>[.p/<W>], where width 0 or 256 means full.
//
// Written here rather than taken from sumdb/tlog, whose Tile.Path carries the
// tile height as an extra path element that tlog-tiles dropped.
func TilePath(level, index uint64, width int) string {
	return "tile/" + strconv.FormatUint(level, 10) + "/" + encodeN(index, width)
}

// EntriesPath returns the C2SP tlog-tiles path of an entry bundle.
func EntriesPath(index uint64, width int) string {
	return "tile/entries/" + encodeN(index, width)
}

func encodeN(n uint64, width int) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	if width > 0 && width < TileWidth {
		s += ".p/" + strconv.Itoa(width)
	}
	return s
}

// parseN parses the <N>[.p/<W>] part of a tile path, strictly: every element
// three digits, all but the last prefixed with x, widths 1 to 255.
// It returns width 0 for a full tile.
func parseN(s string) (n uint64, width int, err error) {
	bad := fmt.Errorf("ledger: malformed tile index %q", s)
	if i := strings.Index(s, ".p/"); i >= 0 {
		w, err := strconv.Atoi(s[i+3:])
		if err != nil || w < 1 || w >= TileWidth || strconv.Itoa(w) != s[i+3:] {
			return 0, 0, bad
		}
		width, s = w, s[:i]
	}
	elems := strings.Split(s, "/")
	if len(elems) > 7 { // 2^64 has 20 digits
		return 0, 0, bad
	}
	for i, e := range elems {
		if i < len(elems)-1 {
			if !strings.HasPrefix(e, "x") {
				return 0, 0, bad
			}
			e = e[1:]
		}
		if len(e) != 3 || e[0] < '0' || e[0] > '9' || e[1] < '0' || e[1] > '9' || e[2] < '0' || e[2] > '9' {
			return 0, 0, bad
		}
		d, _ := strconv.ParseUint(e, 10, 64)
		if n > (1<<64-1-d)/1000 {
			return 0, 0, bad
		}
		n = n*1000 + d
	}
	if len(elems) > 1 && elems[0] == "x000" { // not the canonical encoding
		return 0, 0, bad
	}
	return n, width, nil
}
