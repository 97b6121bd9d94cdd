package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"testing/quick"
)

// fmtArgs renders parsed arguments compactly: atom:X, str:"X", ( and ).
func fmtArgs(args []arg) string {
	var parts []string
	for _, a := range args {
		switch a.kind {
		case argAtom:
			parts = append(parts, "atom:"+a.val)
		case argString:
			parts = append(parts, fmt.Sprintf("str:%q", a.val))
		case argLParen:
			parts = append(parts, "(")
		case argRParen:
			parts = append(parts, ")")
		default:
			parts = append(parts, fmt.Sprintf("kind%d:%q", a.kind, a.val))
		}
	}
	return strings.Join(parts, " ")
}

// readAll runs readCommand until an error that ends the connection and
// returns what happened, one event per call: "CMD tag NAME args", "SYNTAX
// tag: msg", "TOOBIG tag", "FATAL tag", "EOF", "UNEXPECTEDEOF", "ERR ...";
// "+" marks a continuation request sent.
func readAll(t testing.TB, r io.Reader, max, bufSize int) []string {
	t.Helper()
	var ev []string
	pr := newPreauthReader(bufio.NewReaderSize(r, bufSize), max, func() error {
		ev = append(ev, "+")
		return nil
	})
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatalf("readCommand does not stop; events so far %q", ev[:20])
		}
		cmd, err := pr.readCommand()
		var se *syntaxError
		var tb *tooBigError
		switch {
		case err == nil:
			s := "CMD " + cmd.tag + " " + cmd.name
			if a := fmtArgs(cmd.args); a != "" {
				s += " " + a
			}
			ev = append(ev, s)
		case errors.As(err, &se):
			ev = append(ev, "SYNTAX "+se.tag+": "+se.msg)
		case errors.As(err, &tb):
			if tb.fatal {
				return append(ev, "FATAL "+tb.tag)
			}
			ev = append(ev, "TOOBIG "+tb.tag)
		case err == io.EOF:
			return append(ev, "EOF")
		case err == io.ErrUnexpectedEOF:
			return append(ev, "UNEXPECTEDEOF")
		default:
			return append(ev, "ERR "+err.Error())
		}
	}
}

var rep = strings.Repeat // rep("a", 3) == "aaa"

