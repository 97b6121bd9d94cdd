package test

// Bad and oversize input through the proxy, before and after login, with
// real sockets. Every case ends in a clear IMAP response or a clean close,
// never a hang: every read has a deadline (rawConn.line, expectClosed).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

const (
	biMax    = 1024
	biTooBig = " BAD [TOOBIG] Command too long (max_command_size=1024)"
	biBye    = "* BYE [TOOBIG] Command too long (max_command_size=1024)"
)

// biBug is a regression guard: it fails a test that saw the proxy behave
// in a way that was once a bug and has been fixed, with a description of
// what went wrong and where to look.
func biBug(t *testing.T, msg string) {
	t.Helper()
	t.Fatal("regression: " + msg)
}

// biExpect reads len(want) lines and compares them exactly.
func biExpect(c *rawConn, want ...string) {
	c.t.Helper()
	for _, w := range want {
		if got := c.line(); got != w {
			c.t.Fatalf("got %.300q; want %q", got, w)
		}
	}
}

// biNoop checks that the session goes on.
func biNoop(c *rawConn) {
	c.t.Helper()
	_, st := c.cmd("n1", "NOOP")
	if !strings.HasPrefix(st, "n1 OK") {
		c.t.Fatalf("NOOP after bad input: got %q; want n1 OK", st)
	}
}

// biSized builds "<prefix><arg>\r\n" (form "line"), "<prefix>{N}\r\n"
// + arg + "\r\n" ("sync") or the same with "{N+}" ("non-sync"), n bytes in
// all, with arg made of fill. It returns the announcing part (all of it
// for "line") and the literal with what follows.
func biSized(form, prefix string, n int, fill byte) (head, rest string) {
	switch form {
	case "line":
		return prefix + strings.Repeat(string(fill), n-len(prefix)-2) + "\r\n", ""
	case "sync", "non-sync":
		plus := ""
		if form == "non-sync" {
			plus = "+"
		}
		// Where the digit count jumps no size fits: then the length is
		// written with a leading zero ("{0999}"), a valid number.
		for _, pad := range []string{"", "0"} {
			for lit := n - len(prefix) - 20; lit < n; lit++ {
				head = fmt.Sprintf("%s{%s%d%s}\r\n", prefix, pad, lit, plus)
				if len(head)+lit+2 == n {
					return head, strings.Repeat(string(fill), lit) + "\r\n"
				}
			}
		}
	}
	panic(form)
}

var biForms = []string{"line", "sync", "non-sync"}

// biUser is the account whose LOGIN command, in form, is n bytes long.
func biUser(form string, n int) (user, pass string) {
	user = fmt.Sprintf("u%s%d", strings.ReplaceAll(form, "-", ""), n)
	head, rest := biSized(form, "a LOGIN "+user+" ", n, 'p')
	if form == "line" {
		pass = strings.TrimPrefix(strings.TrimSuffix(head, "\r\n"), "a LOGIN "+user+" ")
	} else {
		pass = strings.TrimSuffix(rest, "\r\n")
	}
	return user, pass
}

func biStart(t *testing.T, opts proxy.Options) (*testProxy, string) {
	t.Helper()
	var users []server.User
	for _, form := range biForms {
		for _, n := range []int{biMax - 1, biMax, biMax + 1} {
			u, p := biUser(form, n)
			users = append(users, server.User{Username: u, Password: p})
		}
	}
	users = append(users, server.User{Username: "alice", Password: "secret", Messages: 3})
	up := startUpstream(t, users...)
	if opts.MaxCommandSize == 0 {
		opts.MaxCommandSize = biMax
	}
	return startProxy(t, up, opts, limits.Options{}), up
}

