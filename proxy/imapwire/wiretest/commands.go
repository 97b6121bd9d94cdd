package wiretest

import (
	"fmt"
	"strconv"
	"strings"
)

// Command streams and what the command framer must make of them.

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

// Probe stands for the proxy's probe (see imapwire.LiteralGate) in a
// stream the proxy passes on: the tests' upstreams answer it, and their
// drivers write this in its place (its tag is random).
const Probe = "<probe>\r\n"

// Synced is s, a stream the proxy passes on, with every literal
// announcement "{N+}" written "{N}", as the proxy waits for the
// upstream's "+" to every literal, and a Probe before each command that
// waits for a "+" (a literal, IDLE) when another command went on since
// the last probe.
func Synced(s string) string {
	var b strings.Builder
	dirty, inCmd := false, false
	for len(s) > 0 {
		j := strings.IndexByte(s, '\n')
		if j < 0 {
			b.WriteString(s)
			break
		}
		line := s[:j+1]
		s = s[j+1:]
		n, sync, ok := RefLiteral([]byte(line))
		if !inCmd {
			_, name, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			name, _, _ = strings.Cut(name, " ")
			if (ok || strings.EqualFold(name, "IDLE")) && dirty {
				b.WriteString(Probe)
			}
			dirty = true
		}
		inCmd = ok
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
		refused("append mailbox literal8", "a APPEND ~{2000}\r\n"+noop, noop, "a BAD Invalid APPEND arguments")
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
	// Dovecot ends a tag or a command name at a CR: "a IDLE\rx" is IDLE.
	refused("lone CR", "a NOOP\rb NOOP\r\n"+noop, noop, "a BAD CR without LF in a command")
	refused("lone CR in IDLE", "0 IDLE\r0\r\n"+noop, noop, "0 BAD CR without LF in a command")
	// A line that ends inside a quoted string: where Dovecot goes on
	// reading after it depends on how the bytes arrived.
	refused("open quote", "a APPEND INBOX (\\Seen) \"01-Jan-\r\n"+noop, noop, "a BAD Unterminated quoted string")
	refused("open quote after escape", "a SEARCH TEXT \"x\\\"\r\n"+noop, noop, "a BAD Unterminated quoted string")
	fwd("closed quotes", "a SEARCH TEXT \"x\\\"y\" SUBJECT \"\"\r\n"+noop)
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
	// A "{" anywhere else outside a quoted string: Dovecot reads a
	// literal wherever an argument starts and answers "+" to "{3}" before
	// it finds no CRLF after it.
	refused("literal announcement inside a line", "a SEARCH TEXT {3} {5+}\r\nhello\r\n"+noop, noop, invalid("a"))
	refused("literal announcement glued to an atom inside a line", "a SEARCH TEXT {3}x {5+}\r\nhello\r\n"+noop, noop, invalid("a"))
	refused("literal announcement inside a line without a literal", "a SEARCH TEXT {3} x\r\n"+noop, noop, invalid("a"))
	refused("brace in an atom", "a SEARCH TEXT x{y\r\n"+noop, noop, invalid("a"))
	add("brace in a continuation line", "a SEARCH TEXT {3+}\r\nabc {3} TEXT {5+}\r\nhello\r\n"+noop,
		"a SEARCH TEXT {3+}\r\nabc", nil, "INVALID")
	fwd("brace in a quoted string before a literal", `a SEARCH TEXT "{3}" TEXT {5+}`+"\r\nhello\r\n"+noop)
	// A command that waits for the upstream's "+" or tagged answer must
	// have a tag the upstream answers with: Dovecot answers "]" in a tag
	// (which RFC 9051 allows) and an invalid tag with an untagged BAD.
	refused("tag with ] before a literal", "a] SEARCH TEXT {5+}\r\nhello\r\n"+noop, noop, "a] BAD Invalid tag for a literal or IDLE")
	refused("tag with ] on IDLE", "a] IDLE\r\n"+noop, noop, "a] BAD Invalid tag for a literal or IDLE")
	refused("IDLE with an invalid tag", "(x IDLE\r\n"+noop, noop, "* BAD Invalid tag for a literal or IDLE")
	fwd("tag with ] without a literal", "a] NOOP\r\n"+noop)
	// APPEND's arguments up to each literal (Dovecot reads the literal of
	// arguments it cannot parse without sending "+").
	{
		bad := "a BAD Invalid APPEND arguments"
		fwd("append catenate", `a APPEND INBOX CATENATE (URL "/INBOX;UID=1" TEXT {5+}`+"\r\nhello URL x)\r\n"+noop)
		fwd("append catenate then a message", "a APPEND INBOX (\\Seen) CATENATE (TEXT {5+}\r\nhello) () {3+}\r\nabc\r\n"+noop)
		fwd("append catenate URL literal", "a APPEND INBOX CATENATE (URL {3}\r\n/;x TEXT {5}\r\nhello)\r\n"+noop)
		fwd("append quoted mailbox, empty flags", `a APPEND "Sent Items" () {5}`+"\r\nhello\r\n"+noop)
		fwd("append without a literal", "a APPEND INBOX x\r\n"+noop)
		refused("append with an atom before the literal", "a APPEND INBOX x {5+}\r\nhello\r\n"+noop, noop, bad)
		refused("append with two flag lists", `a APPEND INBOX (\Seen) (\Seen) {5}`+"\r\n"+noop, noop, bad)
		refused("append with an unquoted date", "a APPEND INBOX () 01-Jan-2024 {5}\r\n"+noop, noop, bad)
		refused("append with a literal in the flags", "a APPEND INBOX ({5}\r\n"+noop, noop, bad)
		refused("append with a bad escape in the date", `a APPEND INBOX "\x" {5}`+"\r\n"+noop, noop, bad)
		refused("append catenate with junk", "a APPEND INBOX CATENATE (TEXT x {5}\r\n"+noop, noop, bad)
		refused("append catenate empty", "a APPEND INBOX CATENATE () {5}\r\n"+noop, noop, bad)
		refused("append utf8", "a APPEND INBOX UTF8 (~{5+}\r\nhello)\r\n"+noop, noop,
			"a NO [CANNOT] APPEND UTF8 is not available through this proxy")
		// Part of the command went on: the session ends.
		first := "a APPEND INBOX {5+}\r\nhello"
		add("multiappend with junk", first+" x {5+}\r\nworld\r\n"+noop, first, nil, "INVALID")
		first = "a APPEND INBOX CATENATE (TEXT {5+}\r\nhello"
		add("catenate with junk after a part", first+" x {5+}\r\nworld)\r\n"+noop, first, nil, "INVALID")
		first = "a APPEND {5+}\r\nINBOX"
		add("append mailbox literal then junk", first+" x {5+}\r\nworld\r\n"+noop, first, nil, "INVALID")
	}

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
