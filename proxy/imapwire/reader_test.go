package imapwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// fmtArgs renders parsed arguments compactly: atom:X, str:"X", ( and ).
func fmtArgs(args []Arg) string {
	var parts []string
	for _, a := range args {
		switch a.Kind {
		case ArgAtom:
			parts = append(parts, "atom:"+a.Val)
		case ArgString:
			parts = append(parts, fmt.Sprintf("str:%q", a.Val))
		case ArgLParen:
			parts = append(parts, "(")
		case ArgRParen:
			parts = append(parts, ")")
		default:
			parts = append(parts, fmt.Sprintf("kind%d:%q", a.Kind, a.Val))
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
	pr := NewReader(bufio.NewReaderSize(r, bufSize), max, func() error {
		ev = append(ev, "+")
		return nil
	})
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatalf("readCommand does not stop; events so far %q", ev[:20])
		}
		cmd, err := pr.ReadCommand()
		var se *SyntaxError
		var tb *TooBigError
		switch {
		case err == nil:
			s := "CMD " + cmd.Tag + " " + cmd.Name
			if a := fmtArgs(cmd.Args); a != "" {
				s += " " + a
			}
			ev = append(ev, s)
		case errors.As(err, &se):
			ev = append(ev, "SYNTAX "+se.Tag+": "+se.Msg)
		case errors.As(err, &tb):
			if tb.Fatal {
				return append(ev, "FATAL "+tb.Tag)
			}
			ev = append(ev, "TOOBIG "+tb.Tag)
		case err == io.EOF:
			return append(ev, "EOF")
		case err == io.ErrUnexpectedEOF:
			return append(ev, "UNEXPECTEDEOF")
		default:
			return append(ev, "ERR "+err.Error())
		}
	}
}

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
	pr := NewReader(br, 40, func() error { return nil })
	pos := func() int { return len(in) - sr.Len() - br.Buffered() }
	if _, err := pr.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	if p := pos(); p != 40 {
		t.Fatalf("after the first command the reader is at %d; want 40", p)
	}
	cmd, err := pr.ReadCommand()
	if err != nil || cmd.Tag != "b" {
		t.Fatalf("second command: %+v, %v", cmd, err)
	}
}

func TestReadCommandContError(t *testing.T) {
	boom := errors.New("boom")
	pr := NewReader(bufio.NewReader(strings.NewReader("a LOGIN {5}\r\nalice x\r\n")), 1024,
		func() error { return boom })
	if _, err := pr.ReadCommand(); err != boom {
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
func TestReadCommandTooBigInValidTag(t *testing.T) {
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
	pr := NewReader(bufio.NewReader(strings.NewReader("dGVzdA==\r\n"+rep("A", 50)+"\r\n=\r\n")), 40, nil)
	if l, err := pr.ReadContinuation(); err != nil || string(l) != "dGVzdA==" {
		t.Fatalf("got %q, %v", l, err)
	}
	var tb *TooBigError
	if _, err := pr.ReadContinuation(); !errors.As(err, &tb) || tb.Fatal {
		t.Fatalf("overlong: got %v; want a non-fatal TooBigError", err)
	}
	if l, err := pr.ReadContinuation(); err != nil || string(l) != "=" {
		t.Fatalf("after overlong: got %q, %v", l, err)
	}
	if _, err := pr.ReadContinuation(); err != io.EOF {
		t.Fatalf("at end: got %v; want EOF", err)
	}
}