// TestBadPreauthCommandSize: LOGIN one byte under, at and over
// max_command_size, as a plain line, with a synchronizing and with a
// non-synchronizing literal. Under and at the cap the login succeeds (the
// password arrived whole); over it the proxy answers BAD [TOOBIG] and the
// connection goes on.
func TestBadPreauthCommandSize(t *testing.T) {
	p, _ := biStart(t, proxy.Options{})
	for _, form := range biForms {
		for _, n := range []int{biMax - 1, biMax, biMax + 1} {
			t.Run(fmt.Sprintf("%s-%d", form, n), func(t *testing.T) {
				c := dialRaw(t, p.Addr)
				c.greeting()
				user, _ := biUser(form, n)
				head, rest := biSized(form, "a LOGIN "+user+" ", n, 'p')
				if len(head)+len(rest) != n {
					t.Fatalf("built %d bytes; want %d", len(head)+len(rest), n)
				}
				c.send(head)
				if form == "sync" {
					// Over the cap by the CRLF after the literal: the
					// literal itself fits, so the proxy asks for it.
					biExpect(c, "+ Ready for literal data")
				}
				c.send(rest)
				if n <= biMax {
					st := c.line()
					if !strings.HasPrefix(st, "a OK [CAPABILITY ") {
						t.Fatalf("login with a %d-byte command: got %q; want a OK", n, st)
					}
					c.cmd("z", "LOGOUT")
					return
				}
				biExpect(c, "a"+biTooBig)
				biNoop(c)
			})
		}
		if form == "line" {
			continue
		}
		// The literal itself takes the command over the cap.
		t.Run(form+"-literal-over", func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.greeting()
			plus := map[string]string{"sync": "", "non-sync": "+"}[form]
			head := fmt.Sprintf("a LOGIN alice {%d%s}\r\n", biMax+1-len("a LOGIN alice {1006}\r\n")-len(plus), plus)
			c.send(head)
			if form == "non-sync" {
				c.send(strings.Repeat("p", biMax+1-len(head)) + "\r\n")
			}
			// No "+" for a synchronizing literal that cannot fit: the
			// BAD comes at once, and what follows is a new command.
			biExpect(c, "a"+biTooBig)
			biNoop(c)
		})
	}
	waitZero(t, p.Limiter)
}

// TestBadPostauthCommandSize: the same sizes after login, with SEARCH
// TEXT relayed to the upstream.
func TestBadPostauthCommandSize(t *testing.T) {
	p, _ := biStart(t, proxy.Options{})
	for _, form := range biForms {
		for _, n := range []int{biMax - 1, biMax} {
			t.Run(fmt.Sprintf("%s-%d", form, n), func(t *testing.T) {
				c := login(t, p.Addr, "alice", "secret")
				c.cmd("s", "SELECT INBOX")
				head, rest := biSized(form, "a SEARCH TEXT ", n, 'x')
				c.send(head)
				if form == "sync" {
					if l := c.line(); !strings.HasPrefix(l, "+") {
						t.Fatalf("got %q; want the upstream's continuation", l)
					}
				}
				c.send(rest)
				if _, st := c.until("a"); !strings.HasPrefix(st, "a OK") {
					t.Fatalf("%d-byte SEARCH: got %q; want a OK", n, st)
				}
				biNoop(c)
			})
		}
		// One byte over, the literal (or the line) itself over the cap.
		t.Run(fmt.Sprintf("%s-%d", form, biMax+1), func(t *testing.T) {
			c := login(t, p.Addr, "alice", "secret")
			c.cmd("s", "SELECT INBOX")
			var send string
			switch form {
			case "line":
				send, _ = biSized("line", "a SEARCH TEXT ", biMax+1, 'x')
			case "sync":
				send = fmt.Sprintf("a SEARCH TEXT {%d}\r\n", biMax+1-len("a SEARCH TEXT {1003}\r\n"))
			case "non-sync":
				head := fmt.Sprintf("a SEARCH TEXT {%d+}\r\n", biMax+1-len("a SEARCH TEXT {1002+}\r\n"))
				send = head + strings.Repeat("x", biMax+1-len(head)) + "\r\n"
			}
			c.send(send)
			biExpect(c, "a"+biTooBig)
			c.send("n1 NOOP\r\n")
			st := c.line()
			if st == biTooBig {
				biBug(t, "after a BAD [TOOBIG] the proxy throws away the client's next command and answers it \""+biTooBig+"\" with an empty tag: cmdFramer.stepLine compares the refused command's stale f.size plus the (empty) buffer with max (proxy/framer.go stepLine)")
				return
			}
			if !strings.HasPrefix(st, "n1 OK") {
				t.Fatalf("NOOP after BAD: got %q", st)
			}
		})
		if form == "line" {
			continue
		}
		// One byte over because of the CRLF that must follow the
		// literal: the proxy can tell before relaying the literal.
		t.Run(form+"-crlf-over", func(t *testing.T) {
			c := login(t, p.Addr, "alice", "secret")
			c.cmd("s", "SELECT INBOX")
			head, rest := biSized(form, "a SEARCH TEXT ", biMax+1, 'x')
			c.send(head)
			if form == "sync" {
				l := c.line()
				if strings.HasPrefix(l, "+") {
					c.send(rest)
					if l = c.line(); l == biBye {
						c.expectClosed()
						biBug(t, "a synchronizing literal that leaves no room for the CRLF after it is relayed, and the CRLF then ends the session with BYE [TOOBIG] instead of a BAD (proxy/framer.go lineEnd must count size+N+2, not size+N)")
						return
					}
				}
				if l != "a"+biTooBig {
					t.Fatalf("got %q; want a%s", l, biTooBig)
				}
			} else {
				c.send(rest)
				if l := c.line(); l == biBye {
					c.expectClosed()
					biBug(t, "a non-synchronizing literal that leaves no room for the CRLF after it ends the session with BYE [TOOBIG] instead of a BAD (proxy/framer.go lineEnd)")
					return
				} else if l != "a"+biTooBig {
					t.Fatalf("got %q; want a%s", l, biTooBig)
				}
			}
			biNoop(c)
		})
	}
	waitZero(t, p.Limiter)
}

