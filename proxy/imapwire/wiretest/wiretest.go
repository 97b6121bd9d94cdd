// Package wiretest holds test streams and reference framings for the wire
// package's tests and for the proxy's copy loops, which run the same cases
// through their own buffers: client command streams with what the framer
// must forward and answer, upstream response streams, and small
// independent reference implementations of where literals and responses
// end.
package wiretest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Rep is strings.Repeat: Rep("a", 3) == "aaa".
var Rep = strings.Repeat

// ChunkReader returns Data in reads whose sizes cycle through Sizes (0 or
// less: all that fits), then io.EOF. Before, when set, runs before read i
// returns its bytes.
type ChunkReader struct {
	Data   []byte
	Sizes  []int
	Before func(i int)
	i      int
	left   int // bytes of the current chunk not yet read
}

// Read returns the input in chunks of the given sizes, as a socket
// would: a short read leaves the rest of its chunk for the next one, and
// Before runs as each chunk arrives.
func (r *ChunkReader) Read(p []byte) (int, error) {
	if len(r.Data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, errors.New("ChunkReader: Read with an empty buffer")
	}
	if r.left == 0 {
		if r.Before != nil {
			r.Before(r.i)
		}
		n := len(r.Data)
		if len(r.Sizes) > 0 {
			if s := r.Sizes[r.i%len(r.Sizes)]; s > 0 {
				n = s
			}
		}
		r.left = min(n, len(r.Data))
		r.i++
	}
	n := min(len(p), r.left)
	copy(p, r.Data[:n])
	r.Data = r.Data[n:]
	r.left -= n
	return n, nil
}

// RepeatReader serves Data N times, in reads of at most Chunk bytes (0:
// as much as fits), then io.EOF: the steady stream of a benchmark.
type RepeatReader struct {
	Data  []byte
	N     int
	Chunk int
	off   int
}

func (r *RepeatReader) Read(p []byte) (int, error) {
	if r.N == 0 {
		return 0, io.EOF
	}
	if r.Chunk > 0 && len(p) > r.Chunk {
		p = p[:r.Chunk]
	}
	total := 0
	for len(p) > 0 && r.N > 0 {
		k := copy(p, r.Data[r.off:])
		p = p[k:]
		total += k
		r.off += k
		if r.off == len(r.Data) {
			r.off = 0
			r.N--
		}
	}
	return total, nil
}