func TestReadCommand(t *testing.T) {
	const max = 40
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"noop", "a NOOP\r\n", []string{"CMD a NOOP", "EOF"}},
		{"lower case name", "a1 noop\r\n", []string{"CMD a1 NOOP", "EOF"}},
		{"bare LF", "a NOOP\n", []string{"CMD a NOOP", "EOF"}},
		{"two commands", "a NOOP\r\nb CAPABILITY\r\n", []string{"CMD a NOOP", "CMD b CAPABILITY", "EOF"}},
		{"atoms", "a LOGIN alice secret\r\n", []string{"CMD a LOGIN atom:alice atom:secret", "EOF"}},
		{"quoted", `a LOGIN "al ice" "se\"c\\ret"` + "\r\n", []string{`CMD a LOGIN str:"al ice" str:"se\"c\\ret"`, "EOF"}},
		{"empty quoted", `a LOGIN "" ""` + "\r\n", []string{`CMD a LOGIN str:"" str:""`, "EOF"}},
		{"8-bit quoted", "a LOGIN \"j\xc3\xb6rg\" p\r\n", []string{`CMD a LOGIN str:"jörg" atom:p`, "EOF"}},
		{"8-bit atom", "a LOGIN j\xc3\xb6rg p\r\n", []string{`CMD a LOGIN atom:jörg atom:p`, "EOF"}},
		{"tag with bracket", "a] NOOP\r\n", []string{"CMD a] NOOP", "EOF"}},
		{"parens", `a ID ("name" "x" "version" NIL)` + "\r\n", []string{`CMD a ID ( str:"name" str:"x" str:"version" atom:NIL )`, "EOF"}},
		{"nil", "a ID NIL\r\n", []string{"CMD a ID atom:NIL", "EOF"}},
		{"empty parens", "a ID ()\r\n", []string{"CMD a ID ( )", "EOF"}},
		{"sync literals", "a LOGIN {5}\r\nalice {6}\r\nsecret\r\n", []string{"+", "+", `CMD a LOGIN str:"alice" str:"secret"`, "EOF"}},
		{"non-sync literals", "a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n", []string{`CMD a LOGIN str:"alice" str:"secret"`, "EOF"}},
		{"literal with CRLF and NUL inside", "a LOGIN {6+}\r\na\r\nb\x00c \"p\"\r\n", []string{`CMD a LOGIN str:"a\r\nb\x00c" str:"p"`, "EOF"}},
		{"empty literals", "a LOGIN {0}\r\n {0+}\r\n\r\n", []string{"+", `CMD a LOGIN str:"" str:""`, "EOF"}},
		{"literal8", "a X ~{3}\r\nabc\r\n", []string{"+", `CMD a X str:"abc"`, "EOF"}},
		{"literal8 non-sync", "a X ~{3+}\r\nabc\r\n", []string{`CMD a X str:"abc"`, "EOF"}},

		// Syntax errors: the line is answered and the next one is new.
		{"empty line", "\r\na NOOP\r\n", []string{"SYNTAX : Empty command line", "CMD a NOOP", "EOF"}},
		{"bare LF line", "\n", []string{"SYNTAX : Empty command line", "EOF"}},
		{"tag only", "a\r\n", []string{"SYNTAX a: Missing command", "EOF"}},
		{"tag and space", "a \r\n", []string{"SYNTAX a: Missing command", "EOF"}},
		{"two spaces", "a  NOOP\r\n", []string{"SYNTAX a: Missing command", "EOF"}},
		{"plus in tag", "a+ NOOP\r\n", []string{"SYNTAX : Invalid tag", "EOF"}},
		{"plus tag", "+ NOOP\r\n", []string{"SYNTAX : Invalid tag", "EOF"}},
		{"star tag", "* NOOP\r\n", []string{"SYNTAX : Invalid tag", "EOF"}},
		{"8-bit tag", "\xc3\xa4 NOOP\r\n", []string{"SYNTAX : Invalid tag", "EOF"}},
		{"garbage", "\x00\x01\x02\xff\r\n", []string{"SYNTAX : Invalid tag", "EOF"}},
		{"NUL after tag", "a\x00 NOOP\r\n", []string{"SYNTAX a: Missing command", "EOF"}},
		{"NUL after name", "a NOOP\x00\r\n", []string{"SYNTAX a: Invalid character in command", "EOF"}},
		{"lone CR", "a NOOP\rb NOOP\r\nc NOOP\r\n", []string{"SYNTAX a: Invalid character in command", "CMD c NOOP", "EOF"}},
		{"trailing space", "a NOOP \r\n", []string{"SYNTAX a: Trailing space", "EOF"}},
		{"double space between args", "a LOGIN x  y\r\n", []string{"SYNTAX a: Invalid character in command", "EOF"}},
		{"missing space", `a LOGIN "x""y"` + "\r\n", []string{"SYNTAX a: Missing space between arguments", "EOF"}},
		{"bad escape", `a LOGIN "a\x" b` + "\r\n", []string{"SYNTAX a: Invalid escape in quoted string", "EOF"}},
		{"unterminated quote", `a LOGIN "abc` + "\r\n", []string{"SYNTAX a: Unterminated quoted string", "EOF"}},
		{"escape at end", `a LOGIN "ab\` + "\r\n", []string{"SYNTAX a: Unterminated quoted string", "EOF"}},
		{"NUL in quoted", "a LOGIN \"a\x00b\" c\r\n", []string{"SYNTAX a: Invalid character in quoted string", "EOF"}},
		{"CR in quoted", "a LOGIN \"a\rb\" c\r\n", []string{"SYNTAX a: Invalid character in quoted string", "EOF"}},
		{"wildcard", `a LIST "" *` + "\r\n", []string{"SYNTAX a: Invalid character in command", "EOF"}},
		{"huge literal", "a LOGIN {99999999999}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"huge literal non-sync", "a LOGIN {99999999999+}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"literal over 32 bits", "a LOGIN {4294967296}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"negative literal", "a LOGIN {-1}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"hex literal", "a LOGIN {1a}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"empty literal braces", "a LOGIN {}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"plus only", "a LOGIN {+}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"literal not at end", "a LOGIN {5} x\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"two literal specs", "a LOGIN {5}{6}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"tilde without brace", "a LOGIN ~5}\r\n", []string{"SYNTAX a: Invalid literal", "EOF"}},
		{"atom glued to literal", "a LOGIN x{5}\r\n", []string{"SYNTAX a: Missing space between arguments", "EOF"}},
		{"tagged DONE", "DONE\r\n", []string{"SYNTAX DONE: Missing command", "EOF"}},
		{"http", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", []string{
			"CMD GET / atom:HTTP/1.1", "CMD Host: EXAMPLE.COM", "SYNTAX : Empty command line", "EOF"}},

		// max_command_size = 40 counts every byte: lines with their line
		// ends and literal octets.
		{"line at cap", "a LOGIN " + rep("u", 28) + " p\r\n", []string{"CMD a LOGIN atom:" + rep("u", 28) + " atom:p", "EOF"}},
		{"line one over", "a LOGIN " + rep("u", 29) + " p\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"huge line", "a LOGIN " + rep("u", 100000) + "\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"over by bare LF line", "a LOGIN " + rep("u", 29) + " pp\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		// "a LOGIN {22}\r\n" is 14, "<22> y\r\n" 26: 40.
		{"sync literal at cap", "a LOGIN {22}\r\n" + rep("u", 22) + " y\r\n", []string{"+", "CMD a LOGIN str:\"" + rep("u", 22) + "\" atom:y", "EOF"}},
		{"non-sync literal at cap", "a LOGIN {21+}\r\n" + rep("u", 21) + " y\r\n", []string{"CMD a LOGIN str:\"" + rep("u", 21) + "\" atom:y", "EOF"}},
		// The literal itself takes the command over: no "+", BAD, and
		// the next line is a new command.
		{"sync literal over", "a LOGIN {27}\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		// The literal fits, the line after it does not.
		{"sync literal then line over", "a LOGIN {23}\r\n" + rep("u", 23) + " y\r\nb NOOP\r\n", []string{"+", "TOOBIG a", "CMD b NOOP", "EOF"}},
		{"non-sync literal over", "a LOGIN {30+}\r\n" + rep("\r\nz NOOP", 3) + "abcdef y\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"non-sync literal over, chained", "a LOGIN {30+}\r\n" + rep("u", 30) + " {3+}\r\nabc\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"non-sync literal over, then sync", "a LOGIN {30+}\r\n" + rep("u", 30) + " {3}\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"overlong line with sync literal", "a LOGIN " + rep("u", 40) + " {5}\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"overlong line with non-sync literal", "a LOGIN " + rep("u", 40) + " {5+}\r\nb NOO\r\nc NOOP\r\n", []string{"TOOBIG a", "CMD c NOOP", "EOF"}},
		{"non-sync literal at discard limit", "a LOGIN {2560+}\r\n" + rep("z", 2560) + "\r\nb NOOP\r\n", []string{"TOOBIG a", "CMD b NOOP", "EOF"}},
		{"non-sync literal over discard limit", "a LOGIN {2561+}\r\n" + rep("z", 2561) + "\r\nb NOOP\r\n", []string{"FATAL a"}},

		// The client stops early.
		{"no line end", "a NOOP", []string{"UNEXPECTEDEOF"}},
		{"empty input", "", []string{"EOF"}},
		{"eof in literal", "a LOGIN {5}\r\nab", []string{"+", "UNEXPECTEDEOF"}},
		// Nit: plain EOF, not ErrUnexpectedEOF, although the command is
		// unfinished; both end the connection the same way.
		{"eof after literal", "a LOGIN {2}\r\nab", []string{"+", "EOF"}},
		{"eof while discarding", "a LOGIN {30+}\r\nab", []string{"UNEXPECTEDEOF"}},
		{"eof in overlong line", "a LOGIN " + rep("u", 100), []string{"UNEXPECTEDEOF"}},
	}
	readers := []struct {
		name    string
		bufSize int
		wrap    func(io.Reader) io.Reader
	}{
		{"buf4096", 4096, func(r io.Reader) io.Reader { return r }},
		{"buf16", 16, func(r io.Reader) io.Reader { return r }},
		{"onebyte", 16, iotest.OneByteReader},
		{"half", 4096, iotest.HalfReader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, rd := range readers {
				got := readAll(t, rd.wrap(strings.NewReader(tt.in)), max, rd.bufSize)
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: %q\n got %q\nwant %q", rd.name, tt.in, got, tt.want)
				}
			}
		})
	}
}

// TestReadCommandConsumes checks the byte accounting: a returned command
// used at most max bytes of the stream, and the reader stops where the
// command ends.
func TestReadCommandConsumes(t *testing.T) {
	in := "a LOGIN {22}\r\n" + rep("u", 22) + " y\r\nb NOOP\r\n"
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 16)
	pr := newPreauthReader(br, 40, func() error { return nil })
	pos := func() int { return len(in) - sr.Len() - br.Buffered() }
	if _, err := pr.readCommand(); err != nil {
		t.Fatal(err)
	}
	if p := pos(); p != 40 {
		t.Fatalf("after the first command the reader is at %d; want 40", p)
	}
	cmd, err := pr.readCommand()
	if err != nil || cmd.tag != "b" {
		t.Fatalf("second command: %+v, %v", cmd, err)
	}
}

func TestReadCommandContError(t *testing.T) {
	boom := errors.New("boom")
	pr := newPreauthReader(bufio.NewReader(strings.NewReader("a LOGIN {5}\r\nalice x\r\n")), 1024,
		func() error { return boom })
	if _, err := pr.readCommand(); err != boom {
		t.Fatalf("got %v; want the continuation writer's error", err)
	}
}

// Max 1024, as in the configuration the end-to-end tests use: the exact
// boundary for each form, with the line end counted.
func TestReadCommandCap1024(t *testing.T) {
	const max = 1024
	line := func(n int) string { // "a LOGIN u <pw>\r\n" of n bytes
		return "a LOGIN u " + rep("p", n-12) + "\r\n"
	}
	sync := func(n int) string { // "a LOGIN u {N}\r\n<N>\r\n" of n bytes
		for lit := n - 30; lit < n; lit++ {
			s := fmt.Sprintf("a LOGIN u {%d}\r\n", lit)
			if len(s)+lit+2 == n {
				return s + rep("p", lit) + "\r\n"
			}
		}
		panic("no size")
	}
	nonSync := func(n int) string {
		for lit := n - 30; lit < n; lit++ {
			s := fmt.Sprintf("a LOGIN u {%d+}\r\n", lit)
			if len(s)+lit+2 == n {
				return s + rep("p", lit) + "\r\n"
			}
		}
		panic("no size")
	}
	for _, form := range []struct {
		name string
		make func(int) string
		cont bool
	}{{"line", line, false}, {"sync", sync, true}, {"non-sync", nonSync, false}} {
		for _, n := range []int{max - 1, max, max + 1} {
			in := form.make(n)
			if len(in) != n {
				t.Fatalf("%s: built %d bytes; want %d", form.name, len(in), n)
			}
			got := readAll(t, strings.NewReader(in+"b NOOP\r\n"), max, 4096)
			var want []string
			if form.cont {
				want = append(want, "+")
			}
			if n <= max {
				want = append(want, "CMD a LOGIN atom:u ")
			} else {
				want = append(want, "TOOBIG a")
			}
			want = append(want, "CMD b NOOP", "EOF")
			if len(got) != len(want) {
				t.Errorf("%s %d: got %q; want %q", form.name, n, got, want)
				continue
			}
			for i := range want {
				if !strings.HasPrefix(got[i], want[i]) {
					t.Errorf("%s %d: got %q; want %q", form.name, n, got, want)
				}
			}
		}
	}
}

// A command refused for bad syntax whose line announces a
// non-synchronizing literal: the client sends the literal anyway (RFC
// 7888), so its octets must be skipped, not parsed as commands.
func TestReadCommandSyntaxErrorSkipsNonSyncLiteral(t *testing.T) {
	in := `a LOGIN "\x" {5+}` + "\r\nb NOO\r\nc NOOP\r\n"
	got := readAll(t, strings.NewReader(in), 1024, 4096)
	want := []string{"SYNTAX a: Invalid escape in quoted string", "CMD c NOOP", "EOF"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q; want %q", got, want)
	}
}

// An oversize line whose first word is not a valid tag must not have that
// word echoed back as the tag (RFC 9051 §7.1: untagged BAD when the tag
// cannot be read); otherwise up to max_command_size arbitrary bytes (NUL,
// CR, 8-bit, HTML) are reflected to the client.
func TestReadCommandTooBigInvalidTag(t *testing.T) {
	for _, in := range []string{
		rep("\x00", 2000) + "\r\n",
		"<html>" + rep("A", 2000) + "\r\n",
		"a\rb " + rep("A", 2000) + "\r\n",
		"a+ " + rep("A", 2000) + "\r\n",
	} {
		got := readAll(t, strings.NewReader(in), 1024, 4096)
		if len(got) < 1 || got[0] != "TOOBIG " {
			t.Errorf("%.20q...: got %.60q; want an untagged TOOBIG", in, got)
		}
	}
}

// An overlong line that ends by announcing a non-synchronizing literal:
// the literal is skipped whatever the bufio chunks are. Regression: the
// announcement is found also when its "{" lies in a chunk before the one
// that crossed the limit; otherwise the literal's octets would be read as
// commands.
func TestReadCommandOverlongLiteralSplit(t *testing.T) {
	// max 20, bufio 16: the first chunk is "a LOGIN {0000000", the line
	// crosses 20 in the second, "05+}\r\n".
	in := "a LOGIN {000000005+}\r\nb NOO\r\nc NOOP\r\n"
	want := []string{"TOOBIG a", "CMD c NOOP", "EOF"}
	for _, bufSize := range []int{16, 4096} {
		if got := readAll(t, strings.NewReader(in), 20, bufSize); !reflect.DeepEqual(got, want) {
			t.Errorf("bufio %d: got %q; want %q", bufSize, got, want)
		}
	}
}

func TestReadContinuation(t *testing.T) {
	pr := newPreauthReader(bufio.NewReader(strings.NewReader("dGVzdA==\r\n"+rep("A", 50)+"\r\n=\r\n")), 40, nil)
	if l, err := pr.readContinuation(); err != nil || string(l) != "dGVzdA==" {
		t.Fatalf("got %q, %v", l, err)
	}
	var tb *tooBigError
	if _, err := pr.readContinuation(); !errors.As(err, &tb) || tb.fatal {
		t.Fatalf("overlong: got %v; want a non-fatal tooBigError", err)
	}
	if l, err := pr.readContinuation(); err != nil || string(l) != "=" {
		t.Fatalf("after overlong: got %q, %v", l, err)
	}
	if _, err := pr.readContinuation(); err != io.EOF {
		t.Fatalf("at end: got %v; want EOF", err)
	}
}

func TestLiteralAt(t *testing.T) {
	tests := []struct {
		line          string
		n             int64
		sync, ok, bad bool
	}{
		{"{5}\r\n", 5, true, true, false},
		{"a LOGIN {5}\r\n", 5, true, true, false},
		{"{5+}\r\n", 5, false, true, false},
		{"{5}\n", 5, true, true, false},
		{"{5}", 5, true, true, false},
		{"{5}\r", 5, true, true, false},
		{"~{5}\r\n", 5, true, true, false},
		{"a APPEND x ~{5+}\r\n", 5, false, true, false},
		{"{0}\r\n", 0, true, true, false},
		{"{0+}\r\n", 0, false, true, false},
		{"{4294967295}\r\n", 4294967295, true, true, false},
		{"{4294967295+}\r\n", 4294967295, false, true, false},
		{"{{5}\r\n", 5, true, true, false},
		{"x}{5}\r\n", 5, true, true, false},

		{"{4294967296}\r\n", 0, false, false, true},
		{"{99999999999}\r\n", 0, false, false, true},
		{"{99999999999+}\r\n", 0, false, false, true},
		{"{-1}\r\n", 0, false, false, true},
		{"{1a}\r\n", 0, false, false, true},
		{"{}\r\n", 0, false, false, true},
		{"{+}\r\n", 0, false, false, true},
		{"{5++}\r\n", 0, false, false, true},
		{"{+5}\r\n", 0, false, false, true},
		{"{ 5}\r\n", 0, false, false, true},
		{"{5 }\r\n", 0, false, false, true},
		{"{5}}\r\n", 0, false, false, true},
		{"{5-}\r\n", 0, false, false, true},

		{"", 0, false, false, false},
		{"\r\n", 0, false, false, false},
		{"\n", 0, false, false, false},
		{"}", 0, false, false, false},
		{"5}\r\n", 0, false, false, false},
		{"{5}x\r\n", 0, false, false, false},
		{"{5}\r\n\r\n", 0, false, false, false},
		{"{5}\n\r", 0, false, false, false},
		{"a NOOP\r\n", 0, false, false, false},
		{"\"{5}\"\r\n", 0, false, false, false},
	}
	// "{5} " CRLF is no literal; reporting it bad is fine too.
	if n, _, ok, _ := literalAt([]byte("{5} \r\n")); ok || n != 0 {
		t.Errorf("literalAt(\"{5} \\r\\n\") = %d, ok", n)
	}
	for _, tt := range tests {
		n, sync, ok, bad := literalAt([]byte(tt.line))
		if n != tt.n || sync != tt.sync || ok != tt.ok || bad != tt.bad {
			t.Errorf("literalAt(%q) = %d, %v, %v, %v; want %d, %v, %v, %v",
				tt.line, n, sync, ok, bad, tt.n, tt.sync, tt.ok, tt.bad)
		}
	}
}

// RFC 9051 §9: number = 1*DIGIT, a value below 2^32. "{00000000005}" is a
// valid literal of 5 octets and servers (go-imap, Dovecot) read it as one;
// a framer that does not loses track of the command and lets the client
// pass literal octets as if they were commands, past max_command_size.
func TestLiteralAtLeadingZeros(t *testing.T) {
	for _, tt := range []struct {
		line string
		n    int64
		sync bool
	}{
		{"{00000000005}\r\n", 5, true},
		{"{000000000000000000002000+}\r\n", 2000, false},
		{"~{00000000004294967295}\r\n", 4294967295, true},
	} {
		n, sync, ok, bad := literalAt([]byte(tt.line))
		if n != tt.n || sync != tt.sync || !ok || bad {
			t.Errorf("literalAt(%q) = %d, %v, %v, %v; want %d, %v, true, false", tt.line, n, sync, ok, bad, tt.n, tt.sync)
		}
	}
}

func TestValidTag(t *testing.T) {
	for _, tt := range []struct {
		tag  string
		want bool
	}{
		{"a", true}, {"A1.2", true}, {"a]", true}, {"]", true}, {"tag-0001", true},
		{"abc~!#$&'-./:;<=>?@[^_`|", true},
		{"", false}, {"+", false}, {"a+", false}, {"*", false}, {"a b", false},
		{"%", false}, {"(", false}, {")", false}, {"{", false}, {"\"", false},
		{"\\", false}, {"\x00", false}, {"\x1f", false}, {"\x7f", false},
		{"\x80", false}, {"\xc3\xa4", false}, {"a\r", false}, {"a\n", false},
	} {
		if got := validTag([]byte(tt.tag)); got != tt.want {
			t.Errorf("validTag(%q) = %v; want %v", tt.tag, got, tt.want)
		}
	}
	// Every single octet against the grammar: tag = 1*<any ASTRING-CHAR
	// except "+">; ASTRING-CHAR = ATOM-CHAR / resp-specials.
	for c := 0; c < 256; c++ {
		want := c > 0x20 && c < 0x7f && !strings.ContainsRune(`(){ %*"\+`, rune(c))
		if got := validTag([]byte{byte(c)}); got != want {
			t.Errorf("validTag(%q) = %v; want %v", byte(c), got, want)
		}
	}
}

