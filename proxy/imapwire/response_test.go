package imapwire

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// relayBufSize is the proxy's upstream-to-client buffer.
const relayBufSize = 32 << 10

// relaySim runs a ResponseFramer the way the proxy's copy loop does, with
// a buffer of bufSize (> HoldMax) that holds a short partial line back,
// literals of 4 KiB or more copied without Scan, and records what it
// writes and reports.
func relaySim(in []byte, bufSize int, sizes []int, gate *LiteralGate) (out []byte, ev []wiretest.RelayEvent) {
	rec := &wiretest.RelayRecorder{}
	f := NewResponseFramer(gate)
	src := &wiretest.ChunkReader{Data: in, Sizes: sizes}
	buf := make([]byte, bufSize)
	carry := 0
	for {
		n, err := src.Read(buf[carry:])
		if total := carry + n; total > 0 {
			newLen, done, boundary := f.Scan(buf[:total], err != nil)
			rec.Relay(buf[:done], boundary, f.Mid())
			carry = copy(buf, buf[done:newLen])
			for carry == 0 && f.LiteralLeft() >= 4096 {
				k, _ := io.CopyN(&rec.W, src, min(f.LiteralLeft(), 10000))
				f.Skip(k)
				if k == 0 {
					break
				}
			}
		}
		if err != nil {
			return rec.W.Bytes(), rec.Events
		}
	}
}

func checkRelay(t *testing.T, out []byte, ev []wiretest.RelayEvent, checkMid bool) {
	t.Helper()
	if msg := wiretest.CheckRelay(out, ev, checkMid); msg != "" {
		t.Fatal(msg)
	}
}

func TestResponseFramerBoundaries(t *testing.T) {
	for name, s := range wiretest.ResponseStreams() {
		t.Run(name, func(t *testing.T) {
			in := []byte(s)
			var want []byte
			// Real relays use relayBufSize; a buffer must exceed HoldMax.
			for _, bufSize := range []int{relayBufSize, 4096, HoldMax + 64} {
				sizes := [][]int{nil, {1}, {2}, {3}, {7}, {100}, {4095}}
				if len(in) < 5000 {
					for p := 1; p < len(in); p++ {
						sizes = append(sizes, []int{p, 1 << 30})
					}
				}
				for _, sz := range sizes {
					out, ev := relaySim(in, bufSize, sz, nil)
					checkRelay(t, out, ev, false)
					// Short partial lines are held back even in a full
					// buffer (TestResponseFramerCapabilityAtBufferEnd): the
					// output does not depend on the buffer size either.
					if want == nil {
						want = out
					} else if !bytes.Equal(out, want) {
						t.Fatalf("buf %d reads %v: output %.200q; with other reads %.200q", bufSize, sz, out, want)
					}
				}
			}
			if !strings.Contains(strings.ToUpper(s), "COMPRESS=") && !bytes.Equal(want, in) {
				t.Errorf("output %q differs from input", want)
			}
		})
	}
}

// The capability filter needs the whole line: short partial lines are
// held back, so the filter works however the upstream's bytes are split.
func TestResponseFramerCapabilityFilterSplit(t *testing.T) {
	in := "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n" +
		"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\n" +
		"a1 OK [CAPABILITY IMAP4rev2 compress=deflate LITERAL+] Logged in\r\n" +
		"* 1 FETCH (BODY[] {45}\r\n* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n)\r\n"
	want := "* CAPABILITY IMAP4rev1 IDLE\r\n" +
		"* OK [CAPABILITY IMAP4rev1] hi\r\n" +
		"a1 OK [CAPABILITY IMAP4rev2 LITERAL+] Logged in\r\n" +
		"* 1 FETCH (BODY[] {45}\r\n* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n)\r\n"
	for p := 0; p < len(in); p++ {
		for _, sizes := range [][]int{{p, 1 << 30}, {p + 1}} {
			out, _ := relaySim([]byte(in), relayBufSize, sizes, nil)
			if string(out) != want {
				t.Fatalf("reads %v: got %q; want %q", sizes, out, want)
			}
		}
	}
}