// Chunkings are the read sizes a case of n bytes is run with; big cases
// get a few only.
func Chunkings(n int, big bool) [][]int {
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

// TooBig1024 is the end of the answer to an oversize command with
// max_command_size 1024, after its tag.
const TooBig1024 = " BAD [TOOBIG] Command too long (max_command_size=1024)"

// CmdOf returns prefix + filler + CRLF, n bytes in all.
func CmdOf(prefix string, n int) string {
	return prefix + Rep("x", n-len(prefix)-2) + "\r\n"
}

// LitCmd returns prefix + "{N}\r\n" (or "{N+}") such that the announcing
// line and the literal octets are n bytes together; the caller appends
// the octets (see LitBytes) and the rest of the command.
func LitCmd(prefix string, n int, plus bool) (line string, lit int) {
	for _, pad := range []string{"", "0"} { // "{0999}": where the digit count jumps
		for lit = n - len(prefix) - 20; lit <= n; lit++ {
			spec := strconv.Itoa(lit)
			if plus {
				spec += "+"
			}
			line = prefix + "{" + pad + spec + "}\r\n"
			if len(line)+lit == n {
				return line, lit
			}
		}
	}
	panic(fmt.Sprintf("LitCmd(%q, %d): no size fits", prefix, n))
}

// LitBytes is n literal octets that look like commands and line ends, to
// catch a framer that reads into a literal.
func LitBytes(n int) string {
	const pat = "\r\nz NOOP\r\n{5}\r\n\x00\xff COMPRESS DEFLATE\r\n"
	return Rep(pat, n/len(pat)+1)[:n]
}

// Framed is what a command framer did with a stream: the bytes it
// forwarded, the answers it gave (lines without CRLF) and how it ended:
// EOF, UNEXPECTEDEOF, TOOBIG (the session cannot go on) or an error's
// text.
type Framed struct {
	Dst     string
	Replies []string
	Err     string
}

func (r Framed) String() string {
	return fmt.Sprintf("dst=%.200q (%d bytes) replies=%q err=%s", r.Dst, len(r.Dst), r.Replies, r.Err)
}

// Equal compares two results.
func (r Framed) Equal(o Framed) bool {
	if r.Dst != o.Dst || r.Err != o.Err || len(r.Replies) != len(o.Replies) {
		return false
	}
	for i := range r.Replies {
		if r.Replies[i] != o.Replies[i] {
			return false
		}
	}
	return true
}

// CommandCase is a client command stream framed with max_command_size
// 1024, and what must come of it. The upstream behind the framer accepts
// every literal and IDLE ("+"), except those of the commands tagged in
// Reject, which it ends with a tagged NO instead, and answers every
// command.
type CommandCase struct {
	Name   string
	In     string
	Reject []string
	Want   Framed
	// Big: run a few chunkings only.
	Big bool
}

// Synced is s, a stream the proxy passes on, with every literal
// announcement "{N+}" written "{N}": the proxy waits for the upstream's
// "+" to every literal.
func Synced(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		j := strings.IndexByte(s, '\n')
		if j < 0 {
			b.WriteString(s)
			break
		}
		line := s[:j+1]
		s = s[j+1:]
		n, sync, ok := RefLiteral([]byte(line))
		if ok && !sync {
			k := strings.LastIndexByte(line, '+')
			line = line[:k] + line[k+1:]
		}
		b.WriteString(line)
		if ok {
			take := min(int(n), len(s))
			b.WriteString(s[:take])
			s = s[take:]
		}
	}
	return b.String()
}

