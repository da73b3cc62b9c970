package line_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/linegate/linegate/internal/corpus"
	"github.com/linegate/linegate/internal/line"
)

// signVectors are LINE's signature test vectors, as the shared corpus's
// line/README.md lists them; copied here so that the test stands alone.
var signVectors = []struct{ secret, body, want string }{
	{"channel_secret", "bodybodybodybody", "/gg9a+LvFevTH1sd7XCQycD7tsWclCsInj7MhBHxN7k="},
	{"test_secret", `{"hello":"world"}`, "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM="},
}

func TestSignVectors(t *testing.T) {
	for _, tt := range signVectors {
		if got := line.Sign([]byte(tt.secret), []byte(tt.body)); got != tt.want {
			t.Errorf("Sign(%q, %q) = %s, want %s", tt.secret, tt.body, got, tt.want)
		}
		v := line.NewHMACVerifier("secret", []byte(tt.secret))
		if m, err := line.Check([]line.Verifier{v}, []byte(tt.body), tt.want); err != nil || m != v {
			t.Errorf("Check(vector) = %v, %v", m, err)
		}
	}
}

// TestSignVectorsDocumented checks the copy against the shared corpus's
// line/README.md.
func TestSignVectorsDocumented(t *testing.T) {
	doc, err := os.ReadFile(corpus.Shared(t, "line/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range signVectors {
		for _, s := range []string{tt.secret, tt.body, tt.want} {
			if !bytes.Contains(doc, []byte("`"+s+"`")) {
				t.Errorf("line/README.md does not list `%s`", s)
			}
		}
	}
}

func TestCheck(t *testing.T) {
	cur := line.NewHMACVerifier("secret", []byte("current"))
	next := line.NewHMACVerifier("next_secret", []byte("next"))
	vs := []line.Verifier{cur, next}
	body := []byte(`{"destination":"U1","events":[]}`)
	good := line.Sign([]byte("current"), body)
	// The last character before "=" carries 4 bits of the signature and 2
	// bits that must be zero; the next letter of the alphabet sets one.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	loose := good[:42] + string(alphabet[strings.IndexByte(alphabet, good[42])+1]) + "="
	tests := []struct {
		name   string
		header string
		want   line.Verifier
		err    error
	}{
		{"current", line.Sign([]byte("current"), body), cur, nil},
		{"next", line.Sign([]byte("next"), body), next, nil},
		{"other secret", line.Sign([]byte("other"), body), nil, line.ErrBadSignature},
		{"missing", "", nil, line.ErrNoSignature},
		{"not base64", "!!!", nil, line.ErrBadSignature},
		{"carriage return inside", good[:12] + "\r" + good[12:], nil, line.ErrBadSignature},
		{"line feed inside", good[:12] + "\n" + good[12:], nil, line.ErrBadSignature},
		{"padding bits set", loose, nil, line.ErrBadSignature},
		{"truncated", line.Sign([]byte("current"), body)[:20], nil, line.ErrBadSignature},
		{"other body", line.Sign([]byte("current"), append(body, ' ')), nil, line.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := line.Check(vs, body, tt.header)
			if got != tt.want || err != tt.err {
				t.Errorf("Check = %v, %v; want %v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzCheck(f *testing.F) {
	f.Add([]byte("bodybodybodybody"), "/gg9a+LvFevTH1sd7XCQycD7tsWclCsInj7MhBHxN7k=")
	f.Add([]byte(`{"hello":"world"}`), "")
	f.Add([]byte{}, "====")
	v := line.NewHMACVerifier("secret", []byte("channel_secret"))
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		m, err := line.Check([]line.Verifier{v}, body, header)
		valid := header == line.Sign([]byte("channel_secret"), body)
		if valid != (err == nil) || (err == nil) != (m != nil) {
			t.Fatalf("Check(%q, %q) = %v, %v; signature valid: %v", body, header, m, err, valid)
		}
	})
}