// quoteOrLiteral must never let a credential change the command: a quoted
// result parses back (with the reader's own quoted-string parser) to the
// input and ends where the string ends; anything a quoted string cannot
// carry must come back as a literal.
func TestQuoteOrLiteral(t *testing.T) {
	check := func(s string) bool {
		q, lit := quoteOrLiteral(s)
		needLit := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) >= 0
		if needLit {
			if !lit || q != "" {
				t.Errorf("quoteOrLiteral(%q) = %q, %v; want a literal", s, q, lit)
				return false
			}
			return true
		}
		if lit {
			t.Errorf("quoteOrLiteral(%q): literal for printable ASCII", s)
			return false
		}
		p := &lineParser{line: []byte(q + " rest")}
		got, err := p.quoted()
		if err != nil || got != s || p.pos != len(q) {
			t.Errorf("quoteOrLiteral(%q) = %q, parsed back %q (pos %d of %d), %v", s, q, got, p.pos, len(q), err)
			return false
		}
		return true
	}
	for _, s := range []string{"", "alice", `"`, `\`, `\"`, `"\`, `a"b\c`, ` `, `{5}`, "a b",
		"\r", "\n", "\x00", "\x7f", "\x80", "jörg", "pass\r\nb LOGOUT", "a\"\r\n", `\\\"`} {
		check(s)
	}
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("x" + string([]byte{byte(c)}) + "\"")
	}
	// Random strings over an alphabet rich in the dangerous octets.
	alpha := []byte("ab \"\\{}()*%+\r\n\x00\x7f\x80\xff")
	cfg := &quick.Config{MaxCount: 5000, Rand: rand.New(rand.NewSource(1)), Values: func(v []reflect.Value, r *rand.Rand) {
		b := make([]byte, r.Intn(20))
		for i := range b {
			if r.Intn(4) == 0 {
				b[i] = alpha[r.Intn(len(alpha))]
			} else {
				b[i] = byte(0x20 + r.Intn(0x5f))
			}
		}
		v[0] = reflect.ValueOf(string(b))
	}}
	if err := quick.Check(check, cfg); err != nil {
		t.Error(err)
	}
}