// Regression: a capability response that straddles the end of a full
// relay buffer is still filtered. The relay holds the short partial line
// back and moves it to the front of the buffer (HoldMax < relayBufSize)
// instead of passing it on in pieces that escape the filter.
func TestResponseFramerCapabilityAtBufferEnd(t *testing.T) {
	filler := "* SEARCH " + rep("1 ", (relayBufSize-9-2-20)/2) + "\r\n" // ends 20 bytes before the buffer end
	in := filler + "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK\r\n"
	out, _ := relaySim([]byte(in), relayBufSize, nil, nil)
	if want := filler + "* CAPABILITY IMAP4rev1 IDLE\r\na OK\r\n"; string(out[len(filler):]) != want[len(filler):] {
		t.Errorf("got %q", out[len(filler):])
	}
}

func TestResponseFramerHoldBack(t *testing.T) {
	f := NewResponseFramer(nil)
	p := []byte("* 1 EXISTS\r\n* CAPABILITY IMAP4rev1 COMP")
	n, done, boundary := f.Scan(p, false)
	if n != len(p) || done != 12 || boundary != 12 || f.Mid() {
		t.Fatalf("scan = %d, %d, %d, mid %v; want %d, 12, 12, false", n, done, boundary, f.Mid(), len(p))
	}
	// With a full buffer the partial line goes on, and the framer is
	// inside it.
	n, done, boundary = f.Scan(p[12:], true)
	if n != len(p)-12 || done != n || boundary != -1 || !f.Mid() {
		t.Fatalf("full: scan = %d, %d, %d, mid %v", n, done, boundary, f.Mid())
	}
	n, done, boundary = f.Scan([]byte("RESS=DEFLATE\r\n"), false)
	if done != 14 || boundary != 14 || f.Mid() {
		t.Fatalf("rest: scan = %d, %d, %d, mid %v", n, done, boundary, f.Mid())
	}
	// A partial line of HoldMax bytes or more is passed on.
	f = NewResponseFramer(nil)
	long := []byte(rep("y", HoldMax))
	if _, done, _ := f.Scan(long, false); done != HoldMax || !f.Mid() {
		t.Fatalf("long partial: done %d mid %v", done, f.Mid())
	}
	if _, done, _ := f.Scan([]byte("x\r\n"), false); done != 3 || f.Mid() {
		t.Fatalf("end of long line: done %d mid %v", done, f.Mid())
	}
}

// A literal announced at the end of a line longer than the buffer is
// still seen, wherever the announcement is split.
func TestResponseFramerLongLineLiteral(t *testing.T) {
	for cut := 1; cut < 12; cut++ {
		line := "* 1 FETCH (X " + rep("x", 3000) + " {5}\r\n"
		in := line + "ab\r\nc)\r\na OK\r\n"
		f := NewResponseFramer(nil)
		split := len(line) - cut
		f.Scan([]byte(in[:split]), true)
		_, _, b := f.Scan([]byte(in[split:len(line)+5]), true)
		if b != -1 || f.LiteralLeft() != 0 {
			t.Fatalf("cut %d: boundary %d litLeft %d", cut, b, f.LiteralLeft())
		}
		_, _, b = f.Scan([]byte(in[len(line)+5:]), true)
		if b != len(in)-len(line)-5 {
			t.Fatalf("cut %d: final boundary %d", cut, b)
		}
	}
}

// The gate learns the upstream's answer from the start of response lines,
// and the probe's answer only from a response of its own.
func TestResponseFramerGate(t *testing.T) {
	for _, tt := range []struct {
		in     string
		want   GateState
		probed bool
	}{
		{"* 1 EXISTS\r\n+ Ready\r\n", GateAccepted, false},
		{"* 1 EXISTS\r\na NO [TOOBIG] too big\r\n", GateRejected, false},
		{"* 1 FETCH (BODY[] {9}\r\na NO hah)\r\n", GateUnknown, false},
		{"* 1 FETCH (BODY[] {9}\r\np OK hah)\r\n", GateUnknown, false},
		{"b OK\r\np OK NOOP\r\n", GateUnknown, true},
		{"b OK\r\n* 2 FETCH (BODY[] {7}\r\nc OK x)\r\np OK\r\n", GateUnknown, true},
	} {
		for p := 1; p < len(tt.in); p++ {
			var g LiteralGate
			g.open([]byte("a"), false)
			g.probe([]byte("p"))
			relaySim([]byte(tt.in), 4096, []int{p, 1 << 30}, &g)
			if s := g.take(); s != tt.want {
				t.Errorf("%q split at %d: gate %d; want %d", tt.in, p, s, tt.want)
			}
			if _, waiting := g.Probe(); waiting == tt.probed {
				t.Errorf("%q split at %d: probe answered %v; want %v", tt.in, p, !waiting, tt.probed)
			}
		}
	}
	// Not waiting: nothing is recorded.
	var g LiteralGate
	relaySim([]byte("+ x\r\n"), 4096, nil, &g)
	if s := g.take(); s != GateUnknown {
		t.Errorf("gate decided while not waiting: %d", s)
	}
}

