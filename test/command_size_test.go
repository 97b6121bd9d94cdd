package test

// Commands one byte under, at and over max_command_size, before and
// after login, as a plain line and with synchronizing and
// non-synchronizing literals.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// The cap these tests run with, and the proxy's answers to a command
// over it: BAD when it can refuse the command alone, BYE when part of it
// already went to the upstream.
const (
	maxCmd    = 1024
	tooBig    = " BAD [TOOBIG] Command too long (max_command_size=1024)"
	byeTooBig = "* BYE [TOOBIG] Command too long (max_command_size=1024)"
)

// regression fails a test that saw the proxy behave in a way that was
// once a bug and has been fixed, with a description of what went wrong
// and where to look.
func regression(t *testing.T, msg string) {
	t.Helper()
	t.Fatal("regression: " + msg)
}

// The forms a command's last argument takes.
var forms = []string{"line", "sync", "non-sync"}

// sized builds "<prefix><arg>\r\n" (form "line"), "<prefix>{N}\r\n" +
// arg + "\r\n" ("sync") or the same with "{N+}" ("non-sync"), n bytes in
// all, with arg made of fill. It returns the announcing part (all of it
// for "line") and the literal with what follows.
func sized(form, prefix string, n int, fill byte) (head, rest string) {
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

// sizedUser is the account whose LOGIN command, in form, is n bytes long.
func sizedUser(form string, n int) (user, pass string) {
	user = fmt.Sprintf("u%s%d", strings.ReplaceAll(form, "-", ""), n)
	head, rest := sized(form, "a LOGIN "+user+" ", n, 'p')
	if form == "line" {
		pass = strings.TrimPrefix(strings.TrimSuffix(head, "\r\n"), "a LOGIN "+user+" ")
	} else {
		pass = strings.TrimSuffix(rest, "\r\n")
	}
	return user, pass
}

// startSized starts imapd with the sizedUser accounts and alice (3
// messages), and a proxy with opts, by default max_command_size 1024.
func startSized(t *testing.T, opts proxy.Options) *proxytest.Proxy {
	t.Helper()
	var users []server.User
	for _, form := range forms {
		for _, n := range []int{maxCmd - 1, maxCmd, maxCmd + 1} {
			u, p := sizedUser(form, n)
			users = append(users, server.User{Username: u, Password: p})
		}
	}
	users = append(users, server.User{Username: "alice", Password: "secret", Messages: 3})
	if opts.MaxCommandSize == 0 {
		opts.MaxCommandSize = maxCmd
	}
	return proxytest.Start(t, proxytest.Config{Upstream: proxytest.Imapd(t, users...), Options: opts})
}

// TestBadPreauthCommandSize: LOGIN one byte under, at and over
// max_command_size, as a plain line, with a synchronizing and with a
// non-synchronizing literal. Under and at the cap the login succeeds (the
// password arrived whole); over it the proxy answers BAD [TOOBIG] and the
// connection goes on.
func TestBadPreauthCommandSize(t *testing.T) {
	p := startSized(t, proxy.Options{})
	for _, form := range forms {
		for _, n := range []int{maxCmd - 1, maxCmd, maxCmd + 1} {
			t.Run(fmt.Sprintf("%s-%d", form, n), func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				user, _ := sizedUser(form, n)
				head, rest := sized(form, "a LOGIN "+user+" ", n, 'p')
				if len(head)+len(rest) != n {
					t.Fatalf("built %d bytes; want %d", len(head)+len(rest), n)
				}
				c.Send(head)
				if form == "sync" {
					// Over the cap by the CRLF after the literal: the
					// literal itself fits, so the proxy asks for it.
					c.Expect(literalOK)
				}
				c.Send(rest)
				if n <= maxCmd {
					c.ExpectPrefix("a OK [CAPABILITY ")
					c.Cmd("z", "LOGOUT")
					return
				}
				c.Expect("a" + tooBig)
				c.OK("n1", "NOOP")
			})
		}
		if form == "line" {
			continue
		}
		// The literal itself takes the command over the cap.
		t.Run(form+"-literal-over", func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			plus := map[string]string{"sync": "", "non-sync": "+"}[form]
			head := fmt.Sprintf("a LOGIN alice {%d%s}\r\n", maxCmd+1-len("a LOGIN alice {1006}\r\n")-len(plus), plus)
			c.Send(head)
			if form == "non-sync" {
				c.Send(strings.Repeat("p", maxCmd+1-len(head)) + "\r\n")
			}
			// No "+" for a synchronizing literal that cannot fit: the
			// BAD comes at once, and what follows is a new command.
			c.Expect("a" + tooBig)
			c.OK("n1", "NOOP")
		})
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestBadPostauthCommandSize: the same sizes after login, with SEARCH
// TEXT relayed to the upstream.
func TestBadPostauthCommandSize(t *testing.T) {
	p := startSized(t, proxy.Options{})
	for _, form := range forms {
		for _, n := range []int{maxCmd - 1, maxCmd} {
			t.Run(fmt.Sprintf("%s-%d", form, n), func(t *testing.T) {
				c := loginSelected(t, p.Addr)
				head, rest := sized(form, "a SEARCH TEXT ", n, 'x')
				c.Send(head)
				if form == "sync" {
					c.ExpectPrefix("+") // the upstream's continuation
				}
				c.Send(rest)
				if _, st := c.Until("a"); !strings.HasPrefix(st, "a OK") {
					t.Fatalf("%d-byte SEARCH: got %q; want a OK", n, st)
				}
				c.OK("n1", "NOOP")
			})
		}
		// One byte over, the literal (or the line) itself over the cap.
		t.Run(fmt.Sprintf("%s-%d", form, maxCmd+1), func(t *testing.T) {
			c := loginSelected(t, p.Addr)
			send, _ := sized("line", "a SEARCH TEXT ", maxCmd+1, 'x')
			switch form {
			case "sync":
				send = fmt.Sprintf("a SEARCH TEXT {%d}\r\n", maxCmd+1-len("a SEARCH TEXT {1003}\r\n"))
			case "non-sync":
				head := fmt.Sprintf("a SEARCH TEXT {%d+}\r\n", maxCmd+1-len("a SEARCH TEXT {1002+}\r\n"))
				send = head + strings.Repeat("x", maxCmd+1-len(head)) + "\r\n"
			}
			c.Send(send)
			c.Expect("a" + tooBig)
			c.Send("n1 NOOP\r\n")
			st := c.Line()
			if st == tooBig {
				regression(t, "after a BAD [TOOBIG] the proxy throws away the client's next command and answers it \""+tooBig+"\" with an empty tag: CommandFramer.nextLine compares the refused command's stale f.size plus the (empty) buffer with max (proxy/imapwire/framer.go nextLine)")
			}
			wantPrefix(t, "NOOP after BAD", st, "n1 OK")
		})
		if form == "line" {
			continue
		}
		// One byte over because of the CRLF that must follow the
		// literal: the proxy can tell before relaying the literal.
		t.Run(form+"-crlf-over", func(t *testing.T) {
			c := loginSelected(t, p.Addr)
			head, rest := sized(form, "a SEARCH TEXT ", maxCmd+1, 'x')
			c.Send(head)
			l := ""
			if form == "sync" {
				if l = c.Line(); strings.HasPrefix(l, "+") {
					c.Send(rest)
					l = c.Line()
				}
			} else {
				c.Send(rest)
				l = c.Line()
			}
			if l == byeTooBig {
				c.ExpectClosed()
				regression(t, "a "+form+" literal that leaves no room for the CRLF after it ends the session with BYE [TOOBIG] instead of a BAD (proxy/imapwire/framer.go lineEnd must count size+N+2, not size+N)")
			}
			wantLine(t, "command over the cap by its last CRLF", l, "a"+tooBig)
			c.OK("n1", "NOOP")
		})
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestBadPostauthOverflowAfterForwarded: the first part of a command has
// reached the upstream when the rest takes it over the cap; the proxy can
// neither take it back nor answer it alone, so it says BYE and closes
// both sides.
func TestBadPostauthOverflowAfterForwarded(t *testing.T) {
	p := startSized(t, proxy.Options{})
	for _, tt := range []struct{ name, second string }{
		{"line", "hello TEXT " + strings.Repeat("x", 1100) + "\r\n"},
		{"literal", "hello TEXT {2000+}\r\n" + strings.Repeat("x", 2000) + "\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := loginSelected(t, p.Addr)
			c.Send("a SEARCH TEXT {5}\r\n")
			c.ExpectPrefix("+")        // the upstream's continuation
			c.Client().Send(tt.second) // may fail once the proxy closed
			c.Expect(byeTooBig)
			c.ExpectClosed()
		})
	}
	proxytest.WaitZero(t, p.Limiter)
}