// TestBadPostauthOverflowAfterForwarded: the first part of a command has
// reached the upstream when the rest takes it over the cap; the proxy can
// neither take it back nor answer it alone, so it says BYE and closes
// both sides.
func TestBadPostauthOverflowAfterForwarded(t *testing.T) {
	p, _ := biStart(t, proxy.Options{})
	for _, tt := range []struct{ name, second string }{
		{"line", "hello TEXT " + strings.Repeat("x", 1100) + "\r\n"},
		{"literal", "hello TEXT {2000+}\r\n" + strings.Repeat("x", 2000) + "\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := login(t, p.Addr, "alice", "secret")
			c.cmd("s", "SELECT INBOX")
			c.send("a SEARCH TEXT {5}\r\n")
			if l := c.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("got %q; want the upstream's continuation", l)
			}
			c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.nc.Write([]byte(tt.second)) // may fail once the proxy closed
			biExpect(c, biBye)
			c.expectClosed()
		})
	}
	waitZero(t, p.Limiter)
}

// biStep is one exchange: send, then expect lines.
type biStep struct {
	send   string
	expect []string
}

type biCase struct {
	name  string
	steps []biStep
	end   string // "noop": the connection goes on; "closed"
}

func biRun(t *testing.T, c *rawConn, tc biCase) {
	t.Helper()
	for _, s := range tc.steps {
		if s.send != "" {
			c.send(s.send)
		}
		biExpect(c, s.expect...)
	}
	switch tc.end {
	case "noop":
		biNoop(c)
	case "closed":
		c.expectClosed()
	}
}