// The answer to the proxy's probe never reaches the client, however the
// upstream's bytes are split, and the stream stays at a boundary.
func TestResponseFramerDropsProbeAnswer(t *testing.T) {
	in := "* 1 EXISTS\r\nigp OK NOOP completed\r\n* 2 EXISTS\r\n"
	for p := 1; p < len(in); p++ {
		var g LiteralGate
		g.probe([]byte("igp"))
		out, _ := relaySim([]byte(in), 4096, []int{p, 1 << 30}, &g)
		if want := "* 1 EXISTS\r\n* 2 EXISTS\r\n"; string(out) != want {
			t.Fatalf("split at %d: relayed %.80q; want %q", p, out, want)
		}
	}
}

// The proxy's own continuation request (for a client's non-synchronizing
// literal it passed on as synchronizing) never reaches the client,
// however the upstream's bytes are split, and the stream stays at a
// boundary.
func TestResponseFramerDropsOwnContinuation(t *testing.T) {
	for _, plus := range []string{"+ OK", "+ " + rep("x", 3000)} {
		in := "* 1 EXISTS\r\n" + plus + "\r\n* 2 EXISTS\r\n"
		for p := 1; p < len(in); p++ {
			var g LiteralGate
			g.open([]byte("a"), true)
			out, ev := relaySim([]byte(in), 4096, []int{p, 1 << 30}, &g)
			if want := "* 1 EXISTS\r\n* 2 EXISTS\r\n"; string(out) != want {
				t.Fatalf("split at %d: relayed %.80q; want %q", p, out, want)
			}
			checkRelay(t, out, ev, true)
			if g.take() != GateAccepted {
				t.Fatalf("split at %d: the literal is not accepted", p)
			}
		}
	}
}

// After a literal ends, the response goes on (")" CRLF at least): the
// stream is not at a response boundary, so an injected line must wait.
func TestResponseFramerMidAfterLiteral(t *testing.T) {
	f := NewResponseFramer(nil)
	f.Scan([]byte("* 1 FETCH (BODY[] {5}\r\nhello"), false)
	if !f.Mid() {
		t.Error("mid() = false after the literal's octets; the response has not ended")
	}
	f = NewResponseFramer(nil)
	f.Scan([]byte("* 1 FETCH (BODY[] {0}\r\n"), false)
	if !f.Mid() {
		t.Error("mid() = false after {0}; the response has not ended")
	}
	f = NewResponseFramer(nil)
	f.Scan([]byte("* 1 FETCH (BODY[] {5}\r\nhello)"), false) // ")" held back
	if !f.Mid() {
		t.Error("mid() = false with the rest of the line held back")
	}
	for p := 1; p < 40; p++ {
		in := []byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\na OK\r\n")
		out, ev := relaySim(in, 4096, []int{p, 1 << 30}, nil)
		checkRelay(t, out, ev, true)
	}
}

func TestResponseCode(t *testing.T) {
	for _, tt := range []struct{ rest, code, text string }{
		{" [UNAVAILABLE] Try later", "UNAVAILABLE", "Try later"},
		{"[limit] Too many", "LIMIT", "Too many"},
		{" [BADCHARSET (UTF-8 US-ASCII)] no", "BADCHARSET", "no"},
		{" [ALERT]", "ALERT", ""},
		{" []x", "", "x"},
		{" no code", "", "no code"},
		{" [UNCLOSED text", "", "[UNCLOSED text"},
		{"", "", ""},
		{"   ", "", ""},
	} {
		code, text := ResponseCode([]byte(tt.rest))
		if code != tt.code || text != tt.text {
			t.Errorf("ResponseCode(%q) = %q, %q; want %q, %q", tt.rest, code, text, tt.code, tt.text)
		}
	}
}