// CommandCases are the command framer's cases.
func CommandCases() []CommandCase {
	noop := "b NOOP\r\n"
	var cs []CommandCase
	add := func(name, in, dst string, replies []string, err string) {
		cs = append(cs, CommandCase{Name: name, In: in, Want: Framed{Dst: Synced(dst), Replies: replies, Err: err}, Big: len(in) > 100000})
	}
	fwd := func(name, in string) { add(name, in, in, nil, "EOF") }
	refused := func(name, in, dst string, replies ...string) { add(name, in, dst, replies, "EOF") }
	tooBig := "a" + TooBig1024

	// Plain lines.
	for _, n := range []int{1023, 1024} {
		fwd("line "+strconv.Itoa(n), CmdOf("a SEARCH TEXT ", n)+noop)
	}
	refused("line 1025", CmdOf("a SEARCH TEXT ", 1025)+noop, noop, tooBig)
	refused("line 1025 bare LF", CmdOf("a SEARCH TEXT ", 1026)[:1024]+"\n"+noop, noop, tooBig)
	refused("line 100000", CmdOf("a SEARCH TEXT ", 100000)+noop, noop, tooBig)

	// Synchronizing literals.
	for _, n := range []int{1023, 1024} {
		line, lit := LitCmd("a SEARCH TEXT ", n-2, false)
		fwd("sync literal "+strconv.Itoa(n), line+LitBytes(lit)+"\r\n"+noop)
	}
	{
		// The literal itself takes the command over: refused before the
		// client sends it, and its next bytes are a new command.
		line, _ := LitCmd("a SEARCH TEXT ", 1025, false)
		refused("sync literal over", line+noop, noop, tooBig)
		line, _ = LitCmd("a SEARCH TEXT ", 5000, false)
		refused("sync literal far over", line+"b COMPRESS DEFLATE\r\n"+noop, noop,
			tooBig, "b NO [CANNOT] COMPRESS is not available through this proxy")
	}
	// Non-synchronizing literals.
	for _, n := range []int{1023, 1024} {
		line, lit := LitCmd("a SEARCH TEXT ", n-2, true)
		fwd("non-sync literal "+strconv.Itoa(n), line+LitBytes(lit)+"\r\n"+noop)
	}
	{
		line, lit := LitCmd("a SEARCH TEXT ", 1025, true)
		refused("non-sync literal over", line+LitBytes(lit)+"\r\n"+noop, noop, tooBig)
		refused("non-sync literal over, more literals", line+LitBytes(lit)+" {3+}\r\nabc ~{4+}\r\n\x00\r\n\x00\r\n"+noop, noop, tooBig)
		refused("non-sync literal over, then sync literal", line+LitBytes(lit)+" {3}\r\n"+noop, noop, tooBig)
		line, lit = LitCmd("a SEARCH TEXT ", 300000, true)
		refused("non-sync literal far over", line+LitBytes(lit)+"\r\n"+noop, noop, tooBig)
	}
	{
		// Overlong lines that end by announcing a literal.
		long := "a SEARCH TEXT " + Rep("x", 2000)
		refused("overlong line, sync literal", long+" {5}\r\n"+noop, noop, tooBig)
		refused("overlong line, non-sync literal", long+" {5+}\r\nb NOO\r\nc NOOP\r\n", "c NOOP\r\n", tooBig)
		refused("overlong line, literal8", long+" ~{5+}\r\nb NOO\r\nc NOOP\r\n", "c NOOP\r\n", tooBig)
	}
	// Part of the command already went to the upstream: the session ends.
	{
		first := "a SEARCH TEXT {5+}\r\nhello"
		add("second line over", first+" TEXT "+Rep("x", 1100)+"\r\n"+noop, first, nil, "TOOBIG")
		add("second line over, bare", first+Rep("x", 1100)+noop, first, nil, "TOOBIG")
		add("second literal over", first+" TEXT {2000+}\r\n"+Rep("x", 2000)+"\r\n"+noop, first, nil, "TOOBIG")
		first = "a SEARCH TEXT {5}\r\nhello"
		add("second sync literal over", first+" TEXT {2000}\r\n"+noop, first, nil, "TOOBIG")
	}
	// APPEND: message literals do not count; a mailbox literal does.
	{
		msg := LitBytes(5 << 20)
		fwd("append 5MB sync", "a APPEND INBOX {5242880}\r\n"+msg+"\r\n"+noop)
		fwd("append 5MB non-sync, flags and date", `a APPEND INBOX (\Seen) "01-Jan-2024 00:00:00 +0000" {5242880+}`+"\r\n"+msg+"\r\n"+noop)
		fwd("append lower case", "a append INBOX {3000+}\r\n"+msg[:3000]+"\r\n"+noop)
		fwd("append literal8", "a APPEND INBOX ~{3000+}\r\n"+msg[:3000]+"\r\n"+noop)
		fwd("multiappend", "a APPEND INBOX {3000+}\r\n"+msg[:3000]+` (\Seen) {4000+}`+"\r\n"+msg[:4000]+"\r\n"+noop)
		fwd("append mailbox literal then 3MB", "a APPEND {5}\r\nINBOX {3000000+}\r\n"+msg[:3000000]+"\r\n"+noop)
		refused("append mailbox literal over", "a APPEND {2000}\r\n"+noop, noop, tooBig)
		refused("append mailbox literal over, non-sync", "a APPEND {2000+}\r\n"+msg[:2000]+" {5+}\r\nhello\r\n"+noop, noop, tooBig)
		refused("append mailbox literal8 over", "a APPEND ~{2000}\r\n"+noop, noop, tooBig)
		refused("append line over", CmdOf("a APPEND INBOX ", 1025)+noop, noop, tooBig)
		// Only the first line's name counts: a literal whose content reads
		// "APPEND" does not exempt the next literal.
		line, _ := LitCmd("a SEARCH TEXT {6+}\r\nAPPEND TEXT ", 1025, true)
		add("not an append", line+noop, "a SEARCH TEXT {6+}\r\nAPPEND", nil, "TOOBIG")
	}
	// Literal8 outside APPEND counts.
	{
		line, lit := LitCmd("a SEARCH TEXT ", 2000, true)
		line = strings.Replace(line, "{", "~{", 1)
		refused("literal8 over", line+LitBytes(lit)+"\r\n"+noop, noop, tooBig)
		fwd("literal8 small", "a X ~{5}\r\n\x00\r\n\x01\xff\r\n"+noop)
	}
	// Commands the proxy answers itself.
	refused("compress", "a COMPRESS DEFLATE\r\n"+noop, noop, "a NO [CANNOT] COMPRESS is not available through this proxy")
	refused("compress lower case", "x1 compress deflate\r\n"+noop, noop, "x1 NO [CANNOT] COMPRESS is not available through this proxy")
	refused("starttls", "a STARTTLS\r\n"+noop, noop, "a BAD STARTTLS is not valid in the authenticated state")
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
		refused("bad literal "+spec, "a SEARCH TEXT "+spec+"\r\n"+noop, noop, "a BAD Invalid literal")
	}
	fwd("literal with CRLF inside", "a SEARCH TEXT {12+}\r\n\r\nb NOOP\r\n\r\n"+noop)
	fwd("two literals", "a SEARCH TEXT {3}\r\nabc TEXT {4+}\r\ndefg\r\n"+noop)

	// The framer reads commands as the upstream does (issue 10). A
	// literal-shaped end where no argument can start is refused, and a
	// non-synchronizing one's announced octets are skipped, not passed
	// on: an upstream would run them as commands.
	hidden := "b2 SEARCH TEXT " + Rep("A", 3000) + "\r\n"
	skipped := func(prefix string) string {
		return prefix + "{" + strconv.Itoa(len(hidden)) + "+}\r\n" + hidden + "\r\n" + noop
	}
	invalid := func(tag string) string { return tag + " BAD Invalid literal" }
	refused("literal glued to an atom", skipped("a2 APPEND INBOX x"), noop, invalid("a2"))
	refused("literal in an unterminated quoted string", skipped(`a3 APPEND INBOX "x `), noop, invalid("a3"))
	refused("literal as the command name", skipped("a4 "), noop, invalid("a4"))
	refused("literal after a bracket", "a5 FETCH 1 BODY[{5}\r\n"+noop, noop, invalid("a5"))
	refused("NOOP with a literal", "a1 NOOP {21+}\r\nb1 COMPRESS DEFLATE\r\n\r\n"+noop, noop, invalid("a1"))
	refused("IDLE with a literal", "i IDLE {3}\r\n"+noop, noop, invalid("i"))
	refused("LOGOUT with a literal", "o LOGOUT {3+}\r\nabc\r\n"+noop, noop, invalid("o"))
	refused("COMPRESS with a literal", "a COMPRESS {5+}\r\nb NOO\r\n"+noop, noop, "a NO [CANNOT] COMPRESS is not available through this proxy")
	fwd("literal after a parenthesis", "a FETCH 1 (BODY[HEADER.FIELDS ({4}\r\nDATE)])\r\n"+noop)
	fwd("literal after an escaped quote", `a SEARCH TEXT "a\"b" TEXT {3}`+"\r\nabc\r\n"+noop)
	fwd("brace in a quoted string", `a SEARCH TEXT "x {3}"`+"\r\n"+noop)

	// The upstream decides whether a literal follows. Refused, a
	// synchronizing literal's octets sent anyway are the next commands,
	// checked as such; a non-synchronizing one's are thrown away with the
	// rest of the command.
	rejected := func(name, in, dst string, replies ...string) {
		cs = append(cs, CommandCase{Name: name, In: in, Reject: []string{"a"}, Want: Framed{Dst: Synced(dst), Replies: replies, Err: "EOF"}})
	}
	line := "a APPEND nonexist {20}\r\n"
	rejected("rejected sync literal sent anyway", line+"b COMPRESS DEFLATE\r\n"+noop, line+noop,
		"b NO [CANNOT] COMPRESS is not available through this proxy")
	line = "a APPEND nonexist {" + strconv.Itoa(len(hidden)) + "}\r\n"
	rejected("rejected sync literal sent anyway, over the cap", line+hidden+noop, line+noop, "b2"+TooBig1024)
	rejected("rejected non-sync literal", skipped("a APPEND nonexist "), "a APPEND nonexist {"+strconv.Itoa(len(hidden))+"}\r\n"+noop)
	rejected("rejected non-sync literal, more literals", "a APPEND nonexist {5+}\r\nhello {3+}\r\nabc\r\n"+noop, "a APPEND nonexist {5}\r\n"+noop)
	rejected("IDLE refused", "a IDLE\r\nb COMPRESS DEFLATE\r\n"+noop, "a IDLE\r\n"+noop,
		"b NO [CANNOT] COMPRESS is not available through this proxy")

	// After the upstream accepted IDLE, only DONE ends it.
	refused("IDLE ended by something else", "i IDLE\r\nb COMPRESS DEFLATE\r\nc SEARCH {5+}\r\nDONE\r\n"+noop,
		"i IDLE\r\nDONE\r\n"+noop, "* BAD Expected DONE", "* BAD Expected DONE")
	fwd("IDLE ended by done", "i IDLE\r\ndone\n"+noop)

	// The client stops early.
	add("eof mid-line", noop+"a NOOP", noop, nil, "EOF")
	add("eof mid-literal", "a SEARCH TEXT {10+}\r\nabc", "a SEARCH TEXT {10+}\r\nabc", nil, "EOF")
	add("eof mid-discard", CmdOf("a X ", 1500)[:1200], "", nil, "EOF")
	add("empty", "", "", nil, "EOF")
	return cs
}