func TestLiteralPrefix(t *testing.T) {
	if got := literalPrefix(5, false); got != "{5}" {
		t.Errorf("got %q", got)
	}
	if got := literalPrefix(0, true); got != "{0+}" {
		t.Errorf("got %q", got)
	}
}

func TestSplitTagName(t *testing.T) {
	for _, tt := range []struct{ line, tag, name string }{
		{"a NOOP\r\n", "a", "NOOP"},
		{"a NOOP", "a", "NOOP"},
		{"a UID FETCH 1 (FLAGS)\r\n", "a", "UID"},
		{"a APPEND {5}\r\n", "a", "APPEND"},
		{"a\r\n", "a", ""},
		{"DONE\n", "DONE", ""},
		{"\r\n", "", ""},
		{"", "", ""},
		{" NOOP\r\n", "", "NOOP"},
		{"a  NOOP\r\n", "a", ""},
		{"a NOOP \r\n", "a", "NOOP"},
		{"a\x00b c\r\n", "a\x00b", "c"},
	} {
		tag, name := splitTagName([]byte(tt.line))
		if string(tag) != tt.tag || string(name) != tt.name {
			t.Errorf("splitTagName(%q) = %q, %q; want %q, %q", tt.line, tag, name, tt.tag, tt.name)
		}
	}
}

