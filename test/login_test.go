package test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

// step is one write of the client (if not ""), and the lines the proxy
// must then answer, exactly.
type step struct {
	send   string
	expect []string
}

// line is a single step: the command line s, with CRLF.
func line(s string) []step { return []step{{send: s + "\r\n"}} }

// literalOK is the proxy's continuation request for a synchronizing
// literal before login.
const literalOK = "+ Ready for literal data"

// exchange sends the steps on c and reads the answers.
func exchange(c *proxytest.Conn, steps []step) {
	for _, s := range steps {
		if s.send != "" {
			c.Send(s.send)
		}
		c.Expect(s.expect...)
	}
}

// TestE2ELoginForms logs in with every argument form of LOGIN (RFC 9051
// §6.2.3 with astring arguments: atom, quoted string with escapes,
// synchronizing and non-synchronizing literals), and then relays a SELECT.
func TestE2ELoginForms(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		utf8, mixed := extraPass(t, "utf8user"), extraPass(t, "mixeduser")
		n := func(s string) string { return strconv.Itoa(len(s)) }
		lit := []string{literalOK}
		cases := []struct {
			name   string
			steps  []step
			exists string // a line SELECT INBOX must answer, if not ""
		}{
			{"atoms", line("a LOGIN " + user + " " + pass), "* 1 EXISTS"},
			{"quoted", line(`a LOGIN "` + user + `" "` + pass + `"`), "* 1 EXISTS"},
			{"quoted user atom pass", line(`a LOGIN "` + user + `" ` + pass), ""},
			{"lower-case command", line("a login " + user + " " + pass), ""},
			{"spaces", line(`a LOGIN spaceuser "pass word with spaces"`), ""},
			{"double quote", line(`a LOGIN quoteuser "pa\"ss\"word"`), ""},
			{"backslash", line(`a LOGIN bsuser "pa\\ss\\word"`), ""},
			{"mixed escapes", line(`a LOGIN "mixeduser" " a \"b\" \\c\\ d "`), ""},
			{"mixed as literal", []step{{"a LOGIN mixeduser {" + n(mixed) + "}\r\n", lit}, {mixed + "\r\n", nil}}, ""},
			{"utf8 quoted", line(`a LOGIN utf8user "` + utf8 + `"`), ""},
			{"utf8 sync literal", []step{{"a LOGIN utf8user {" + n(utf8) + "}\r\n", lit}, {utf8 + "\r\n", nil}}, ""},
			{"utf8 non-sync literal", line("a LOGIN utf8user {" + n(utf8) + "+}\r\n" + utf8), ""},
			{"user sync literal", []step{{"a LOGIN {" + n(user) + "}\r\n", lit}, {user + " " + pass + "\r\n", nil}}, "* 1 EXISTS"},
			{"user non-sync literal", line("a LOGIN {" + n(user) + "+}\r\n" + user + ` "` + pass + `"`), "* 1 EXISTS"},
			{"both sync literals", []step{
				{"a LOGIN {8}\r\n", lit}, {"utf8user {" + n(utf8) + "}\r\n", lit}, {utf8 + "\r\n", nil},
			}, ""},
			{"both non-sync literals", line("a LOGIN {8+}\r\nutf8user {" + n(utf8) + "+}\r\n" + utf8), ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				exchange(c, tc.steps)
				c.LoggedIn("a")
				c.SelectAndLogout(tc.exists)
			})
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}

