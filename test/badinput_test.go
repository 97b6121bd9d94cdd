package test

// Bad input through the proxy, before and after login, with real
// sockets. Every case ends in a clear IMAP response or a clean close,
// never a hang: every read has a deadline.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// badCase is a table case of bad input: the steps, then how the
// connection ends.
type badCase struct {
	name  string
	steps []step
	end   string // "noop": the connection goes on; "closed": the proxy closed it; "eof": the client half-closes, then the proxy closes
}

func (tc badCase) run(c *proxytest.Conn) {
	exchange(c, tc.steps)
	switch tc.end {
	case "noop":
		c.OK("n1", "NOOP")
	case "eof":
		c.CloseWrite()
		c.ExpectClosed()
	case "closed":
		c.ExpectClosed()
	}
}

func TestBadPreauthInput(t *testing.T) {
	p := startSized(t, proxy.Options{})
	bad := func(name, send string, expect ...string) badCase {
		return badCase{name: name, steps: []step{{send, expect}}, end: "noop"}
	}
	const byeBad = "* BYE Too many invalid commands (max_bad_commands=3)"
	cases := []badCase{
		bad("garbage", "\x01\x02\x03 garbage\r\n", "* BAD Invalid tag"),
		bad("high bytes", "\xff\xfe\xfd\r\n", "* BAD Invalid tag"),
		bad("NUL bytes", "\x00\x00\x00\r\n", "* BAD Invalid tag"),
		bad("NUL after tag", "a\x00 NOOP\r\n", "a BAD Missing command"),
		bad("NUL after command", "a NOOP\x00\r\n", "a BAD Invalid character in command"),
		bad("NUL in quoted", "a LOGIN \"al\x00ice\" x\r\n", "a BAD Invalid character in quoted string"),
		bad("lone CR", "a NOOP\rb NOOP\r\n", "a BAD Invalid character in command"),
		bad("empty line", "\r\n", "* BAD Empty command line"),
		bad("bare LF", "\n", "* BAD Empty command line"),
		bad("tag only", "a\r\n", "a BAD Missing command"),
		bad("tag with plus", "a+b NOOP\r\n", "* BAD Invalid tag"),
		bad("plus as tag", "+ NOOP\r\n", "* BAD Invalid tag"),
		bad("star as tag", "* NOOP\r\n", "* BAD Invalid tag"),
		bad("tagged DONE", "DONE\r\n", "DONE BAD Missing command"),
		bad("bad escape", `a LOGIN "al\ice" secret`+"\r\n", "a BAD Invalid escape in quoted string"),
		bad("unterminated quote", `a LOGIN "alice secret`+"\r\n", "a BAD Unterminated quoted string"),
		bad("login one arg", "a LOGIN alice\r\n", "a BAD LOGIN takes a user name and a password"),
		bad("login three args", "a LOGIN alice secret x\r\n", "a BAD LOGIN takes a user name and a password"),
		bad("login list", "a LOGIN (alice) secret\r\n", "a BAD LOGIN takes a user name and a password"),
		bad("trailing space", "a NOOP \r\n", "a BAD Trailing space"),
		bad("noop with args", "a NOOP x\r\n", "a BAD NOOP takes no arguments"),
		bad("unknown command", "a XYZZY\r\n", "a BAD Unknown command"),
		bad("command after auth only", "a SELECT INBOX\r\n", "a BAD Command not valid before authentication"),
		bad("starttls", "a STARTTLS\r\n", "a BAD STARTTLS is not available"),
		bad("literal 11 digits", "a LOGIN {99999999999}\r\n", "a BAD Invalid literal"),
		bad("literal 11 digits non-sync", "a LOGIN {99999999999+}\r\n", "a BAD Invalid literal"),
		bad("literal over 32 bits", "a LOGIN {4294967296}\r\n", "a BAD Invalid literal"),
		bad("literal negative", "a LOGIN {-1}\r\n", "a BAD Invalid literal"),
		bad("literal hex", "a LOGIN {1a}\r\n", "a BAD Invalid literal"),
		bad("literal empty", "a LOGIN {}\r\n", "a BAD Invalid literal"),
		bad("literal not at end", "a LOGIN {5} x\r\n", "a BAD Invalid literal"),
		bad("huge line", "a LOGIN "+strings.Repeat("u", 100000)+" p\r\n", "a"+tooBig),
		bad("huge line ending in sync literal", "a LOGIN "+strings.Repeat("u", 5000)+" {5}\r\n", "a"+tooBig),
		bad("huge line ending in non-sync literal", "a LOGIN "+strings.Repeat("u", 5000)+" {5+}\r\nb NOO\r\n", "a"+tooBig),
		bad("authenticate no mechanism", "a AUTHENTICATE\r\n", "a BAD AUTHENTICATE takes a mechanism and an optional initial response"),
		{name: "non-sync literal too big to skip", steps: []step{{"a LOGIN {99999+}\r\n", []string{byeTooBig}}}, end: "closed"},
		{name: "max literal non-sync", steps: []step{{"a LOGIN {4294967295+}\r\n", []string{byeTooBig}}}, end: "closed"},
		{name: "http", steps: []step{{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", []string{
			"GET BAD Unknown command", "Host: BAD Unknown command", "* BAD Empty command line", byeBad}}}, end: "closed"},
		{name: "http post", steps: []step{{"POST /login HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", []string{
			"POST BAD Unknown command", "Content-Length: BAD Unknown command", "* BAD Empty command line", byeBad}}}, end: "closed"},
		{name: "three bad then closed", steps: []step{
			{"\x00\r\n", []string{"* BAD Invalid tag"}},
			{"a LOGIN {-1}\r\n", []string{"a BAD Invalid literal"}},
			{"a LOGIN " + strings.Repeat("u", 2000) + "\r\n", []string{"a" + tooBig, byeBad}},
		}, end: "closed"},
		{name: "authenticate oversize response", steps: []step{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{strings.Repeat("A", 2000) + "\r\n", []string{"a" + tooBig}},
		}, end: "noop"},
		{name: "authenticate cancelled", steps: []step{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{"*\r\n", []string{"a BAD Authentication cancelled"}},
		}, end: "noop"},
		{name: "authenticate bad base64", steps: []step{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{"!!!\r\n", []string{"a BAD Invalid base64 in SASL response"}},
		}, end: "noop"},
		// A line without CRLF, then the client closes its side: the
		// proxy closes without an answer.
		{name: "no CRLF then EOF", steps: []step{{"a NOOP", nil}}, end: "eof"},
		{name: "EOF mid-literal", steps: []step{
			{"a LOGIN {10}\r\n", []string{literalOK}},
			{"abc", nil},
		}, end: "eof"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			tc.run(c)
		})
	}

	t.Run("oversize line with invalid tag", func(t *testing.T) {
		c := proxytest.Dial(t, p.Addr)
		c.Greeting()
		c.Send(strings.Repeat("\x00", 2000) + "\r\n")
		l := c.Line()
		if strings.HasPrefix(l, "\x00") && strings.HasSuffix(l, tooBig) {
			regression(t, fmt.Sprintf("the proxy echoes the first %d octets of an oversize line as the tag of BAD [TOOBIG] without checking it is a valid tag (proxy/imapwire/reader.go ReadCommand: SplitTagName without ValidTag)", len(l)-len(tooBig)))
		}
		wantLine(t, "oversize line with invalid tag", l, "*"+tooBig)
		c.OK("n1", "NOOP")
	})
	t.Run("syntax error then non-sync literal", func(t *testing.T) {
		c := proxytest.Dial(t, p.Addr)
		c.Greeting()
		c.Send(`a LOGIN "\x" {5+}` + "\r\nb NOO\r\n")
		c.Expect("a BAD Invalid escape in quoted string")
		c.Send("n1 NOOP\r\n")
		st := c.Line()
		if st == "b BAD Unknown command" {
			regression(t, "after a syntax error in a line that announces a non-synchronizing literal, the literal's octets are read as a command (proxy/imapwire/reader.go ReadCommand returns the SyntaxError without skipping the literal)")
		}
		wantLine(t, "NOOP after the skipped literal", st, "n1 OK NOOP completed")
	})
	proxytest.WaitZero(t, p.Limiter)
}

