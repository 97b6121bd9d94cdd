package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// Besides the basic invariants, the fuzzers check properties that
// regression tests pin down for particular inputs:
//   - chunking invariance of cmdFramer (TestCmdFramerStaleSize);
//   - untagged BAD for an invalid tag (TestCmdFramerTooBigInvalidTag);
//   - RFC numbers in literals (TestLiteralAtLeadingZeros);
//   - respFramer.mid() (TestRespFramerMidAfterLiteral);
//   - preauthReader results independent of bufio chunks
//     (TestReadCommandOverlongLiteralSplit).

// commandSeeds are client command streams: RFC 9051 examples and nasty
// input.
func commandSeeds() []string {
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
		"a " + strings.Repeat("x", 5000) + "\r\nb NOOP\r\n",
		"a " + strings.Repeat("x", 5000) + " {5+}\r\nabcde\r\nb NOOP\r\n",
		"a X {3}\r\n{3}\r\n{3}\r\n\r\n",
		"a X {3+}\r\n{3+}\r\n{3+}\r\n\r\nb NOOP\r\n",
		"a SEARCH TEXT {1100+}\r\n" + strings.Repeat("y", 1100) + "\r\nb NOOP\r\n",
		"a SEARCH TEXT {5+}\r\nhello TEXT " + strings.Repeat("x", 1100) + "\r\n",
		"a APPEND {2000+}\r\n" + strings.Repeat("m", 2000) + " {5+}\r\nhello\r\nb NOOP\r\n",
		strings.Repeat("a NOOP\r\n", 200),
	}
	return append(rfc, nasty...)
}

// refCommand is one command as the upstream frames it.
type refCommand struct {
	size     int // octets that count toward max_command_size
	complete bool
}