// CommandSeeds are client command streams for the fuzzers: RFC 9051
// examples and nasty input.
func CommandSeeds() []string {
	rfc := []string{
		"A001 LOGIN SMITH SESAME\r\n",
		"a002 select inbox\r\na003 fetch 12 full\r\na004 fetch 12 body[header]\r\n",
		"A142 SELECT INBOX\r\nA202 LIST \"\" *\r\nA654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
		"A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
		"A284 SEARCH CHARSET UTF-8 TEXT {12}\r\n\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x96\x87\r\n",
		"A003 APPEND saved-messages (\\Seen) {65}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nSubject: afternoon\r\n\r\n",
		"A003 APPEND saved-messages (\\Seen) {65+}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nSubject: afternoon\r\n\r\n",
		"a IDLE\r\nDONE\r\n",
		"A004 STORE 2:4 +FLAGS (\\Deleted)\r\nA005 EXPUNGE\r\nA006 LOGOUT\r\n",
		"a COMPRESS DEFLATE\r\nb STARTTLS\r\nc NOOP\r\n",
		"a APPEND {5}\r\nINBOX {10+}\r\n0123456789\r\n",
		"a APPEND INBOX ~{4+}\r\n\x00\x01\x02\x03\r\n",
		"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
	}
	nasty := []string{
		"", "\r\n", "\n", "\r", "\x00\x00\x00\r\n", "\xff\xfe\xfd garbage\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"a SEARCH TEXT {99999999999}\r\n", "a SEARCH TEXT {99999999999+}\r\n", "a SEARCH TEXT {4294967295+}\r\nabc",
		"a SEARCH TEXT {-1}\r\n", "a SEARCH TEXT {1a}\r\n", "a SEARCH TEXT {}\r\n", "a SEARCH TEXT ~{5}\r\nabcde\r\n",
		"a SEARCH TEXT {00000000005}\r\nabcde\r\n",
		"a NOOP", "a NOOP\rb NOOP\r\n", "DONE\r\n",
		"a " + Rep("x", 5000) + "\r\nb NOOP\r\n",
		"a " + Rep("x", 5000) + " {5+}\r\nabcde\r\nb NOOP\r\n",
		"a X {3}\r\n{3}\r\n{3}\r\n\r\n",
		"a X {3+}\r\n{3+}\r\n{3+}\r\n\r\nb NOOP\r\n",
		"a SEARCH TEXT {1100+}\r\n" + Rep("y", 1100) + "\r\nb NOOP\r\n",
		"a SEARCH TEXT {5+}\r\nhello TEXT " + Rep("x", 1100) + "\r\n",
		"a APPEND {2000+}\r\n" + Rep("m", 2000) + " {5+}\r\nhello\r\nb NOOP\r\n",
		Rep("a NOOP\r\n", 200),
	}
	return append(rfc, nasty...)
}

