package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pires/go-proxyproto"
)

// TestReadProxyHeader: headers are read whole, also a byte at a time,
// and nothing after them is consumed; what is not a header is an error.
func TestReadProxyHeader(t *testing.T) {
	v2, err := proxyproto.HeaderProxyFromAddrs(2, tcp("192.0.2.1:1000"), tcp("198.51.100.1:143")).Format()
	if err != nil {
		t.Fatal(err)
	}
	const after = "a1 NOOP\r\n"
	for _, tt := range []struct {
		name, in string
		src      string // "" = an error is wanted
	}{
		{"v1", "PROXY TCP4 192.0.2.1 198.51.100.1 1000 143\r\n", "192.0.2.1:1000"},
		{"v1 IPv6", "PROXY TCP6 2001:db8::1 2001:db8::2 1000 143\r\n", "[2001:db8::1]:1000"},
		{"v1 unknown", "PROXY UNKNOWN\r\n", "<nil>"},
		{"v2", string(v2), "192.0.2.1:1000"},
		{"v1 longest", "PROXY UNKNOWN " + strings.Repeat("f", 91) + "\r\n", "<nil>"},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("f", 92) + "\r\n", ""},
		{"v1 bad", "PROXY TCP4 192.0.2.1\r\n", ""},
		{"not a header", "a0 LOGIN x y\r\n", ""},
		{"P but not a header", "P1 NOOP\r\n", ""},
		{"empty", "", ""},
		{"v1 cut", "PROXY TCP4 192.0.2.1 198.51", ""},
		{"v2 cut", string(v2[:20]), ""},
	} {
		for _, split := range []bool{false, true} {
			name := tt.name
			if split {
				name += "/byte by byte"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = strings.NewReader(tt.in + after)
				if tt.src == "" {
					r = strings.NewReader(tt.in) // nothing after: a cut header ends in EOF
				}
				if split {
					r = iotest.OneByteReader(r)
				}
				br := bufio.NewReaderSize(r, 4096)
				h, err := readProxyHeader(br)
				if tt.src == "" {
					if err == nil {
						t.Fatalf("got header %v; want an error", h)
					}
					return
				}
				if err != nil {
					t.Fatalf("got %v; want a header", err)
				}
				if got := addrString(h.SourceAddr); got != tt.src {
					t.Errorf("source: got %s; want %s", got, tt.src)
				}
				rest, _ := io.ReadAll(br)
				if string(rest) != after {
					t.Errorf("after the header: got %q; want %q", rest, after)
				}
			})
		}
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "<nil>"
	}
	return a.String()
}

// TestSentSignature: an untrusted peer's first bytes are a header's
// signature or not, decided as soon as they differ from both; a prefix
// of a signature waits for more.
func TestSentSignature(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
		err  bool // the input ends while it is still a prefix
	}{
		{"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\n", true, false},
		{string(proxyproto.SIGV2) + "\x21\x11\x00\x0c", true, false},
		{"a1 NOOP\r\n", false, false},
		{"P1 NOOP\r\n", false, false},
		{"PROX1 NOOP\r\n", false, false},
		{"PROXYTAG NOOP\r\n", false, false},
		{"\x16\x03\x01\x02\x00", false, false},
		{"\r\n\r\nX", false, false},
		{"PRO", false, true},
		{"\r\n", false, true},
	} {
		for _, split := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if split {
				r = iotest.OneByteReader(r)
			}
			got, err := sentSignature(bufio.NewReader(r))
			if got != tt.want || (err != nil) != tt.err {
				t.Errorf("%q (byte by byte %v): got %v, %v; want %v, error %v", tt.in, split, got, err, tt.want, tt.err)
			}
		}
	}
}

// FuzzReadProxyHeader: any input gives a header or an error, never a
// panic, and a v1 header is never read past its end.
func FuzzReadProxyHeader(f *testing.F) {
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, tcp("192.0.2.1:1000"), tcp("198.51.100.1:143")).Format()
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 198.51.100.1 1000 143\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1000 143\r\n",
		"PROXY UNKNOWN\r\n",
		string(v2),
		string(proxyproto.SIGV2) + "\x20\x00\x00\x00",
		"a1 CAPABILITY\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	} {
		f.Add([]byte(s + "a1 NOOP\r\n"))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		h, err := readProxyHeader(br)
		if err == nil && h == nil {
			t.Fatal("no header and no error")
		}
		if err == nil && h.Version == 1 {
			end := bytes.IndexByte(in, '\n')
			if rest, _ := io.ReadAll(br); !bytes.Equal(rest, in[end+1:]) {
				t.Fatalf("after a v1 header: got %q; want %q", rest, in[end+1:])
			}
		}
	})
}
