package ledger

import (
	"bytes"
	"github.com/linegate/linegate/internal/record"
	"strings"
	"testing"
	"time"
)

func TestLeafRoundTrip(t *testing.T) {
	for _, l := range []Leaf{
		{Kind: KindWebhook, Time: time.UnixMilli(1700000000123), Channel: "demo", Retention: "jp-appi", Commitment: [32]byte{1, 2, 3}},
		{Kind: KindRejection, Time: time.UnixMilli(0), Channel: "", Retention: ""},
		{Kind: Kind(200), Time: time.UnixMilli(-5), Channel: strings.Repeat("c", 255), Retention: "x"},
	} {
		b, err := l.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Leaf
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary(%x): %v", b, err)
		}
		if got.Kind != l.Kind || !got.Time.Equal(l.Time) || got.Channel != l.Channel || got.Retention != l.Retention || got.Commitment != l.Commitment {
			t.Errorf("round trip: got %+v, want %+v", got, l)
		}
	}
	if _, err := (Leaf{Channel: strings.Repeat("c", 256)}).MarshalBinary(); err == nil {
		t.Error("a 256-byte channel was encoded")
	}
}

func FuzzLeaf(f *testing.F) {
	b, err := Leaf{Kind: KindWebhook, Time: time.UnixMilli(1), Channel: "c", Retention: "r"}.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l Leaf
		if l.UnmarshalBinary(b) != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes: a leaf has
		// one encoding.
		b2, err := l.MarshalBinary()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("leaf %x re-encodes as %x, %v", b, b2, err)
		}
	})
}

func TestPayloadRoundTrip(t *testing.T) {
	body := []byte(`{"text":"\uD83E\uDD28"}`)
	p, err := record.EncodePayload(&record.Meta{Channel: "c", ReceivedMs: 5, Headers: map[string][]string{"X-Line-Signature": {"abc"}}}, body)
	if err != nil {
		t.Fatal(err)
	}
	m, got, err := record.DecodePayload(p)
	if err != nil || !bytes.Equal(got, body) || m.Channel != "c" || m.Headers["X-Line-Signature"][0] != "abc" {
		t.Fatalf("DecodePayload = %+v, %q, %v", m, got, err)
	}
}

func FuzzDecodePayload(f *testing.F) {
	p, err := record.EncodePayload(&record.Meta{Channel: "c"}, []byte("body"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	f.Add([]byte{0, 0, 0, 200, '{'})
	f.Fuzz(func(t *testing.T, p []byte) {
		record.DecodePayload(p) // must not panic
	})
}

func TestTilePaths(t *testing.T) {
	for _, tt := range []struct {
		level, n uint64
		w        int
		path     string
	}{
		{0, 0, 0, "tile/0/000"},
		{0, 5, 17, "tile/0/005.p/17"},
		{1, 1234067, 0, "tile/1/x001/x234/067"},
		{2, 1000, 255, "tile/2/x001/000.p/255"},
	} {
		if got := TilePath(tt.level, tt.n, tt.w); got != tt.path {
			t.Errorf("TilePath(%d, %d, %d) = %s, want %s", tt.level, tt.n, tt.w, got, tt.path)
		}
		_, rest, _ := strings.Cut(strings.TrimPrefix(tt.path, "tile/"), "/")
		n, w, err := parseN(rest)
		if err != nil || n != tt.n || w != tt.w%256 {
			t.Errorf("parseN(%s) = %d, %d, %v", rest, n, w, err)
		}
	}
	if got := EntriesPath(3, 0); got != "tile/entries/003" {
		t.Errorf("EntriesPath = %s", got)
	}
	for _, bad := range []string{"", "1", "0000", "x000/001", "001/002", "x1/002", "000.p/0", "000.p/256", "000.p/01", "000.p/", "x999/x999/x999/x999/x999/x999/x999/999", "00a"} {
		if _, _, err := parseN(bad); err == nil {
			t.Errorf("parseN(%q) accepted", bad)
		}
	}
}

func FuzzParseN(f *testing.F) {
	f.Add("x001/x234/067.p/5")
	f.Add("000")
	f.Fuzz(func(t *testing.T, s string) {
		n, w, err := parseN(s)
		if err != nil {
			return
		}
		// Only canonical paths parse.
		if got := encodeN(n, w); got != s {
			t.Fatalf("parseN(%q) = %d, %d; which encodes as %q", s, n, w, got)
		}
	})
}

func TestParseCheckpoint(t *testing.T) {
	root := [32]byte{9}
	c, err := ParseCheckpoint(FormatCheckpoint("example.com/log", 42, root))
	if err != nil || c.Origin != "example.com/log" || c.Size != 42 || c.Hash != root {
		t.Fatalf("ParseCheckpoint = %+v, %v", c, err)
	}
	for _, bad := range []string{"", "o\n", "o\n1\n", "o\n01\nAAAA\n", "o\n1\nnot-base64\n", "\n1\n" + strings.Repeat("A", 43) + "=\n"} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%q) accepted", bad)
		}
	}
}

func TestTlogProofRoundTrip(t *testing.T) {
	cp := []byte("example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log sig\n")
	proof := [][32]byte{{1}, {2}}
	idx, hashes, gotCP, err := ParseTlogProof(FormatTlogProof(3, proof, cp))
	if err != nil || idx != 3 || len(hashes) != 2 || hashes[1][0] != 2 || !bytes.Equal(gotCP, cp) {
		t.Fatalf("ParseTlogProof = %d, %x, %q, %v", idx, hashes, gotCP, err)
	}
	withExtra := []byte("c2sp.org/tlog-proof@v1\nextra AAAA\nindex 0\n\n" + string(cp))
	if idx, hashes, _, err := ParseTlogProof(withExtra); err != nil || idx != 0 || len(hashes) != 0 {
		t.Errorf("proof with extra data: %d, %d hashes, %v", idx, len(hashes), err)
	}
	for _, bad := range []string{"", "c2sp.org/tlog-proof@v1\nindex 01\n\ncp", "c2sp.org/tlog-proof@v2\nindex 1\n\ncp", "c2sp.org/tlog-proof@v1\nindex 1\nnot-base64\n\ncp"} {
		if _, _, _, err := ParseTlogProof([]byte(bad)); err == nil {
			t.Errorf("ParseTlogProof(%q) accepted", bad)
		}
	}
}

func FuzzParseTlogProof(f *testing.F) {
	f.Add(FormatTlogProof(7, [][32]byte{{9}}, []byte("o\n1\nAAAA\n\n— o x\n")))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, hashes, cp, err := ParseTlogProof(b)
		if err != nil {
			return
		}
		var hs [][32]byte
		for _, h := range hashes {
			hs = append(hs, [32]byte(h))
		}
		if idx2, hashes2, cp2, err := ParseTlogProof(FormatTlogProof(idx, hs, cp)); err != nil || idx2 != idx || len(hashes2) != len(hashes) || !bytes.Equal(cp2, cp) {
			t.Fatalf("round trip of %q failed", b)
		}
	})
}