// RefLiteral reports the literal a line (with its line end) announces,
// written independently of imapwire.LiteralAt: "{" 1*DIGIT ["+"] "}" with
// an optional "~" before, then CRLF or LF. The digit count is free; the
// value must fit 32 bits (RFC 9051 number).
func RefLiteral(line []byte) (n int64, sync, ok bool) {
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

// RefCommand is one command as the upstream frames it.
type RefCommand struct {
	Size     int // octets that count toward max_command_size
	Complete bool
}

// RefCommands frames a client-to-upstream stream the way an upstream does
// (lines, literals, APPEND message literals exempt), independently of the
// framer.
func RefCommands(s []byte) []RefCommand {
	var out []RefCommand
	for len(s) > 0 {
		var c RefCommand
		first := true
		isAppend, mbox := false, false
		for {
			j := bytes.IndexByte(s, '\n')
			if j < 0 {
				c.Size += len(s)
				s = nil
				break
			}
			line := s[:j+1]
			s = s[j+1:]
			c.Size += len(line)
			if first {
				f := strings.SplitN(string(line), " ", 3)
				if len(f) >= 2 && strings.EqualFold(strings.TrimRight(f[1], "\r\n"), "APPEND") {
					isAppend = true
					rest := ""
					if len(f) == 3 {
						rest = strings.TrimLeft(f[2], " ")
					}
					mbox = strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, "~{")
				}
			}
			n, _, ok := RefLiteral(line)
			if !ok {
				c.Complete = true
				break
			}
			if !isAppend || (first && mbox) {
				c.Size += int(n)
			}
			first = false
			if n > int64(len(s)) {
				s = nil
				break
			}
			s = s[n:]
		}
		out = append(out, c)
	}
	return out
}