func TestCapsFromCode(t *testing.T) {
	for _, tt := range []struct {
		line string
		want []string
	}{
		{"* OK [CAPABILITY IMAP4rev1 IDLE] ready", []string{"IMAP4rev1", "IDLE"}},
		{"a1 OK [capability  imap4rev2   LITERAL+ ] Logged in", []string{"imap4rev2", "LITERAL+"}},
		{"* OK [CAPABILITY IMAP4rev1", nil},
		{"* OK ready", nil},
		{"* OK [CAPABILITY] ready", nil},
		{"* OK [CAPABILITY ] ready", []string{}},
		{"", nil},
	} {
		got := CapsFromCode([]byte(tt.line))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CapsFromCode(%q) = %#v; want %#v", tt.line, got, tt.want)
		}
	}
}

func TestFilterCaps(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n", "* CAPABILITY IMAP4rev1 IDLE\r\n"},
		{"* capability imap4rev1 compress=deflate\r\n", "* capability imap4rev1\r\n"},
		{"* CAPABILITY COMPRESS=DEFLATE\r\n", "* CAPABILITY\r\n"},
		{"* CAPABILITY COMPRESS=DEFLATE COMPRESS=ZSTD IMAP4rev2\r\n", "* CAPABILITY IMAP4rev2\r\n"},
		{"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE", "* CAPABILITY IMAP4rev1"},
		{"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] Dovecot ready.\r\n", "* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"},
		{"* OK [CAPABILITY COMPRESS=DEFLATE IMAP4rev1] hi\r\n", "* OK [CAPABILITY IMAP4rev1] hi\r\n"},
		{"a1 OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE COMPRESS=X IDLE] Logged in\r\n", "a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"},
		{"tag.2 ok [capability IMAP4rev1 Compress=Deflate]\r\n", "tag.2 ok [capability IMAP4rev1]\r\n"},
		// Left alone.
		{"* CAPABILITY IMAP4rev1 X-COMPRESS=FOO\r\n", "* CAPABILITY IMAP4rev1 X-COMPRESS=FOO\r\n"},
		{"* CAPABILITY IMAP4rev1 COMPRESS\r\n", "* CAPABILITY IMAP4rev1 COMPRESS\r\n"},
		{"+ OK [CAPABILITY COMPRESS=DEFLATE]\r\n", "+ OK [CAPABILITY COMPRESS=DEFLATE]\r\n"},
		{"a1 NO [CAPABILITY COMPRESS=DEFLATE] x\r\n", "a1 NO [CAPABILITY COMPRESS=DEFLATE] x\r\n"},
		{"* 1 FETCH (BODY[] \"x COMPRESS=y\")\r\n", "* 1 FETCH (BODY[] \"x COMPRESS=y\")\r\n"},
		{"* CAPABILITYCOMPRESS=X\r\n", "* CAPABILITYCOMPRESS=X\r\n"},
		{"\r\n", "\r\n"},
		{"", ""},
	} {
		line := []byte(tt.in)
		m := FilterCaps(line)
		got := string(line[:len(line)-m])
		if got != tt.want {
			t.Errorf("FilterCaps(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// The filter removes capability atoms from the code only, not from the
// human-readable text after "]".
func TestFilterCapsTextAfterCode(t *testing.T) {
	in := "a OK [CAPABILITY IMAP4rev1] try COMPRESS=DEFLATE elsewhere\r\n"
	line := []byte(in)
	m := FilterCaps(line)
	if got := string(line[:len(line)-m]); got != in {
		t.Errorf("got %q; want unchanged", got)
	}
}

func TestResponseReader(t *testing.T) {
	in := "* OK [CAPABILITY IMAP4rev1] hi\r\n* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\na OK done\r\n" +
		"* " + rep("x", 100) + "\r\n* 2 FETCH (BODY[] {50}\r\n"
	rr := NewResponseReader(bufio.NewReaderSize(strings.NewReader(in), 16), 64, 10)
	for _, want := range []string{"* OK [CAPABILITY IMAP4rev1] hi", "* 1 FETCH (BODY[] {5}", "a OK done"} {
		if got, err := rr.Read(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if _, err := rr.Read(); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("long line: got %v", err)
	}
	rr = NewResponseReader(bufio.NewReader(strings.NewReader("* 2 FETCH (BODY[] {50}\r\n")), 64, 10)
	if _, err := rr.Read(); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("large literal: got %v", err)
	}
	rr = NewResponseReader(bufio.NewReader(strings.NewReader("* 1 EXI")), 64, 10)
	if _, err := rr.Read(); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut off: got %v; want unexpected EOF", err)
	}
}