// TestBadPreauthStalledLiteral: a client that stops in the middle of a
// literal or a line is told BYE when the pre-authentication time is up,
// on the proxy's fake clock.
func TestBadPreauthStalledLiteral(t *testing.T) {
	clk := proxytest.NewClock()
	p := startSized(t, proxy.Options{PreauthTimeout: time.Minute, Clock: clk})
	for _, tc := range []struct {
		name  string
		steps []step // and then the client stalls
	}{
		{name: "sync", steps: []step{{"a LOGIN {10}\r\n", []string{literalOK}}, {"abc", nil}}},
		{name: "non-sync", steps: []step{{"a LOGIN {10+}\r\nabc", nil}}},
		{name: "mid-line", steps: []step{{"a LOGIN alice", nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			exchange(c, tc.steps)
			clk.ByeAfter(c, time.Minute, 1, byePreauth("1m"))
		})
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestBadPostauthInput: bad input after login. The proxy answers what it
// must not relay; the rest goes to the upstream, which answers it or
// closes; the proxy never hangs and never loses track of the commands.
func TestBadPostauthInput(t *testing.T) {
	p := startSized(t, proxy.Options{})
	for _, tc := range []badCase{
		{name: "compress", steps: []step{{"a COMPRESS DEFLATE\r\n", []string{"a NO [CANNOT] COMPRESS is not available through this proxy"}}}, end: "noop"},
		{name: "starttls", steps: []step{{"a STARTTLS\r\n", []string{"a BAD STARTTLS is not valid in the authenticated state"}}}, end: "noop"},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(loginSelected(t, p.Addr)) })
	}
	// Malformed literal announcements get an answer (the proxy refuses
	// what it cannot frame; go-imap would even read "{99999999999}" as a
	// literal). Pipelined NOOPs show that the proxy neither hangs nor
	// loses track of the commands.
	for _, spec := range []string{"{99999999999}", "{4294967296}", "{-1}", "{1a}", "{}", "{+}"} {
		t.Run("literal "+spec, func(t *testing.T) {
			c := loginSelected(t, p.Addr)
			c.Send("a SEARCH TEXT " + spec + "\r\nn1 NOOP\r\nn2 NOOP\r\n")
			sawA := false
			l := c.Line()
			for ; !strings.HasPrefix(l, "n2 "); l = c.Line() {
				sawA = sawA || strings.HasPrefix(l, "a ")
			}
			if !sawA || !strings.HasPrefix(l, "n2 OK") {
				t.Fatalf("last answer %q; answer to a seen: %v", l, sawA)
			}
			c.OK("n1", "NOOP")
		})
	}
	// Literal announcements the upstream reads as a 2000-octet literal
	// although the proxy might not: the proxy must refuse them (or count
	// them), never relay them as a complete line. The 2000 octets are
	// then sent as lines the proxy would take for small commands.
	for _, tc := range []struct {
		name, send, refusal string // refusal: the answer's prefix
		bug                 string
	}{
		// go-imap, like many servers, takes "{5} CRLF" (a space before
		// the CRLF) as a literal.
		{"literal with trailing space", "a SEARCH TEXT {2000} \r\n", "a ",
			`"a SEARCH TEXT {2000} " (SP before CRLF) was relayed as a complete line, the upstream read it as a 2000-octet literal and answered %q; the framer must refuse literal-like line ends it cannot frame (proxy/imapwire/framer.go lineEnd: LiteralAt's malformed result)`},
		// RFC 9051 number = 1*DIGIT: "{00000002000}" is a literal of
		// 2000 octets for the upstream.
		{"literal with leading zeros", "a SEARCH TEXT {00000002000}\r\n", "a" + tooBig,
			`"a SEARCH TEXT {00000002000}" was relayed as a plain line, the upstream read a 2000-octet literal and answered %q (proxy/imapwire/literal.go LiteralAt must bound the value to 2^32-1, not the digit count)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loginSelected(t, p.Addr)
			c.Send(tc.send)
			l := c.Line()
			if strings.HasPrefix(l, tc.refusal) {
				c.OK("n1", "NOOP")
				return
			}
			wantPrefix(t, "answer to the announcement", l, "+")
			c.Send(strings.Repeat(strings.Repeat("y", 498)+"\r\n", 4) + "\r\n")
			_, st := c.Until("a")
			regression(t, "max_command_size bypassed: "+fmt.Sprintf(tc.bug, st))
		})
	}
	t.Run("garbage", func(t *testing.T) {
		c := loginSelected(t, p.Addr)
		c.Send("\x00\x01\xff garbage\r\n")
		// An answer (the session may go on or end with BYE), or a close;
		// never a hang.
		l, err := c.Client().Line()
		if err == nil && !strings.HasPrefix(l, "* BAD") && !strings.HasPrefix(l, "* BYE") {
			t.Fatalf("got %q", l)
		}
		if proxytest.IsTimeout(err) {
			t.Fatal("no answer and no close")
		}
	})
	proxytest.WaitZero(t, p.Limiter)
}

// probeRE matches the NOOP the proxy sends the upstream before a literal
// or IDLE that follows other commands.
var probeRE = regexp.MustCompile(`^ig[0-9a-f]{16} NOOP$`)

// TestBadPostauthLiteralRefusedByUpstream: the upstream refuses a
// synchronizing literal with a tagged NO (as a server with a literal
// limit does, RFC 9051 §7.5); the client then does not send it, and the
// proxy frames its next bytes as a new command (here it answers COMPRESS
// itself: it never reaches the upstream).
func TestBadPostauthLiteralRefusedByUpstream(t *testing.T) {
	up := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		c.MaxLiteral = 100
		proxytest.Respond("* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN] fake ready\r\n",
			func(_ *proxytest.FakeConn, cmd proxytest.Command) string {
				switch {
				case cmd.Refused:
					return cmd.Tag + " NO [TOOBIG] Literal too big\r\n"
				case strings.EqualFold(cmd.Name, "AUTHENTICATE"):
					return cmd.Tag + " OK [CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE] Logged in\r\n"
				case strings.EqualFold(cmd.Name, "LOGOUT"):
					return proxytest.Logout(cmd.Tag)
				}
				return cmd.Tag + " OK done\r\n"
			})(c)
	})
	p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{MaxCommandSize: 10240}})
	c := proxytest.Login(t, p.Addr, "alice", "secret")
	wantPrefix(t, "the upstream's first command", up.Next(t), "ig1 AUTHENTICATE PLAIN ")
	c.Send("a SEARCH TEXT {5000}\r\n")
	c.Expect("a NO [TOOBIG] Literal too big")
	_, st := c.Cmd("b", "COMPRESS DEFLATE")
	wantLine(t, "after a refused literal, the proxy's own NO", st, "b NO [CANNOT] COMPRESS is not available through this proxy")
	// An accepted literal still streams.
	c.Send("d SEARCH TEXT {5}\r\n")
	c.Expect("+ go ahead")
	c.Send("hello\r\n")
	c.Expect("d OK done")
	c.OK("n1", "NOOP")
	c.Logout("z")
	wantLine(t, "the upstream's first command after login", up.Next(t), "a SEARCH TEXT {5000}")
	// A literal after other commands waits for the proxy's probe, a NOOP
	// under a random tag, to be answered (proxy/README.md).
	if probe := up.Next(t); !probeRE.MatchString(probe) {
		t.Fatalf("the upstream's next command: got %q; want the probe (ig and 16 hex digits, NOOP)", probe)
	}
	for _, want := range []string{"d SEARCH TEXT {5}\r\nhello", "n1 NOOP", "z LOGOUT"} {
		wantLine(t, "the upstream's next command", up.Next(t), want)
	}
	proxytest.WaitZero(t, p.Limiter)
}