// RefBoundaries returns the offsets in a response stream just after each
// complete response.
func RefBoundaries(s []byte) map[int]bool {
	b := map[int]bool{}
	for i := 0; i < len(s); {
		j := bytes.IndexByte(s[i:], '\n')
		if j < 0 {
			break
		}
		end := i + j + 1
		if n, _, ok := RefLiteral(s[i:end]); ok {
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

// IsSubsequence reports whether sub is s with some octets left out.
func IsSubsequence(sub, s []byte) bool {
	for _, c := range sub {
		i := bytes.IndexByte(s, c)
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
	return true
}

// ResponseStreams are upstream response streams, by name.
func ResponseStreams() map[string]string {
	body := "From: a@b\r\nSubject: {5}\r\n\r\n* 1 FETCH (BODY[] {3}\r\nabc)\r\nline\r\n"
	return map[string]string{
		"simple":            "* 3 EXISTS\r\na OK done\r\n",
		"fetch":             fmt.Sprintf("* 1 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\na OK FETCH completed\r\n", len(body), body),
		"two literals":      "* 1 FETCH (BODY[1] {3}\r\nabc BODY[2] {4}\r\nd\r\nf)\r\n* 2 FETCH (FLAGS ())\r\na OK\r\n",
		"empty literal":     "* 1 FETCH (BODY[] {0}\r\n)\r\n* LIST () \"/\" {0}\r\n\r\na OK\r\n",
		"literal8":          "* 1 FETCH (BINARY[1] ~{4}\r\n\x00\r\n\x00)\r\na OK\r\n",
		"bare LF":           "* 1 FETCH (BODY[] {2}\n\r\n)\na OK\n",
		"continuation":      "+ Ready for literal data\r\n+ idling\r\n* 4 EXISTS\r\nDONE? no\r\n",
		"long line":         "* SEARCH " + Rep("1 ", 3000) + "\r\na OK\r\n",
		"long line literal": "* 1 FETCH (BODY[] " + Rep("x", 2500) + " {5}\r\n{9}\r\n)\r\na OK\r\n",
		"bad literals":      "* OK {-1}\r\n* OK {99999999999}\r\n* OK {}\r\n* OK {5} \r\na OK\r\n",
		"capability":        "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\na OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] done\r\n",
		"no final CRLF":     "* 1 EXISTS\r\n* 2 EXI",
		"big literal":       "* 1 FETCH (BODY[] {200000}\r\n" + LitBytes(200000) + ")\r\na OK\r\n",
	}
}

// ResponseSeeds are upstream response streams for the fuzzers.
func ResponseSeeds() []string {
	return []string{
		"* OK [CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI] IMAP4rev2 Service Ready\r\n",
		"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED COMPRESS=DEFLATE\r\nabcd OK CAPABILITY completed\r\n",
		"* 172 EXISTS\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\nA142 OK [READ-WRITE] SELECT completed\r\n",
		"* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and minutes\" NIL NIL NIL NIL NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\na003 OK FETCH completed\r\n",
		"* 12 FETCH (BODY[HEADER] {42}\r\nDate: Wed, 17 Jul 1996 02:23:25 -0700\r\n\r\n)\r\na004 OK FETCH completed\r\n",
		"+ Ready for additional command text\r\n",
		"* LIST () \"/\" {5}\r\nfoo\r\n\r\n* LIST () \"/\" {0}\r\n\r\nA OK\r\n",
		"* 1 FETCH (BINARY[1] ~{4}\r\n\x00\r\n\x00)\r\n",
		"* 1 FETCH (BODY[] {3}\r\n{3}\r\n BODY[1] {0}\r\n)\r\n",
		"* 1 FETCH (BODY[] {99999999999}\r\n)\r\n* OK {-1}\r\n* OK {1a}\r\n* OK {}\r\n",
		"* 1 FETCH (BODY[] {00000000003}\r\nabc)\r\n",
		"* SEARCH " + Rep("1 ", 3000) + "{5}\r\nabcde\r\n",
		"* 1 EXISTS\r\n* 2 EXI",
		"\x00\xff\r\r\n\n",
		"a OK [CAPABILITY IMAP4rev1] try COMPRESS=DEFLATE\r\n",
	}
}

// RelayEvent is one write of a response copier: the bytes written so far,
// the boundary it reported (absolute, or -1) and whether it said the
// stream is inside a response.
type RelayEvent struct {
	Written  int
	Boundary int
	Mid      bool
}

// RelayRecorder records what a response copier writes: the bytes, and
// for each write where the last complete response ends.
type RelayRecorder struct {
	W      bytes.Buffer
	Events []RelayEvent
}

// Relay records p, with boundary the offset in p after its last complete
// response (-1 if none).
func (r *RelayRecorder) Relay(p []byte, boundary int, mid bool) {
	before := r.W.Len()
	r.W.Write(p)
	e := RelayEvent{Written: r.W.Len(), Boundary: -1, Mid: mid}
	if boundary >= 0 {
		e.Boundary = before + boundary
	}
	r.Events = append(r.Events, e)
}

// CheckRelay returns what is wrong with the reported boundaries (and with
// checkMid, the reported inside-a-response state) of out, against
// RefBoundaries, or "".
func CheckRelay(out []byte, ev []RelayEvent, checkMid bool) string {
	ref := RefBoundaries(out)
	prev := 0
	for _, e := range ev {
		want := -1
		for o := e.Written; o > prev; o-- {
			if ref[o] {
				want = o
				break
			}
		}
		if e.Boundary != want {
			return fmt.Sprintf("bytes %d..%d: boundary %d; want %d (stream %.300q)", prev, e.Written, e.Boundary, want, out)
		}
		if checkMid {
			atBoundary := e.Written == 0 || ref[e.Written]
			if e.Mid == atBoundary {
				return fmt.Sprintf("after %d bytes: mid = %v; the stream is at a boundary: %v (stream %.300q)", e.Written, e.Mid, atBoundary, out)
			}
		}
		prev = e.Written
	}
	return ""
}
