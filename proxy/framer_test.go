package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// chunkReader returns data in reads whose sizes cycle through sizes (0 or
// less: all that fits), then io.EOF. before, when set, runs before read i
// returns its bytes.
type chunkReader struct {
	data   []byte
	sizes  []int
	i      int
	before func(i int)
	left   int // bytes of the current chunk not yet read
}

// Read returns the input in chunks of the given sizes, as a socket
// would: a short read leaves the rest of its chunk for the next one, and
// before runs as each chunk arrives.
func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, errors.New("chunkReader: Read with an empty buffer")
	}
	if r.left == 0 {
		if r.before != nil {
			r.before(r.i)
		}
		n := len(r.data)
		if len(r.sizes) > 0 {
			if s := r.sizes[r.i%len(r.sizes)]; s > 0 {
				n = s
			}
		}
		r.left = min(n, len(r.data))
		r.i++
	}
	n := min(len(p), r.left)
	copy(p, r.data[:n])
	r.data = r.data[n:]
	r.left -= n
	return n, nil
}

// framerResult is what a cmdFramer did with some input.
type framerResult struct {
	dst     string   // forwarded to the upstream
	replies []string // answered to the client
	err     string   // how run ended: EOF, UNEXPECTEDEOF, TOOBIG or the error text
}

func errName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, errCommandTooBig):
		return "TOOBIG"
	case err == io.EOF:
		return "EOF"
	case err == io.ErrUnexpectedEOF:
		return "UNEXPECTEDEOF"
	}
	return err.Error()
}

func (r framerResult) String() string {
	return fmt.Sprintf("dst=%.200q (%d bytes) replies=%q err=%s", r.dst, len(r.dst), r.replies, r.err)
}

func runFramer(in []byte, max int, sizes []int) framerResult {
	var dst bytes.Buffer
	var res framerResult
	f := newCmdFramer(&chunkReader{data: in, sizes: sizes}, &dst, max, nil)
	f.reply = func(line string) { res.replies = append(res.replies, line) }
	res.err = errName(f.run())
	res.dst = dst.String()
	return res
}

const tooBig1024 = " BAD [TOOBIG] Command too long (max_command_size=1024)"

// cmdOf returns prefix + filler + CRLF, n bytes in all.
func cmdOf(prefix string, n int) string {
	return prefix + rep("x", n-len(prefix)-2) + "\r\n"
}

// litCmd returns prefix + "{N}\r\n" (or "{N+}") such that the announcing
// line and the literal octets are n bytes together; the caller appends
// the octets (see litBytes) and the rest of the command.
func litCmd(prefix string, n int, plus bool) (line string, lit int) {
	for _, pad := range []string{"", "0"} { // "{0999}": where the digit count jumps
		for lit = n - len(prefix) - 20; lit <= n; lit++ {
			line = prefix + "{" + pad + literalPrefix(lit, plus)[1:] + "\r\n"
			if len(line)+lit == n {
				return line, lit
			}
		}
	}
	panic(fmt.Sprintf("litCmd(%q, %d): no size fits", prefix, n))
}

// litBytes is n literal octets that look like commands and line ends, to
// catch a framer that reads into a literal.
func litBytes(n int) string {
	const pat = "\r\nz NOOP\r\n{5}\r\n\x00\xff COMPRESS DEFLATE\r\n"
	return rep(pat, n/len(pat)+1)[:n]
}

type framerCase struct {
	name    string
	in      string
	dst     string
	replies []string
	err     string
	// big: run a few chunkings only.
	big bool
	// alt is another acceptable outcome.
	alt *framerResult
}