// refCommands frames a client-to-upstream stream the way an upstream does
// (lines, literals, APPEND message literals exempt), independently of
// cmdFramer.
func refCommands(s []byte) []refCommand {
	var out []refCommand
	for len(s) > 0 {
		var c refCommand
		first := true
		isAppend, mbox := false, false
		for {
			j := bytes.IndexByte(s, '\n')
			if j < 0 {
				c.size += len(s)
				s = nil
				break
			}
			line := s[:j+1]
			s = s[j+1:]
			c.size += len(line)
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
			n, _, ok := refLiteral(line)
			if !ok {
				c.complete = true
				break
			}
			if !isAppend || (first && mbox) {
				c.size += int(n)
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

func isSubsequence(sub, s []byte) bool {
	for _, c := range sub {
		i := bytes.IndexByte(s, c)
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
	return true
}

var replyRE = regexp.MustCompile(`^([^ \n]*) (BAD \[TOOBIG\] Command too long \(max_command_size=([0-9]+)\)|NO \[CANNOT\] COMPRESS is not available through this proxy|BAD STARTTLS is not valid in the authenticated state|BAD Invalid literal)$`)

// runFramerTimeout runs the framer, failing on a hang.
func runFramerTimeout(t *testing.T, in []byte, max int, sizes []int) framerResult {
	t.Helper()
	done := make(chan framerResult, 1)
	go func() { done <- runFramer(in, max, sizes) }()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("cmdFramer hangs on %.200q (max %d, reads %v)", in, max, sizes)
		return framerResult{}
	}
}

func FuzzCmdFramer(f *testing.F) {
	for i, s := range commandSeeds() {
		f.Add([]byte(s), uint16(0), uint8(i))
		f.Add([]byte(s), uint16(i*100), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, maxSel uint16, chunk uint8) {
		if len(in) > 1<<20 {
			return
		}
		max := 1024 + int(maxSel)%3073
		sizes := []int{int(chunk) + 1}
		got := runFramerTimeout(t, in, max, sizes)

		switch got.err {
		case "EOF", "UNEXPECTEDEOF", "TOOBIG":
		default:
			t.Fatalf("run ended with %s", got.err)
		}
		dst := []byte(got.dst)
		if len(dst) > len(in) || !isSubsequence(dst, in) {
			t.Fatalf("forwarded bytes are not taken from the input in order: %.200q", dst)
		}
		for _, r := range got.replies {
			m := replyRE.FindStringSubmatch(r)
			if m == nil {
				t.Fatalf("reply %q has an unexpected form", r)
			}
			if m[3] != "" && m[3] != fmt.Sprint(max) {
				t.Fatalf("reply %q names the wrong max (%d)", r, max)
			}
			if m[1] != "*" && !validTag([]byte(m[1])) {
				t.Fatalf("reply %q echoes an invalid tag", r)
			}
		}
		// What the upstream sees: no command over the cap.
		for i, c := range refCommands(dst) {
			if c.size > max {
				t.Fatalf("command %d forwarded with %d octets counted > max %d; forwarded %.300q", i, c.size, max, dst)
			}
		}
		// Framing does not depend on how the client's bytes are split.
		one := runFramerTimeout(t, in, max, nil)
		if one.dst != got.dst || !reflect.DeepEqual(one.replies, got.replies) {
			t.Fatalf("reads of %d:\n got %v\none read: %v", chunk+1, got, one)
		}
	})
}

// preauthEvents reads commands like the connection does and checks the
// reader's invariants on the way.
func preauthEvents(t *testing.T, in []byte, max int, bufSize int, wrap func(io.Reader) io.Reader) []string {
	t.Helper()
	sr := bytes.NewReader(in)
	br := bufio.NewReaderSize(wrap(sr), bufSize)
	conts := 0
	pr := newPreauthReader(br, max, func() error { conts++; return nil })
	pos := func() int { return len(in) - sr.Len() - br.Buffered() }
	var ev []string
	for i := 0; ; i++ {
		if i > len(in)+1 {
			t.Fatalf("readCommand makes no progress")
		}
		before := pos()
		cmd, err := pr.readCommand()
		used := pos() - before
		var se *syntaxError
		var tb *tooBigError
		switch {
		case err == nil:
			if used > max {
				t.Fatalf("command %q %q used %d octets > max %d", cmd.tag, cmd.name, used, max)
			}
			// Not the name: strings.ToUpper turns each invalid UTF-8
			// octet into a 3-octet U+FFFD (harmless: no such command).
			total := len(cmd.tag)
			for _, a := range cmd.args {
				total += len(a.val)
			}
			if total > max {
				t.Fatalf("command %q %q carries %d octets > max %d", cmd.tag, cmd.name, total, max)
			}
			if !validTag([]byte(cmd.tag)) || cmd.name == "" || cmd.name != strings.ToUpper(cmd.name) {
				t.Fatalf("bad command: tag %q name %q", cmd.tag, cmd.name)
			}
			ev = append(ev, "CMD "+cmd.tag+" "+cmd.name+" "+fmtArgs(cmd.args))
		case errors.As(err, &se):
			if se.tag != "" && !validTag([]byte(se.tag)) {
				t.Fatalf("syntax error with invalid tag %q", se.tag)
			}
			ev = append(ev, "SYNTAX "+se.tag+": "+se.msg)
		case errors.As(err, &tb) && !tb.fatal:
			if tb.tag != "" && !validTag([]byte(tb.tag)) {
				t.Fatalf("too big with invalid tag %q", tb.tag)
			}
			ev = append(ev, "TOOBIG "+tb.tag)
		default:
			return append(ev, "END "+errName(err))
		}
		if used <= 0 {
			t.Fatalf("readCommand returned %v without reading", ev[len(ev)-1])
		}
		if conts > strings.Count(string(in), "{") {
			t.Fatalf("%d continuation requests for %d literals", conts, strings.Count(string(in), "{"))
		}
	}
}

func FuzzPreauthReader(f *testing.F) {
	for i, s := range commandSeeds() {
		f.Add([]byte(s), uint16(i*37))
	}
	f.Add([]byte("a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"), uint16(0))
	f.Add([]byte("a LOGIN \"al\\\"ice\" \"se\\\\cret\"\r\n"), uint16(0))
	f.Add([]byte("a LOGIN \"a\\x\" b\r\n"), uint16(0))
	f.Add([]byte("a ID (\"name\" \"x\" \"version\" NIL)\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, maxSel uint16) {
		if len(in) > 1<<16 {
			return
		}
		max := 16 + int(maxSel)%2048
		a := preauthEvents(t, in, max, 4096, func(r io.Reader) io.Reader { return r })
		b := preauthEvents(t, in, max, 16, iotest.OneByteReader)
		// Results do not depend on how bufio splits lines
		// (TestReadCommandOverlongLiteralSplit).
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("results depend on reads:\n%q\n%q", a, b)
		}
	})
}

func responseSeeds() []string {
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
		"* SEARCH " + strings.Repeat("1 ", 3000) + "{5}\r\nabcde\r\n",
		"* 1 EXISTS\r\n* 2 EXI",
		"\x00\xff\r\r\n\n",
		"a OK [CAPABILITY IMAP4rev1] try COMPRESS=DEFLATE\r\n",
	}
}

func FuzzRespFramer(f *testing.F) {
	for i, s := range responseSeeds() {
		f.Add([]byte(s), uint8(i), uint8(i*7))
		f.Add([]byte(s), uint8(0), uint8(255))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk, bufSel uint8) {
		if len(in) > 1<<20 {
			return
		}
		bufSize := holdMax + 64 + int(bufSel)*64 // real relays: relayBufSize > holdMax
		out, ev := relaySim(in, bufSize, []int{int(chunk) + 1}, nil)
		checkRelay(t, out, ev, true)
		if !strings.Contains(strings.ToUpper(string(in)), "COMPRESS=") {
			if !bytes.Equal(out, in) {
				t.Fatalf("output %.200q differs from input", out)
			}
		} else if len(out) > len(in) || !isSubsequence(out, in) {
			t.Fatalf("output %.200q is not the input less some octets", out)
		}
		// With a buffer that can hold a line back, the capability
		// filter does not depend on how the upstream's bytes are split.
		one, _ := relaySim(in, bufSize, nil, nil)
		if !bytes.Equal(one, out) {
			t.Fatalf("output depends on reads:\n%.200q\n%.200q", out, one)
		}
	})
}