func TestBadPreauthInput(t *testing.T) {
	p, _ := biStart(t, proxy.Options{})
	bad := func(name, send string, expect ...string) biCase {
		return biCase{name: name, steps: []biStep{{send, expect}}, end: "noop"}
	}
	cases := []biCase{
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
		bad("huge line", "a LOGIN "+strings.Repeat("u", 100000)+" p\r\n", "a"+biTooBig),
		bad("huge line ending in sync literal", "a LOGIN "+strings.Repeat("u", 5000)+" {5}\r\n", "a"+biTooBig),
		bad("huge line ending in non-sync literal", "a LOGIN "+strings.Repeat("u", 5000)+" {5+}\r\nb NOO\r\n", "a"+biTooBig),
		{name: "non-sync literal too big to skip", steps: []biStep{{"a LOGIN {99999+}\r\n", []string{biBye}}}, end: "closed"},
		{name: "max literal non-sync", steps: []biStep{{"a LOGIN {4294967295+}\r\n", []string{biBye}}}, end: "closed"},
		{name: "http", steps: []biStep{{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", []string{
			"GET BAD Unknown command", "Host: BAD Unknown command", "* BAD Empty command line",
			"* BYE Too many invalid commands (max_bad_commands=3)"}}}, end: "closed"},
		{name: "http post", steps: []biStep{{"POST /login HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", []string{
			"POST BAD Unknown command", "Content-Length: BAD Unknown command", "* BAD Empty command line",
			"* BYE Too many invalid commands (max_bad_commands=3)"}}}, end: "closed"},
		{name: "three bad then closed", steps: []biStep{
			{"\x00\r\n", []string{"* BAD Invalid tag"}},
			{"a LOGIN {-1}\r\n", []string{"a BAD Invalid literal"}},
			{"a LOGIN " + strings.Repeat("u", 2000) + "\r\n", []string{"a" + biTooBig, "* BYE Too many invalid commands (max_bad_commands=3)"}},
		}, end: "closed"},
		{name: "authenticate oversize response", steps: []biStep{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{strings.Repeat("A", 2000) + "\r\n", []string{"a" + biTooBig}},
		}, end: "noop"},
		{name: "authenticate cancelled", steps: []biStep{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{"*\r\n", []string{"a BAD Authentication cancelled"}},
		}, end: "noop"},
		{name: "authenticate bad base64", steps: []biStep{
			{"a AUTHENTICATE PLAIN\r\n", []string{"+ "}},
			{"!!!\r\n", []string{"a BAD Invalid base64 in SASL response"}},
		}, end: "noop"},
		bad("authenticate no mechanism", "a AUTHENTICATE\r\n", "a BAD AUTHENTICATE takes a mechanism and an optional initial response"),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.greeting()
			biRun(t, c, tc)
		})
	}

	// A line without CRLF, then the client closes its side: the proxy
	// closes without an answer.
	t.Run("no CRLF then EOF", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.greeting()
		c.send("a NOOP")
		c.nc.(*net.TCPConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("EOF mid-literal", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.greeting()
		c.send("a LOGIN {10}\r\n")
		biExpect(c, "+ Ready for literal data")
		c.send("abc")
		c.nc.(*net.TCPConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("oversize line with invalid tag", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.greeting()
		c.send(strings.Repeat("\x00", 2000) + "\r\n")
		l := c.line()
		if strings.HasPrefix(l, "\x00") && strings.HasSuffix(l, biTooBig) {
			biBug(t, fmt.Sprintf("the proxy echoes the first %d octets of an oversize line as the tag of BAD [TOOBIG] without checking it is a valid tag (proxy/parse.go readCommand: splitTagName without validTag)", len(l)-len(biTooBig)))
			return
		}
		if l != "*"+biTooBig {
			t.Fatalf("got %.100q; want *%s", l, biTooBig)
		}
		biNoop(c)
	})
	t.Run("syntax error then non-sync literal", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.greeting()
		c.send(`a LOGIN "\x" {5+}` + "\r\nb NOO\r\n")
		biExpect(c, "a BAD Invalid escape in quoted string")
		c.send("n1 NOOP\r\n")
		st := c.line()
		if st == "b BAD Unknown command" {
			biBug(t, "after a syntax error in a line that announces a non-synchronizing literal, the literal's octets are read as a command (proxy/parse.go readCommand returns the syntaxError without skipping the literal)")
			return
		}
		if st != "n1 OK NOOP completed" {
			t.Fatalf("got %q", st)
		}
	})
	waitZero(t, p.Limiter)
}

// TestBadPreauthStalledLiteral: a client that stops in the middle of a
// literal is told BYE when the pre-authentication time is up.
func TestBadPreauthStalledLiteral(t *testing.T) {
	p, _ := biStart(t, proxy.Options{PreauthTimeout: 500 * time.Millisecond})
	for _, tt := range []struct{ name, send string }{
		{"sync", "a LOGIN {10}\r\n"},
		{"non-sync", "a LOGIN {10+}\r\nabc"},
		{"mid-line", "a LOGIN alice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.greeting()
			c.send(tt.send)
			if tt.name == "sync" {
				biExpect(c, "+ Ready for literal data")
				c.send("abc")
			}
			biExpect(c, "* BYE Autologout; not authenticated in time (preauth_timeout=500ms)")
			c.expectClosed()
		})
	}
	waitZero(t, p.Limiter)
}