func framerCases() []framerCase {
	noop := "b NOOP\r\n"
	var cs []framerCase
	add := func(c framerCase) { cs = append(cs, c) }
	fwd := func(name, in string) { add(framerCase{name: name, in: in, dst: in, err: "EOF"}) }

	// Plain lines.
	for _, n := range []int{1023, 1024} {
		in := cmdOf("a SEARCH TEXT ", n) + noop
		add(framerCase{name: "line " + strconv.Itoa(n), in: in, dst: in, err: "EOF"})
	}
	add(framerCase{name: "line 1025", in: cmdOf("a SEARCH TEXT ", 1025) + noop, dst: noop,
		replies: []string{"a" + tooBig1024}, err: "EOF"})
	add(framerCase{name: "line 1025 bare LF", in: cmdOf("a SEARCH TEXT ", 1026)[:1024] + "\n" + noop, dst: noop,
		replies: []string{"a" + tooBig1024}, err: "EOF"})
	add(framerCase{name: "line 100000", in: cmdOf("a SEARCH TEXT ", 100000) + noop, dst: noop,
		replies: []string{"a" + tooBig1024}, err: "EOF", big: true})

	// Synchronizing literals.
	for _, n := range []int{1023, 1024} {
		line, lit := litCmd("a SEARCH TEXT ", n-2, false)
		in := line + litBytes(lit) + "\r\n" + noop
		add(framerCase{name: "sync literal " + strconv.Itoa(n), in: in, dst: in, err: "EOF"})
	}
	{
		// The literal itself takes the command over: refused before the
		// client sends it, and its next bytes are a new command.
		line, _ := litCmd("a SEARCH TEXT ", 1025, false)
		add(framerCase{name: "sync literal over", in: line + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		line, _ = litCmd("a SEARCH TEXT ", 5000, false)
		add(framerCase{name: "sync literal far over", in: line + "b COMPRESS DEFLATE\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024, "b NO [CANNOT] COMPRESS is not available through this proxy"}, err: "EOF"})
	}
	// Non-synchronizing literals.
	for _, n := range []int{1023, 1024} {
		line, lit := litCmd("a SEARCH TEXT ", n-2, true)
		in := line + litBytes(lit) + "\r\n" + noop
		add(framerCase{name: "non-sync literal " + strconv.Itoa(n), in: in, dst: in, err: "EOF"})
	}
	{
		line, lit := litCmd("a SEARCH TEXT ", 1025, true)
		add(framerCase{name: "non-sync literal over", in: line + litBytes(lit) + "\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "non-sync literal over, more literals", in: line + litBytes(lit) + " {3+}\r\nabc ~{4+}\r\n\x00\r\n\x00\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "non-sync literal over, then sync literal", in: line + litBytes(lit) + " {3}\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		line, lit = litCmd("a SEARCH TEXT ", 300000, true)
		add(framerCase{name: "non-sync literal far over", in: line + litBytes(lit) + "\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF", big: true})
	}
	{
		// Overlong lines that end by announcing a literal.
		long := "a SEARCH TEXT " + rep("x", 2000)
		add(framerCase{name: "overlong line, sync literal", in: long + " {5}\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "overlong line, non-sync literal", in: long + " {5+}\r\nb NOO\r\nc NOOP\r\n", dst: "c NOOP\r\n",
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "overlong line, literal8", in: long + " ~{5+}\r\nb NOO\r\nc NOOP\r\n", dst: "c NOOP\r\n",
			replies: []string{"a" + tooBig1024}, err: "EOF"})
	}
	// Part of the command already went to the upstream: the session ends.
	{
		first := "a SEARCH TEXT {5+}\r\nhello"
		add(framerCase{name: "second line over", in: first + " TEXT " + rep("x", 1100) + "\r\n" + noop, dst: first, err: "TOOBIG"})
		add(framerCase{name: "second line over, bare", in: first + rep("x", 1100) + noop, dst: first, err: "TOOBIG"})
		add(framerCase{name: "second literal over", in: first + " TEXT {2000+}\r\n" + rep("x", 2000) + "\r\n" + noop, dst: first, err: "TOOBIG"})
		first = "a SEARCH TEXT {5}\r\nhello"
		add(framerCase{name: "second sync literal over", in: first + " TEXT {2000}\r\n" + noop, dst: first, err: "TOOBIG"})
	}
	// APPEND: message literals do not count; a mailbox literal does.
	{
		msg := litBytes(5 << 20)
		fwd := func(name, in string) {
			add(framerCase{name: name, in: in, dst: in, err: "EOF", big: len(in) > 100000})
		}
		fwd("append 5MB sync", "a APPEND INBOX {5242880}\r\n"+msg+"\r\n"+noop)
		fwd("append 5MB non-sync, flags and date", `a APPEND INBOX (\Seen) "01-Jan-2024 00:00:00 +0000" {5242880+}`+"\r\n"+msg+"\r\n"+noop)
		fwd("append lower case", "a append INBOX {3000+}\r\n"+msg[:3000]+"\r\n"+noop)
		fwd("append literal8", "a APPEND INBOX ~{3000+}\r\n"+msg[:3000]+"\r\n"+noop)
		fwd("multiappend", "a APPEND INBOX {3000+}\r\n"+msg[:3000]+` (\Seen) {4000+}`+"\r\n"+msg[:4000]+"\r\n"+noop)
		fwd("append mailbox literal then 3MB", "a APPEND {5}\r\nINBOX {3000000+}\r\n"+msg[:3000000]+"\r\n"+noop)
		add(framerCase{name: "append mailbox literal over", in: "a APPEND {2000}\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "append mailbox literal over, non-sync", in: "a APPEND {2000+}\r\n" + msg[:2000] + " {5+}\r\nhello\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "append mailbox literal8 over", in: "a APPEND ~{2000}\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		add(framerCase{name: "append line over", in: cmdOf("a APPEND INBOX ", 1025) + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		// Only the first line's name counts: a literal whose content reads
		// "APPEND" does not exempt the next literal.
		line, _ := litCmd("a SEARCH TEXT {6+}\r\nAPPEND TEXT ", 1025, true)
		add(framerCase{name: "not an append", in: line + noop, dst: "a SEARCH TEXT {6+}\r\nAPPEND", err: "TOOBIG"})
	}
	// Literal8 outside APPEND counts.
	{
		line, lit := litCmd("a SEARCH TEXT ", 2000, true)
		line = strings.Replace(line, "{", "~{", 1)
		add(framerCase{name: "literal8 over", in: line + litBytes(lit) + "\r\n" + noop, dst: noop,
			replies: []string{"a" + tooBig1024}, err: "EOF"})
		fwd("literal8 small", "a X ~{5}\r\n\x00\r\n\x01\xff\r\n"+noop)
	}
	// Commands the proxy answers itself.
	add(framerCase{name: "compress", in: "a COMPRESS DEFLATE\r\n" + noop, dst: noop,
		replies: []string{"a NO [CANNOT] COMPRESS is not available through this proxy"}, err: "EOF"})
	add(framerCase{name: "compress lower case", in: "x1 compress deflate\r\n" + noop, dst: noop,
		replies: []string{"x1 NO [CANNOT] COMPRESS is not available through this proxy"}, err: "EOF"})
	add(framerCase{name: "starttls", in: "a STARTTLS\r\n" + noop, dst: noop,
		replies: []string{"a BAD STARTTLS is not valid in the authenticated state"}, err: "EOF"})
	fwd("compress in a literal", "a SEARCH TEXT {20+}\r\nx COMPRESS DEFLATE\r\n\r\n"+noop)
	fwd("compress after uid", "a UID COMPRESS\r\n"+noop)
	fwd("compress as argument", "a SEARCH TEXT COMPRESS\r\n"+noop)

	// Ordinary and odd traffic passes untouched.
	fwd("idle done", "a IDLE\r\nDONE\r\n"+noop)
	fwd("fetch", "a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"+noop)
	fwd("empty literal", "a SEARCH TEXT {0}\r\n\r\n"+noop)
	fwd("empty non-sync literal", "a SEARCH TEXT {0+}\r\n {0+}\r\n\r\n"+noop)
	fwd("empty lines", "\r\n\r\n\n"+noop)
	fwd("garbage", "\x00\x01\xff\xfe garbage\r\n"+noop)
	fwd("nul", "a NO\x00OP\r\n"+noop)
	fwd("lone CR", "a NOOP\rb NOOP\r\n"+noop)
	fwd("tagged DONE", "DONE\r\n"+noop)
	fwd("http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// Malformed literal announcements are refused, never relayed as text:
	// the upstream might read a literal there that the framer cannot
	// follow (go-imap takes "{5} " as one), which would bypass the cap.
	for _, spec := range []string{"{99999999999}", "{99999999999+}", "{-1}", "{1a}", "{}", "{+}", "{4294967296}", "{5} "} {
		in := "a SEARCH TEXT " + spec + "\r\n" + noop
		add(framerCase{name: "bad literal " + spec, in: in, dst: noop, replies: []string{"a BAD Invalid literal"}, err: "EOF"})
	}
	fwd("literal with CRLF inside", "a SEARCH TEXT {12+}\r\n\r\nb NOOP\r\n\r\n"+noop)
	fwd("two literals", "a SEARCH TEXT {3}\r\nabc TEXT {4+}\r\ndefg\r\n"+noop)

	// The client stops early.
	add(framerCase{name: "eof mid-line", in: noop + "a NOOP", dst: noop, err: "EOF"})
	add(framerCase{name: "eof mid-literal", in: "a SEARCH TEXT {10+}\r\nabc", dst: "a SEARCH TEXT {10+}\r\nabc", err: "EOF"})
	add(framerCase{name: "eof mid-discard", in: cmdOf("a X ", 1500)[:1200], dst: "", err: "EOF"})
	add(framerCase{name: "empty", in: "", dst: "", err: "EOF"})
	return cs
}

func chunkings(n int, big bool) [][]int {
	if big {
		return [][]int{nil, {4096}, {100000}, {1<<20 + 3}, {1, 70000}}
	}
	cs := [][]int{nil, {1}, {2}, {3}, {5}, {7}, {13}, {64}, {1000}, {1023}, {1025}, {1, 2, 1500}}
	if n <= 3000 {
		for p := 1; p < n; p++ {
			cs = append(cs, []int{p, 1 << 30})
		}
	}
	return cs
}

func TestCmdFramer(t *testing.T) {
	for _, tt := range framerCases() {
		t.Run(tt.name, func(t *testing.T) {
			want := framerResult{dst: tt.dst, replies: tt.replies, err: tt.err}
			for _, sizes := range chunkings(len(tt.in), tt.big) {
				got := runFramer([]byte(tt.in), 1024, sizes)
				if got.dst == want.dst && reflect.DeepEqual(got.replies, want.replies) && got.err == want.err {
					continue
				}
				if a := tt.alt; a != nil && got.dst == a.dst && reflect.DeepEqual(got.replies, a.replies) && got.err == a.err {
					continue
				}
				t.Fatalf("reads %v:\n got %v\nwant %v", sizes, got, want)
			}
		})
	}
}

// Regression: a command that follows one that was too big, or one near
// the cap, starts with nothing counted, also when the framer's buffer ran
// empty at the end of the first (the usual case: a client writes a
// command, the proxy reads all of it) or holds only part of the next line.
// Counting the previous command's size there would throw away the client's
// next command and answer it with an untagged-looking " BAD [TOOBIG]".
func TestCmdFramerStaleSize(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first string
		sizes []int
		reply []string
	}{
		{"after oversize line, one command per read", cmdOf("a SEARCH TEXT ", 1025), []int{1025, 1 << 20}, []string{"a" + tooBig1024}},
		{"after oversize line, one byte per read", cmdOf("a SEARCH TEXT ", 1025), []int{1025, 1}, []string{"a" + tooBig1024}},
		{"after oversize literal", "a SEARCH TEXT {1100+}\r\n" + rep("y", 1100) + "\r\n", []int{1124, 1 << 20}, []string{"a" + tooBig1024}},
		{"after command at the cap, split first line", cmdOf("a SEARCH TEXT ", 1024), []int{1024 + 3, 1 << 20}, nil},
	} {
		in := tt.first + "b NOOP\r\n"
		got := runFramer([]byte(in), 1024, tt.sizes)
		want := framerResult{dst: strings.TrimPrefix(in, tt.first), replies: tt.reply, err: "EOF"}
		if tt.reply == nil {
			want.dst = in
		}
		if got.dst != want.dst || !reflect.DeepEqual(got.replies, want.replies) {
			t.Errorf("%s:\n got %v\nwant %v", tt.name, got, want)
		}
	}
}

// An oversize command whose first word is no valid tag: the BAD must be
// untagged, not echo up to max_command_size arbitrary client bytes.
func TestCmdFramerTooBigInvalidTag(t *testing.T) {
	for _, in := range []string{rep("y", 3000) + "\r\n", rep("\x00", 3000) + "\r\n", "a\rb " + rep("y", 3000) + "\r\n"} {
		got := runFramer([]byte(in), 1024, nil)
		want := []string{"*" + tooBig1024}
		if !reflect.DeepEqual(got.replies, want) {
			t.Errorf("%.10q: replies %.80q; want %q", in, got.replies, want)
		}
	}
}

// A command whose literal leaves no room for the CRLF that must follow it
// is doomed: it is refused with BAD (a synchronizing literal before the
// upstream is asked for "+"), rather than relayed only for the CRLF to end
// the session.
func TestCmdFramerLiteralLeavesNoRoomForCRLF(t *testing.T) {
	for _, plus := range []bool{false, true} {
		for _, n := range []int{1023, 1024} {
			line, lit := litCmd("a SEARCH TEXT ", n, plus)
			in := line
			if plus {
				in += litBytes(lit) + "\r\n"
			}
			in += "b NOOP\r\n"
			got := runFramer([]byte(in), 1024, nil)
			want := framerResult{dst: "b NOOP\r\n", replies: []string{"a" + tooBig1024}, err: "EOF"}
			if got.dst != want.dst || !reflect.DeepEqual(got.replies, want.replies) || got.err != want.err {
				t.Errorf("plus=%v line+literal=%d:\n got %v\nwant %v", plus, n, got, want)
			}
		}
	}
}

// Bytes read during login are framed first.
func TestCmdFramerInitial(t *testing.T) {
	var dst bytes.Buffer
	var replies []string
	initial := []byte("a NOOP\r\nb COMPRESS DEFLATE\r\nc SEARCH TEXT {3+}\r\nab")
	f := newCmdFramer(&chunkReader{data: []byte("c\r\nd NOOP\r\n"), sizes: []int{1}}, &dst, 1024, initial)
	f.reply = func(l string) { replies = append(replies, l) }
	if err := f.run(); err != io.EOF {
		t.Fatalf("run: %v", err)
	}
	if want := "a NOOP\r\nc SEARCH TEXT {3+}\r\nabc\r\nd NOOP\r\n"; dst.String() != want {
		t.Errorf("dst %q; want %q", dst.String(), want)
	}
	if len(replies) != 1 || !strings.HasPrefix(replies[0], "b NO [CANNOT]") {
		t.Errorf("replies %q", replies)
	}
}

// The literal gate: after a synchronizing literal was relayed, the
// upstream's answer decides what the client's next bytes are.
func TestCmdFramerGate(t *testing.T) {
	const cmd = "a SEARCH TEXT {5}\r\n"
	const next = "x COMPRESS DEFLATE\r\n" // as literal: "x COM" + "PRESS DEFLATE\r\n"
	for _, tt := range []struct {
		name     string
		upstream []string // response lines seen before the client's next bytes
		dst      string
		replies  []string
	}{
		{"rejected", []string{"* 3 EXISTS", "b OK other", "a NO [TOOBIG] Literal too big"}, cmd, []string{"x NO [CANNOT] COMPRESS is not available through this proxy"}},
		{"rejected BAD", []string{"a BAD no"}, cmd, []string{"x NO [CANNOT] COMPRESS is not available through this proxy"}},
		{"accepted", []string{"* 3 EXISTS", "+ Ready"}, cmd + next, nil},
		{"no answer yet", nil, cmd + next, nil},
		{"other tag only", []string{"ab NO x", "a"}, cmd + next, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, sizes := range [][]int{{len(cmd), 0}, {len(cmd), 1}, {len(cmd), 3}, {3, len(cmd) - 3, 2}} {
				var dst bytes.Buffer
				var replies []string
				src := &chunkReader{data: []byte(cmd + next), sizes: sizes}
				f := newCmdFramer(src, &dst, 1024, nil)
				f.reply = func(l string) { replies = append(replies, l) }
				decided := false
				src.before = func(i int) {
					if decided || !f.awaitsGo {
						return
					}
					decided = true
					if dst.String() != cmd {
						t.Errorf("awaiting the upstream's answer with %q relayed; want %q", dst.String(), cmd)
					}
					if !f.gate.waiting.Load() {
						t.Errorf("gate not waiting after the literal was announced")
					}
					rf := newRespFramer(f.gate)
					for _, l := range tt.upstream {
						rf.scan([]byte(l+"\r\n"), false)
					}
				}
				if err := f.run(); err != io.EOF {
					t.Fatalf("run: %v", err)
				}
				if dst.String() != tt.dst || !reflect.DeepEqual(replies, tt.replies) {
					t.Errorf("reads %v: dst %q replies %q; want %q %q", sizes, dst.String(), replies, tt.dst, tt.replies)
				}
				if f.gate.waiting.Load() {
					t.Errorf("gate still waiting")
				}
			}
		})
	}
}

func TestLiteralGate(t *testing.T) {
	var g literalGate
	g.open([]byte("a1"))
	if !g.waiting.Load() {
		t.Fatal("not waiting after open")
	}
	for _, l := range []string{"", "* OK", "a1", "a1x NO", "a NO", "b1 OK"} {
		g.observe([]byte(l))
		if !g.waiting.Load() {
			t.Fatalf("decided on %q", l)
		}
	}
	g.observe([]byte("a1 NO nope\r\n"))
	if g.waiting.Load() {
		t.Fatal("still waiting after the tagged answer")
	}
	if s := g.take(); s != gateRejected {
		t.Fatalf("take = %d; want rejected", s)
	}
	if s := g.take(); s != gateUnknown {
		t.Fatalf("second take = %d; want unknown", s)
	}
	g.open([]byte("a2"))
	g.observe([]byte("+ go ahead\r\n"))
	if s := g.take(); s != gateAccepted {
		t.Fatalf("take = %d; want accepted", s)
	}
	g.open([]byte("a3"))
	if s := g.take(); s != gateUnknown || g.waiting.Load() {
		t.Fatalf("take without answer = %d, waiting %v", s, g.waiting.Load())
	}
}

// ---- upstream-to-client framing ----

// refLiteral reports the literal a line (with its line end) announces,
// written independently of literalAt: "{" 1*DIGIT ["+"] "}" with an
// optional "~" before, then CRLF or LF. The digit count is free; the value
// must fit 32 bits (RFC 9051 number).
func refLiteral(line []byte) (n int64, sync, ok bool) {
	s := string(line)
	switch {
	case strings.HasSuffix(s, "\r\n"):
		s = s[:len(s)-2]
	case strings.HasSuffix(s, "\n"):
		s = s[:len(s)-1]
	}
	if !strings.HasSuffix(s, "}") {
		return 0, false, false
	}
	open := strings.LastIndex(s, "{")
	if open < 0 {
		return 0, false, false
	}
	d := s[open+1 : len(s)-1]
	sync = !strings.HasSuffix(d, "+")
	d = strings.TrimSuffix(d, "+")
	if d == "" || strings.Trim(d, "0123456789") != "" {
		return 0, false, false
	}
	v, err := strconv.ParseUint(strings.TrimLeft(d, "0")+"0", 10, 64)
	if err != nil || v/10 > 4294967295 {
		return 0, false, false
	}
	return int64(v / 10), sync, true
}

// refBoundaries returns the offsets in a response stream just after each
// complete response. Literal lengths are RFC 9051 numbers: any count of
// digits, a value that fits 32 bits (TestLiteralAtLeadingZeros).
func refBoundaries(s []byte) map[int]bool {
	b := map[int]bool{}
	for i := 0; i < len(s); {
		j := bytes.IndexByte(s[i:], '\n')
		if j < 0 {
			break
		}
		end := i + j + 1
		if n, _, ok := refLiteral(s[i:end]); ok {
			i = end + int(n)
			if n > int64(len(s)) {
				break
			}
			continue
		}
		b[end] = true
		i = end
	}
	return b
}

type relayEvent struct {
	written  int // total written after this step
	boundary int // absolute boundary reported, or -1
	mid      bool
}

// relaySim runs a respFramer the way session.copyUpstreamToClient does,
// with a buffer of bufSize, and records what it writes and reports.
func relaySim(in []byte, bufSize int, sizes []int, gate *literalGate) (out []byte, ev []relayEvent) {
	rec := &relayRecorder{}
	copyResponses(&chunkReader{data: in, sizes: sizes}, rec, newRespFramer(gate), bufSize, nil, func(int64) {})
	return rec.w.Bytes(), rec.ev
}

// relayRecorder is a responseSink that records what it is given.
type relayRecorder struct {
	w  bytes.Buffer
	ev []relayEvent
}

func (r *relayRecorder) relay(p []byte, boundary int, mid bool) error {
	before := r.w.Len()
	r.w.Write(p)
	e := relayEvent{written: r.w.Len(), boundary: -1, mid: mid}
	if boundary >= 0 {
		e.boundary = before + boundary
	}
	r.ev = append(r.ev, e)
	return nil
}

func (r *relayRecorder) copyLiteral(src io.Reader, n int64) (int64, error) {
	return io.CopyN(&r.w, src, n)
}

// checkRelay checks the reported boundaries against the reference.
func checkRelay(t *testing.T, out []byte, ev []relayEvent, checkMid bool) {
	t.Helper()
	ref := refBoundaries(out)
	prev := 0
	for _, e := range ev {
		want := -1
		for o := e.written; o > prev; o-- {
			if ref[o] {
				want = o
				break
			}
		}
		if e.boundary != want {
			t.Fatalf("bytes %d..%d: boundary %d; want %d (stream %.300q)", prev, e.written, e.boundary, want, out)
		}
		if checkMid {
			atBoundary := e.written == 0 || ref[e.written]
			if e.mid == atBoundary {
				t.Fatalf("after %d bytes: mid() = %v; the stream is at a boundary: %v (stream %.300q)", e.written, e.mid, atBoundary, out)
			}
		}
		prev = e.written
	}
}

func respStreams() map[string]string {
	body := "From: a@b\r\nSubject: {5}\r\n\r\n* 1 FETCH (BODY[] {3}\r\nabc)\r\nline\r\n"
	return map[string]string{
		"simple":            "* 3 EXISTS\r\na OK done\r\n",
		"fetch":             fmt.Sprintf("* 1 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\na OK FETCH completed\r\n", len(body), body),
		"two literals":      "* 1 FETCH (BODY[1] {3}\r\nabc BODY[2] {4}\r\nd\r\nf)\r\n* 2 FETCH (FLAGS ())\r\na OK\r\n",
		"empty literal":     "* 1 FETCH (BODY[] {0}\r\n)\r\n* LIST () \"/\" {0}\r\n\r\na OK\r\n",
		"literal8":          "* 1 FETCH (BINARY[1] ~{4}\r\n\x00\r\n\x00)\r\na OK\r\n",
		"bare LF":           "* 1 FETCH (BODY[] {2}\n\r\n)\na OK\n",
		"continuation":      "+ Ready for literal data\r\n+ idling\r\n* 4 EXISTS\r\nDONE? no\r\n",
		"long line":         "* SEARCH " + rep("1 ", 3000) + "\r\na OK\r\n",
		"long line literal": "* 1 FETCH (BODY[] " + rep("x", 2500) + " {5}\r\n{9}\r\n)\r\na OK\r\n",
		"bad literals":      "* OK {-1}\r\n* OK {99999999999}\r\n* OK {}\r\n* OK {5} \r\na OK\r\n",
		"capability":        "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\na OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] done\r\n",
		"no final CRLF":     "* 1 EXISTS\r\n* 2 EXI",
		"big literal":       "* 1 FETCH (BODY[] {200000}\r\n" + litBytes(200000) + ")\r\na OK\r\n",
	}
}

func TestRespFramerBoundaries(t *testing.T) {
	for name, s := range respStreams() {
		t.Run(name, func(t *testing.T) {
			in := []byte(s)
			var want []byte
			// Real relays use relayBufSize; a buffer must exceed holdMax.
			for _, bufSize := range []int{relayBufSize, 4096, holdMax + 64} {
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
					// buffer (TestRespFramerCapabilityAtBufferEnd): the
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
func TestRespFramerCapabilityFilterSplit(t *testing.T) {
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
// back and moves it to the front of the buffer (holdMax < relayBufSize)
// instead of passing it on in pieces that escape the filter.
func TestRespFramerCapabilityAtBufferEnd(t *testing.T) {
	filler := "* SEARCH " + rep("1 ", (relayBufSize-9-2-20)/2) + "\r\n" // ends 20 bytes before the buffer end
	in := filler + "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK\r\n"
	out, _ := relaySim([]byte(in), relayBufSize, nil, nil)
	if want := filler + "* CAPABILITY IMAP4rev1 IDLE\r\na OK\r\n"; string(out[len(filler):]) != want[len(filler):] {
		t.Errorf("got %q", out[len(filler):])
	}
}

func TestRespFramerHoldBack(t *testing.T) {
	f := newRespFramer(nil)
	p := []byte("* 1 EXISTS\r\n* CAPABILITY IMAP4rev1 COMP")
	n, done, boundary := f.scan(p, false)
	if n != len(p) || done != 12 || boundary != 12 || f.mid() {
		t.Fatalf("scan = %d, %d, %d, mid %v; want %d, 12, 12, false", n, done, boundary, f.mid(), len(p))
	}
	// With a full buffer the partial line goes on, and the framer is
	// inside it.
	n, done, boundary = f.scan(p[12:], true)
	if n != len(p)-12 || done != n || boundary != -1 || !f.mid() {
		t.Fatalf("full: scan = %d, %d, %d, mid %v", n, done, boundary, f.mid())
	}
	n, done, boundary = f.scan([]byte("RESS=DEFLATE\r\n"), false)
	if done != 14 || boundary != 14 || f.mid() {
		t.Fatalf("rest: scan = %d, %d, %d, mid %v", n, done, boundary, f.mid())
	}
	// A partial line of holdMax bytes or more is passed on.
	f = newRespFramer(nil)
	long := []byte(rep("y", holdMax))
	if _, done, _ := f.scan(long, false); done != holdMax || !f.mid() {
		t.Fatalf("long partial: done %d mid %v", done, f.mid())
	}
	if _, done, _ := f.scan([]byte("x\r\n"), false); done != 3 || f.mid() {
		t.Fatalf("end of long line: done %d mid %v", done, f.mid())
	}
}

// A literal announced at the end of a line longer than the buffer is
// still seen, wherever the announcement is split.
func TestRespFramerLongLineLiteral(t *testing.T) {
	for cut := 1; cut < 12; cut++ {
		line := "* 1 FETCH (X " + rep("x", 3000) + " {5}\r\n"
		in := line + "ab\r\nc)\r\na OK\r\n"
		f := newRespFramer(nil)
		split := len(line) - cut
		f.scan([]byte(in[:split]), true)
		_, _, b := f.scan([]byte(in[split:len(line)+5]), true)
		if b != -1 || f.litLeft != 0 {
			t.Fatalf("cut %d: boundary %d litLeft %d", cut, b, f.litLeft)
		}
		_, _, b = f.scan([]byte(in[len(line)+5:]), true)
		if b != len(in)-len(line)-5 {
			t.Fatalf("cut %d: final boundary %d", cut, b)
		}
	}
}

// The gate learns the upstream's answer from the start of response lines.
func TestRespFramerGate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"* 1 EXISTS\r\n+ Ready\r\n", gateAccepted},
		{"* 1 EXISTS\r\na NO [TOOBIG] too big\r\n", gateRejected},
		{"* 1 FETCH (BODY[] {9}\r\na NO hah)\r\n", gateUnknown},
		{"b OK\r\n", gateUnknown},
	} {
		for p := 1; p < len(tt.in); p++ {
			var g literalGate
			g.open([]byte("a"))
			relaySim([]byte(tt.in), 4096, []int{p, 1 << 30}, &g)
			if s := g.take(); s != tt.want {
				t.Errorf("%q split at %d: gate %d; want %d", tt.in, p, s, tt.want)
			}
		}
	}
	// Not waiting: nothing is recorded.
	var g literalGate
	relaySim([]byte("+ x\r\n"), 4096, nil, &g)
	if s := g.take(); s != gateUnknown {
		t.Errorf("gate decided while not waiting: %d", s)
	}
}

// After a literal ends, the response goes on (")" CRLF at least): the
// stream is not at a response boundary, so an injected line must wait.
func TestRespFramerMidAfterLiteral(t *testing.T) {
	f := newRespFramer(nil)
	f.scan([]byte("* 1 FETCH (BODY[] {5}\r\nhello"), false)
	if !f.mid() {
		t.Error("mid() = false after the literal's octets; the response has not ended")
	}
	f = newRespFramer(nil)
	f.scan([]byte("* 1 FETCH (BODY[] {0}\r\n"), false)
	if !f.mid() {
		t.Error("mid() = false after {0}; the response has not ended")
	}
	f = newRespFramer(nil)
	f.scan([]byte("* 1 FETCH (BODY[] {5}\r\nhello)"), false) // ")" held back
	if !f.mid() {
		t.Error("mid() = false with the rest of the line held back")
	}
	for p := 1; p < 40; p++ {
		in := []byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\na OK\r\n")
		out, ev := relaySim(in, 4096, []int{p, 1 << 30}, nil)
		checkRelay(t, out, ev, true)
	}
}