// TestE2EAuthenticate covers AUTHENTICATE (RFC 9051 §6.2.2) with PLAIN
// (RFC 4616) and LOGIN, with and without SASL-IR (RFC 4959), cancelled,
// empty, and with an authorization identity.
func TestE2EAuthenticate(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		plain := proxytest.SASLPlain(user, pass)
		b64 := proxytest.Base64
		empty := []string{"+ "}
		askUser, askPass := []string{"+ VXNlcm5hbWU6"}, []string{"+ UGFzc3dvcmQ6"} // "Username:", "Password:"
		cases := []struct {
			name  string
			steps []step
			// refused lists the prefixes one of which the tagged answer
			// must have; the connection then stays usable. Empty: the
			// login succeeds, and SELECT answers exists (if not "").
			refused []string
			exists  string
		}{
			{name: "plain with initial response", steps: line("a AUTHENTICATE PLAIN " + plain), exists: "* 1 EXISTS"},
			{name: "plain lower-case mechanism", steps: line("a authenticate plain " + plain), exists: "* 1 EXISTS"},
			{name: "plain without initial response", steps: []step{{"a AUTHENTICATE PLAIN\r\n", empty}, {plain + "\r\n", nil}}, exists: "* 1 EXISTS"},
			{name: "plain utf8 password", steps: line("a AUTHENTICATE PLAIN " + proxytest.SASLPlain("utf8user", extraPass(t, "utf8user")))},
			{name: "plain authzid equal to user", steps: line("a AUTHENTICATE PLAIN " + b64(user+"\x00"+user+"\x00"+pass)), exists: "* 1 EXISTS"},
			// RFC 4959: "=" is an empty initial response; an empty PLAIN
			// message is malformed and must fail without a login.
			{name: "plain empty initial response", steps: line("a AUTHENTICATE PLAIN ="), refused: []string{"a NO", "a BAD"}},
			// RFC 9051 §6.2.2: a cancelled exchange ends with BAD.
			{name: "plain cancelled", steps: []step{{"a AUTHENTICATE PLAIN\r\n", empty}, {"*\r\n", nil}}, refused: []string{"a BAD"}},
			{name: "login mechanism", steps: []step{
				{"a AUTHENTICATE LOGIN\r\n", askUser}, {b64(user) + "\r\n", askPass}, {b64(pass) + "\r\n", nil},
			}, exists: "* 1 EXISTS"},
			{name: "login mechanism with initial response", steps: []step{
				{"a AUTHENTICATE LOGIN " + b64(user) + "\r\n", askPass}, {b64(pass) + "\r\n", nil},
			}, exists: "* 1 EXISTS"},
			{name: "login mechanism nasty password", steps: []step{
				{"a AUTHENTICATE LOGIN " + b64("mixeduser") + "\r\n", askPass}, {b64(extraPass(t, "mixeduser")) + "\r\n", nil},
			}},
			{name: "login mechanism cancelled at password", steps: []step{
				{"a AUTHENTICATE LOGIN " + b64(user) + "\r\n", askPass}, {"*\r\n", nil},
			}, refused: []string{"a BAD"}},
			{name: "plain other authzid", steps: line("a AUTHENTICATE PLAIN " + b64("spaceuser\x00"+user+"\x00"+pass)),
				refused: []string{"a NO [AUTHORIZATIONFAILED]"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				exchange(c, tc.steps)
				if len(tc.refused) == 0 {
					c.LoggedIn("a")
					c.SelectAndLogout(tc.exists)
					return
				}
				if _, st := c.Until("a"); !slices.ContainsFunc(tc.refused, func(p string) bool { return strings.HasPrefix(st, p) }) {
					t.Fatalf("got %q; want one of %q", st, tc.refused)
				}
				// Still unauthenticated, and able to log in.
				c.OK("n", "NOOP")
				c.LogIn("z", "AUTHENTICATE PLAIN "+plain)
				c.SelectAndLogout("* 1 EXISTS")
			})
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}

// TestE2EWrongPasswordThenRight checks a failed login leaves the
// connection usable for a successful one (RFC 9051 §6.2.3), and that an
// unknown user gets the same answer as a wrong password.
func TestE2EWrongPasswordThenRight(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		const failed = " NO [AUTHENTICATIONFAILED]"
		for _, tc := range []struct {
			name     string
			failures []string // commands, tagged f0, f1 ...: each fails
			login    string
		}{
			{"login", []string{"LOGIN " + user + " wrong-" + pass}, "LOGIN " + user + " " + pass},
			{"authenticate then login", []string{
				"AUTHENTICATE PLAIN " + proxytest.SASLPlain(user, pass+"x"),
				"LOGIN nosuchuser " + pass,
			}, "AUTHENTICATE PLAIN " + proxytest.SASLPlain(user, pass)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				for i, cmd := range tc.failures {
					tag := "f" + strconv.Itoa(i)
					if _, st := c.Cmd(tag, cmd); !strings.HasPrefix(st, tag+failed) {
						t.Fatalf("%s: got %q; want %s%s", cmd, st, tag, failed)
					}
				}
				c.LogIn("b", tc.login)
				c.SelectAndLogout("* 1 EXISTS")
			})
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}