// TestBadPostauthInput: bad input after login. The proxy answers what it
// must not relay; the rest goes to the upstream, which answers it or
// closes; the proxy never hangs and never loses track of the commands.
func TestBadPostauthInput(t *testing.T) {
	p, _ := biStart(t, proxy.Options{})
	sess := func(t *testing.T) *rawConn {
		c := login(t, p.Addr, "alice", "secret")
		if _, st := c.cmd("s", "SELECT INBOX"); !strings.HasPrefix(st, "s OK") {
			t.Fatalf("select: %q", st)
		}
		return c
	}
	t.Run("compress", func(t *testing.T) {
		c := sess(t)
		_, st := c.cmd("a", "COMPRESS DEFLATE")
		if st != "a NO [CANNOT] COMPRESS is not available through this proxy" {
			t.Fatalf("got %q", st)
		}
		biNoop(c)
	})
	t.Run("starttls", func(t *testing.T) {
		c := sess(t)
		_, st := c.cmd("a", "STARTTLS")
		if st != "a BAD STARTTLS is not valid in the authenticated state" {
			t.Fatalf("got %q", st)
		}
		biNoop(c)
	})
	// Malformed literal announcements get an answer (the proxy refuses
	// what it cannot frame; go-imap would even read "{99999999999}" as a
	// literal). Pipelined NOOPs show that the proxy neither hangs nor
	// loses track of the commands.
	for _, spec := range []string{"{99999999999}", "{4294967296}", "{-1}", "{1a}", "{}", "{+}"} {
		t.Run("literal "+spec, func(t *testing.T) {
			c := sess(t)
			c.send("a SEARCH TEXT " + spec + "\r\nn1 NOOP\r\nn2 NOOP\r\n")
			sawA := false
			for {
				l := c.line()
				if strings.HasPrefix(l, "a ") {
					sawA = true
				}
				if strings.HasPrefix(l, "n2 ") {
					if !sawA || !strings.HasPrefix(l, "n2 OK") {
						t.Fatalf("last answer %q; answer to a seen: %v", l, sawA)
					}
					break
				}
			}
			biNoop(c)
		})
	}
	// go-imap, like many servers, takes "{5} CRLF" (a space before the
	// CRLF) as a literal. The proxy must not relay it as a complete line:
	// the upstream would then read octets the proxy frames as separate
	// commands as a literal, past max_command_size.
	t.Run("literal with trailing space", func(t *testing.T) {
		c := sess(t)
		c.send("a SEARCH TEXT {2000} \r\n")
		l := c.line()
		if strings.HasPrefix(l, "a ") {
			biNoop(c)
			return
		}
		if !strings.HasPrefix(l, "+") {
			t.Fatalf("got %q", l)
		}
		c.send(strings.Repeat(strings.Repeat("y", 498)+"\r\n", 4) + "\r\n")
		_, st := c.until("a")
		biBug(t, fmt.Sprintf("max_command_size bypassed: \"a SEARCH TEXT {2000} \" (SP before CRLF) was relayed as a complete line, the upstream read it as a 2000-octet literal and answered %q; the framer must refuse literal-like line ends it cannot frame (proxy/framer.go lineEnd: literalAt's bad result)", st))
	})
	t.Run("garbage", func(t *testing.T) {
		c := sess(t)
		c.send("\x00\x01\xff garbage\r\n")
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if l, err := c.br.ReadString('\n'); err == nil {
			// An answer: the session may go on or end with BYE.
			if !strings.HasPrefix(l, "* BAD") && !strings.HasPrefix(l, "* BYE") {
				t.Fatalf("got %q", l)
			}
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("no answer and no close")
		}
	})
	// RFC 9051 number = 1*DIGIT: "{00000002000}" is a literal of 2000
	// octets for the upstream. The proxy must count it.
	t.Run("literal with leading zeros", func(t *testing.T) {
		c := sess(t)
		c.send("a SEARCH TEXT {00000002000}\r\n")
		l := c.line()
		if l == "a"+biTooBig {
			biNoop(c)
			return
		}
		if !strings.HasPrefix(l, "+") {
			t.Fatalf("got %q", l)
		}
		// The upstream asks for 2000 octets: send them as lines the proxy
		// takes for small commands.
		c.send(strings.Repeat(strings.Repeat("y", 498)+"\r\n", 4) + "\r\n")
		_, st := c.until("a")
		biBug(t, fmt.Sprintf("max_command_size bypassed: \"a SEARCH TEXT {00000002000}\" was relayed as a plain line, the upstream read a 2000-octet literal and answered %q (proxy/wire.go literalAt must bound the value to 2^32-1, not the digit count)", st))
	})
	waitZero(t, p.Limiter)
}