func TestTrimEOL(t *testing.T) {
	for in, want := range map[string]string{"a\r\n": "a", "a\n": "a", "a\r": "a", "a": "a", "": "", "\r\n": "", "a\n\n": "a\n", "a\r\r\n": "a\r"} {
		if got := string(trimEOL([]byte(in))); got != want {
			t.Errorf("trimEOL(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestEqualFoldASCII(t *testing.T) {
	for _, tt := range []struct {
		b, upper string
		want     bool
	}{
		{"append", "APPEND", true}, {"Append", "APPEND", true}, {"APPEND", "APPEND", true},
		{"appen", "APPEND", false}, {"appendx", "APPEND", false}, {"", "", true},
		{"\xc1PPEND", "APPEND", false}, {"{", "[", false}, {"@", "`", false},
	} {
		if got := equalFoldASCII([]byte(tt.b), tt.upper); got != tt.want {
			t.Errorf("equalFoldASCII(%q, %q) = %v", tt.b, tt.upper, got)
		}
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
		code, text := responseCode([]byte(tt.rest))
		if code != tt.code || text != tt.text {
			t.Errorf("responseCode(%q) = %q, %q; want %q, %q", tt.rest, code, text, tt.code, tt.text)
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
		got := capsFromCode([]byte(tt.line))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("capsFromCode(%q) = %#v; want %#v", tt.line, got, tt.want)
		}
	}
}

func TestClientCaps(t *testing.T) {
	for _, tt := range []struct {
		caps []string
		want string
	}{
		{[]string{"IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "compress=deflate", "IDLE", "SASL-IR", "LOGINDISABLED", "LITERAL+", "auth=login", "COMPRESS=X", "starttls"},
			"IMAP4rev1 IDLE LITERAL+"},
		{[]string{"IMAP4rev2", "COMPRESS"}, "IMAP4rev2 COMPRESS"},
		{nil, ""},
	} {
		if got := clientCaps(tt.caps); got != tt.want {
			t.Errorf("clientCaps(%q) = %q; want %q", tt.caps, got, tt.want)
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
		m := (&respFramer{}).filterCaps(line)
		got := string(line[:len(line)-m])
		if got != tt.want {
			t.Errorf("filterCaps(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// The filter removes capability atoms from the code only, not from the
// human-readable text after "]".
func TestFilterCapsTextAfterCode(t *testing.T) {
	in := "a OK [CAPABILITY IMAP4rev1] try COMPRESS=DEFLATE elsewhere\r\n"
	line := []byte(in)
	m := (&respFramer{}).filterCaps(line)
	if got := string(line[:len(line)-m]); got != in {
		t.Errorf("got %q; want unchanged", got)
	}
}

func TestSanitizeText(t *testing.T) {
	if got := sanitizeText("a\r\nb\x00c"); got != "a  b c" {
		t.Errorf("got %q", got)
	}
	if got := sanitizeText(rep("a", 300)); len(got) != 200 {
		t.Errorf("len %d; want 200", len(got))
	}
	if bytes.ContainsAny([]byte(sanitizeText("x\r\ny")), "\r\n") {
		t.Error("CR/LF left")
	}
}