// biFakeUpstream is a scripted IMAP server: it accepts any login, refuses
// synchronizing literals over 100 octets with a tagged NO (as a server
// with a literal limit does, RFC 9051 §7.5), answers every other command
// OK, and reports each command it received (literals inline).
func biFakeUpstream(t *testing.T) (addr string, got <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cmds := make(chan string, 100)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go biFakeConn(nc, cmds)
		}
	}()
	return ln.Addr().String(), cmds
}

func biFakeConn(nc net.Conn, cmds chan<- string) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	io.WriteString(nc, "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN] fake ready\r\n")
	for {
		var cmd strings.Builder
		refused := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			cmd.WriteString(line)
			trimmed := strings.TrimRight(line, "\r\n")
			open := strings.LastIndexByte(trimmed, '{')
			if open < 0 || !strings.HasSuffix(trimmed, "}") {
				break
			}
			spec := trimmed[open+1 : len(trimmed)-1]
			sync := !strings.HasSuffix(spec, "+")
			var n int
			if _, err := fmt.Sscanf(strings.TrimSuffix(spec, "+"), "%d", &n); err != nil {
				break
			}
			if sync && n > 100 {
				refused = true
				break
			}
			if sync {
				io.WriteString(nc, "+ go ahead\r\n")
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(br, buf); err != nil {
				return
			}
			cmd.Write(buf)
		}
		s := cmd.String()
		tag, rest, _ := strings.Cut(s, " ")
		name, _, _ := strings.Cut(strings.TrimRight(rest, "\r\n"), " ")
		cmds <- strings.TrimRight(s, "\r\n")
		switch {
		case refused:
			io.WriteString(nc, tag+" NO [TOOBIG] Literal too big\r\n")
		case strings.EqualFold(name, "AUTHENTICATE"):
			io.WriteString(nc, tag+" OK [CAPABILITY IMAP4rev1 LITERAL+ COMPRESS=DEFLATE] Logged in\r\n")
		case strings.EqualFold(name, "LOGOUT"):
			io.WriteString(nc, "* BYE bye\r\n"+tag+" OK LOGOUT completed\r\n")
			return
		default:
			io.WriteString(nc, tag+" OK done\r\n")
		}
	}
}

// TestBadPostauthLiteralRefusedByUpstream: the upstream refuses a
// synchronizing literal with a tagged NO; the client then does not send
// it, and the proxy frames its next bytes as a new command (here it
// answers COMPRESS itself: it never reaches the upstream).
func TestBadPostauthLiteralRefusedByUpstream(t *testing.T) {
	up, got := biFakeUpstream(t)
	p := startProxy(t, up, proxy.Options{MaxCommandSize: 10240}, limits.Options{})
	c := login(t, p.Addr, "alice", "secret")
	next := func() string {
		select {
		case l := <-got:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream got no command")
			return ""
		}
	}
	if l := next(); !strings.HasPrefix(l, "ig1 AUTHENTICATE PLAIN ") {
		t.Fatalf("upstream got %q", l)
	}
	c.send("a SEARCH TEXT {5000}\r\n")
	biExpect(c, "a NO [TOOBIG] Literal too big")
	_, st := c.cmd("b", "COMPRESS DEFLATE")
	if st != "b NO [CANNOT] COMPRESS is not available through this proxy" {
		t.Fatalf("after a refused literal: got %q; want the proxy's own NO", st)
	}
	// An accepted literal still streams.
	c.send("d SEARCH TEXT {5}\r\n")
	biExpect(c, "+ go ahead")
	c.send("hello\r\n")
	biExpect(c, "d OK done")
	biNoop(c)
	c.cmd("z", "LOGOUT")
	c.expectClosed()
	want := []string{"a SEARCH TEXT {5000}", "d SEARCH TEXT {5}\r\nhello", "n1 NOOP", "z LOGOUT"}
	for _, w := range want {
		if l := next(); l != w {
			t.Fatalf("upstream got %q; want %q", l, w)
		}
	}
	waitZero(t, p.Limiter)
}
