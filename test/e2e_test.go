package test

// End-to-end tests: the same test bodies run through the proxy against two
// upstreams, the bundled imapd (go-imap v2) and a private Dovecot, over
// real loopback sockets. Synchronisation uses deadlines, channels and
// imapclient's synchronous calls; nothing sleeps for a guessed time.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// The main test account, present in both upstreams.
const (
	e2eUser = "e2e"
	e2ePass = "e2e-secret"
)

// e2eExtraUsers are accounts whose passwords need quoting, escaping or a
// literal to be sent at all. Both upstreams get them with exactly these
// passwords. (Dovecot's passwd-file cannot hold ':' or line breaks.)
var e2eExtraUsers = []struct{ User, Pass string }{
	{"spaceuser", "pass word with spaces"},
	{"quoteuser", `pa"ss"word`},
	{"bsuser", `pa\ss\word`},
	{"mixeduser", ` a "b" \c\ d `},
	{"utf8user", "pässwörd-日本語-🔑"},
}

func e2eExtraPass(t *testing.T, user string) string {
	t.Helper()
	for _, u := range e2eExtraUsers {
		if u.User == user {
			return u.Pass
		}
	}
	t.Fatalf("no extra user %q", user)
	return ""
}

// e2eSeedMessage is appended to the main account's INBOX directly at the
// upstream, before any test body runs: it is message 1.
const e2eSeedMessage = "From: seed@example.org\r\n" +
	"To: e2e@example.org\r\n" +
	"Subject: e2e seed\r\n" +
	"Message-ID: <seed@e2e.invalid>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"Hello through imapguard.\r\n"

// forEachUpstream runs f as subtest "imapd" against the bundled upstream
// and as subtest "dovecot" against a private Dovecot (skipped when Dovecot
// is not installed, unless CI is set). Each subtest starts its own
// upstream with the main user (whose INBOX holds e2eSeedMessage) and the
// extra users.
func forEachUpstream(t *testing.T, f func(t *testing.T, up string, user, pass string)) {
	t.Run("imapd", func(t *testing.T) {
		t.Parallel()
		users := []server.User{{Username: e2eUser, Password: e2ePass}}
		for _, u := range e2eExtraUsers {
			users = append(users, server.User{Username: u.User, Password: u.Pass})
		}
		up := startUpstream(t, users...)
		e2eSeed(t, up)
		f(t, up, e2eUser, e2ePass)
	})
	t.Run("dovecot", func(t *testing.T) {
		t.Parallel()
		users := []dovecotUser{{Username: e2eUser, Password: e2ePass}}
		for _, u := range e2eExtraUsers {
			users = append(users, dovecotUser{Username: u.User, Password: u.Pass})
		}
		up := startDovecot(t, users)
		e2eSeed(t, up)
		f(t, up, e2eUser, e2ePass)
	})
}

// e2eSeed appends e2eSeedMessage to the main user's INBOX, talking to the
// upstream directly.
func e2eSeed(t *testing.T, up string) {
	t.Helper()
	c := imapClient(t, up)
	if err := c.Login(e2eUser, e2ePass).Wait(); err != nil {
		t.Fatalf("seed: login at upstream: %v", err)
	}
	e2eAppend(t, c, []byte(e2eSeedMessage))
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("seed: logout: %v", err)
	}
}

func e2eAppend(t *testing.T, c *imapclient.Client, msg []byte) *imap.AppendData {
	t.Helper()
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := cmd.Write(msg); err != nil {
		t.Fatalf("append: write: %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("append: close: %v", err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return data
}

// e2eClient is imapClient with options.
func e2eClient(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := imapclient.New(nc, opts)
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	return c
}

// e2eDial connects to the proxy and reads its greeting.
func e2eDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	if g := c.greeting(); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

// e2eWantLoggedIn checks a tagged answer to LOGIN or AUTHENTICATE: OK
// with the post-login capabilities in a response code (RFC 9051 §7.1),
// and no continuation request among the lines before it.
func e2eWantLoggedIn(t *testing.T, tag string, untagged []string, tagged string) {
	t.Helper()
	if !strings.HasPrefix(tagged, tag+" OK [CAPABILITY ") {
		t.Fatalf("login: got %q (before it %q); want %s OK [CAPABILITY ...]", tagged, untagged, tag)
	}
	for _, l := range untagged {
		if strings.HasPrefix(l, "+") {
			t.Fatalf("login: unexpected continuation request %q before %q", l, tagged)
		}
	}
}

// e2eSelectAndLogout runs SELECT INBOX through the relay, then LOGOUT,
// and checks the connection closes.
func e2eSelectAndLogout(t *testing.T, c *rawConn, wantExists string) {
	t.Helper()
	un, st := c.cmd("s1", "SELECT INBOX")
	if !strings.HasPrefix(st, "s1 OK") {
		t.Fatalf("SELECT INBOX: got %q (untagged %q)", st, un)
	}
	if wantExists != "" && !e2eHasLine(un, wantExists) {
		t.Errorf("SELECT INBOX: no %q in %q", wantExists, un)
	}
	un, st = c.cmd("s2", "LOGOUT")
	if !strings.HasPrefix(st, "s2 OK") || len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") {
		t.Fatalf("LOGOUT: got %q (untagged %q)", st, un)
	}
	c.expectClosed()
}

func e2eHasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// e2eExpectEnd checks the connection is closed by the other side, allowing
// only untagged BYE lines before the end.
func e2eExpectEnd(t *testing.T, c *rawConn) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		s, err := c.br.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open (partial %q)", s)
			}
			return
		}
		if !strings.HasPrefix(s, "* BYE") {
			t.Fatalf("got %q; want the connection closed (or * BYE)", s)
		}
	}
}

func e2eB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestE2ELoginForms logs in with every argument form of LOGIN (RFC 9051
// §6.2.3 with astring arguments: atom, quoted string with escapes,
// synchronizing and non-synchronizing literals), and then relays a SELECT.
func TestE2ELoginForms(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		utf8 := e2eExtraPass(t, "utf8user")
		mixed := e2eExtraPass(t, "mixeduser")
		type step struct {
			send string // written as is
			cont bool   // then expect "+ " from the proxy
		}
		cases := []struct {
			name   string
			steps  []step
			exists string
		}{
			{name: "atoms", steps: []step{{send: "a LOGIN " + user + " " + pass + "\r\n"}}, exists: "* 1 EXISTS"},
			{name: "quoted", steps: []step{{send: `a LOGIN "` + user + `" "` + pass + `"` + "\r\n"}}, exists: "* 1 EXISTS"},
			{name: "quoted user atom pass", steps: []step{{send: `a LOGIN "` + user + `" ` + pass + "\r\n"}}},
			{name: "lower-case command", steps: []step{{send: "a login " + user + " " + pass + "\r\n"}}},
			{name: "spaces", steps: []step{{send: `a LOGIN spaceuser "pass word with spaces"` + "\r\n"}}},
			{name: "double quote", steps: []step{{send: `a LOGIN quoteuser "pa\"ss\"word"` + "\r\n"}}},
			{name: "backslash", steps: []step{{send: `a LOGIN bsuser "pa\\ss\\word"` + "\r\n"}}},
			{name: "mixed escapes", steps: []step{{send: `a LOGIN "mixeduser" " a \"b\" \\c\\ d "` + "\r\n"}}},
			{name: "mixed as literal", steps: []step{
				{send: "a LOGIN mixeduser {" + strconv.Itoa(len(mixed)) + "}\r\n", cont: true},
				{send: mixed + "\r\n"},
			}},
			{name: "utf8 quoted", steps: []step{{send: `a LOGIN utf8user "` + utf8 + `"` + "\r\n"}}},
			{name: "utf8 sync literal", steps: []step{
				{send: "a LOGIN utf8user {" + strconv.Itoa(len(utf8)) + "}\r\n", cont: true},
				{send: utf8 + "\r\n"},
			}},
			{name: "utf8 non-sync literal", steps: []step{
				{send: "a LOGIN utf8user {" + strconv.Itoa(len(utf8)) + "+}\r\n" + utf8 + "\r\n"},
			}},
			{name: "user sync literal", steps: []step{
				{send: "a LOGIN {" + strconv.Itoa(len(user)) + "}\r\n", cont: true},
				{send: user + " " + pass + "\r\n"},
			}, exists: "* 1 EXISTS"},
			{name: "user non-sync literal", steps: []step{
				{send: "a LOGIN {" + strconv.Itoa(len(user)) + "+}\r\n" + user + ` "` + pass + `"` + "\r\n"},
			}, exists: "* 1 EXISTS"},
			{name: "both sync literals", steps: []step{
				{send: "a LOGIN {8}\r\n", cont: true},
				{send: "utf8user {" + strconv.Itoa(len(utf8)) + "}\r\n", cont: true},
				{send: utf8 + "\r\n"},
			}},
			{name: "both non-sync literals", steps: []step{
				{send: "a LOGIN {8+}\r\nutf8user {" + strconv.Itoa(len(utf8)) + "+}\r\n" + utf8 + "\r\n"},
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := e2eDial(t, p.Addr)
				for _, s := range tc.steps {
					c.send(s.send)
					if s.cont {
						if l := c.line(); !strings.HasPrefix(l, "+ ") {
							t.Fatalf("after %q: got %q; want a continuation request", s.send, l)
						}
					}
				}
				un, st := c.until("a")
				e2eWantLoggedIn(t, "a", un, st)
				e2eSelectAndLogout(t, c, tc.exists)
			})
		}
		waitZero(t, p.Limiter)
	})
}

// TestE2EAuthenticate covers AUTHENTICATE (RFC 9051 §6.2.2) with PLAIN
// (RFC 4616) and LOGIN, with and without SASL-IR (RFC 4959), cancelled,
// empty, and with an authorization identity.
func TestE2EAuthenticate(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		plain := e2eB64("\x00" + user + "\x00" + pass)
		// loggedIn finishes a successful exchange: tagged OK, then SELECT.
		loggedIn := func(t *testing.T, c *rawConn, tag string) {
			t.Helper()
			un, st := c.until(tag)
			e2eWantLoggedIn(t, tag, un, st)
			e2eSelectAndLogout(t, c, "* 1 EXISTS")
		}
		// usable checks that the connection, still unauthenticated, can
		// log in afterwards.
		usable := func(t *testing.T, c *rawConn) {
			t.Helper()
			if _, st := c.cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
				t.Fatalf("NOOP afterwards: got %q", st)
			}
			c.send("z AUTHENTICATE PLAIN " + plain + "\r\n")
			loggedIn(t, c, "z")
		}
		cont := func(t *testing.T, c *rawConn, want string) {
			t.Helper()
			if l := c.line(); l != want {
				t.Fatalf("got %q; want continuation %q", l, want)
			}
		}

		t.Run("plain with initial response", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + plain + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("plain lower-case mechanism", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a authenticate plain " + plain + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("plain without initial response", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN\r\n")
			cont(t, c, "+ ")
			c.send(plain + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("plain utf8 password", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + e2eB64("\x00utf8user\x00"+e2eExtraPass(t, "utf8user")) + "\r\n")
			un, st := c.until("a")
			e2eWantLoggedIn(t, "a", un, st)
			e2eSelectAndLogout(t, c, "")
		})
		t.Run("plain authzid equal to user", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + e2eB64(user+"\x00"+user+"\x00"+pass) + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("plain empty initial response", func(t *testing.T) {
			// RFC 4959: "=" is an empty initial response; an empty PLAIN
			// message is malformed and must fail without a login.
			c := e2eDial(t, p.Addr)
			_, st := c.cmd("a", "AUTHENTICATE PLAIN =")
			if !strings.HasPrefix(st, "a NO") && !strings.HasPrefix(st, "a BAD") {
				t.Fatalf("got %q; want a NO or a BAD", st)
			}
			usable(t, c)
		})
		t.Run("plain cancelled", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN\r\n")
			cont(t, c, "+ ")
			c.send("*\r\n")
			if _, st := c.until("a"); !strings.HasPrefix(st, "a BAD") {
				t.Fatalf("cancel: got %q; want a BAD (RFC 9051 §6.2.2)", st)
			}
			usable(t, c)
		})
		t.Run("login mechanism", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE LOGIN\r\n")
			cont(t, c, "+ VXNlcm5hbWU6")
			c.send(e2eB64(user) + "\r\n")
			cont(t, c, "+ UGFzc3dvcmQ6")
			c.send(e2eB64(pass) + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("login mechanism with initial response", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE LOGIN " + e2eB64(user) + "\r\n")
			cont(t, c, "+ UGFzc3dvcmQ6")
			c.send(e2eB64(pass) + "\r\n")
			loggedIn(t, c, "a")
		})
		t.Run("login mechanism nasty password", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE LOGIN " + e2eB64("mixeduser") + "\r\n")
			cont(t, c, "+ UGFzc3dvcmQ6")
			c.send(e2eB64(e2eExtraPass(t, "mixeduser")) + "\r\n")
			un, st := c.until("a")
			e2eWantLoggedIn(t, "a", un, st)
			e2eSelectAndLogout(t, c, "")
		})
		t.Run("login mechanism cancelled at password", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE LOGIN " + e2eB64(user) + "\r\n")
			cont(t, c, "+ UGFzc3dvcmQ6")
			c.send("*\r\n")
			if _, st := c.until("a"); !strings.HasPrefix(st, "a BAD") {
				t.Fatalf("cancel: got %q; want a BAD", st)
			}
			usable(t, c)
		})
		t.Run("plain other authzid", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + e2eB64("spaceuser\x00"+user+"\x00"+pass) + "\r\n")
			if _, st := c.until("a"); !strings.HasPrefix(st, "a NO [AUTHORIZATIONFAILED]") {
				t.Fatalf("got %q; want a NO [AUTHORIZATIONFAILED]", st)
			}
			usable(t, c)
		})
		waitZero(t, p.Limiter)
	})
}

// TestE2EWrongPasswordThenRight checks a failed login leaves the
// connection usable for a successful one (RFC 9051 §6.2.3).
func TestE2EWrongPasswordThenRight(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		t.Run("login", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			if _, st := c.cmd("a", "LOGIN "+user+" wrong-"+pass); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
				t.Fatalf("wrong password: got %q; want a NO [AUTHENTICATIONFAILED]", st)
			}
			un, st := c.cmd("b", "LOGIN "+user+" "+pass)
			e2eWantLoggedIn(t, "b", un, st)
			e2eSelectAndLogout(t, c, "* 1 EXISTS")
		})
		t.Run("authenticate then login", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + e2eB64("\x00"+user+"\x00"+pass+"x") + "\r\n")
			if _, st := c.until("a"); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
				t.Fatalf("wrong password: got %q; want a NO [AUTHENTICATIONFAILED]", st)
			}
			// An unknown user gets the same answer as a wrong password.
			if _, st := c.cmd("b", "LOGIN nosuchuser "+pass); !strings.HasPrefix(st, "b NO [AUTHENTICATIONFAILED]") {
				t.Fatalf("unknown user: got %q; want b NO [AUTHENTICATIONFAILED]", st)
			}
			c.send("c AUTHENTICATE PLAIN " + e2eB64("\x00"+user+"\x00"+pass) + "\r\n")
			un, st := c.until("c")
			e2eWantLoggedIn(t, "c", un, st)
			e2eSelectAndLogout(t, c, "* 1 EXISTS")
		})
		waitZero(t, p.Limiter)
	})
}

// e2eBigMessage returns a valid RFC 5322 message of at least size bytes
// with CRLF line ends and short lines, so that every upstream stores and
// returns it byte for byte.
func e2eBigMessage(size int, subject string) []byte {
	var b bytes.Buffer
	b.Grow(size + 256)
	fmt.Fprintf(&b, "From: big@example.org\r\nTo: e2e@example.org\r\nSubject: %s\r\n", subject)
	b.WriteString("Message-ID: <" + subject + "@e2e.invalid>\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%08d The quick brown fox jumps over the lazy dog {5+} ~{7} \"q\" \\ ( ) * %%\r\n", i)
	}
	return b.Bytes()
}

func e2eFetchBody(t *testing.T, c *imapclient.Client, uid imap.UID) []byte {
	t.Helper()
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil {
		t.Fatalf("fetch UID %d: %v", uid, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetch UID %d: %d messages", uid, len(msgs))
	}
	return msgs[0].FindBodySection(section)
}

// e2eUIDOf returns the UID of the last message when APPEND did not report
// one (no UIDPLUS).
func e2eUIDOf(t *testing.T, c *imapclient.Client, data *imap.AppendData, seq uint32) imap.UID {
	t.Helper()
	if data != nil && data.UID != 0 {
		return data.UID
	}
	msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch UID of %d: %v (%d messages)", seq, err, len(msgs))
	}
	return msgs[0].UID
}

// TestE2EClientSession drives a whole session with go-imap's client:
// login, SELECT, FETCH, a 5 MB APPEND (message literals are exempt from
// max_command_size), IDLE woken by a second session's APPEND, LOGOUT.
func TestE2EClientSession(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{MaxCommandSize: 10240}, limits.Options{})

		exists := make(chan uint32, 64)
		c := e2eClient(t, p.Addr, &imapclient.Options{
			UnilateralDataHandler: &imapclient.UnilateralDataHandler{
				Mailbox: func(d *imapclient.UnilateralDataMailbox) {
					if d.NumMessages != nil {
						select {
						case exists <- *d.NumMessages:
						default:
						}
					}
				},
			},
		})
		if err := c.Login(user, pass).Wait(); err != nil {
			t.Fatalf("login: %v", err)
		}
		caps := c.Caps()
		for cap := range caps {
			if u := strings.ToUpper(string(cap)); strings.HasPrefix(u, "COMPRESS=") || strings.HasPrefix(u, "AUTH=") || u == "STARTTLS" {
				t.Errorf("client sees capability %s after login", cap)
			}
		}
		sel, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatalf("select: %v", err)
		}
		if sel.NumMessages != 1 {
			t.Fatalf("select: %d messages; want 1", sel.NumMessages)
		}

		// FETCH BODY[] of message 1 (a literal relayed to the client).
		section := &imap.FetchItemBodySection{}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
			UID:         true,
			BodySection: []*imap.FetchItemBodySection{section},
		}).Collect()
		if err != nil {
			t.Fatalf("fetch 1: %v", err)
		}
		if len(msgs) != 1 {
			t.Fatalf("fetch 1: %d messages", len(msgs))
		}
		if got := msgs[0].FindBodySection(section); string(got) != e2eSeedMessage {
			t.Fatalf("fetch 1 BODY[]: got %q; want %q", got, e2eSeedMessage)
		}

		// A 5 MB APPEND. go-imap sends literals over 4096 bytes as
		// synchronizing ones, so this also goes through the proxy's
		// literal gate; the bytes stream through, far above
		// max_command_size.
		big := e2eBigMessage(5<<20, "big-sync")
		data := e2eAppend(t, c, big)
		uid := e2eUIDOf(t, c, data, 2)
		if got := e2eFetchBody(t, c, uid); !bytes.Equal(got, big) {
			t.Fatalf("5 MB message read back differs: got %d bytes, want %d", len(got), len(big))
		}

		// IDLE, woken by another session's APPEND.
		for len(exists) > 0 {
			<-exists
		}
		idle, err := c.Idle()
		if err != nil {
			t.Fatalf("idle: %v", err)
		}
		c2 := imapClient(t, p.Addr)
		if err := c2.Login(user, pass).Wait(); err != nil {
			t.Fatalf("second session: login: %v", err)
		}
		e2eAppend(t, c2, []byte("From: other@example.org\r\nSubject: wake up\r\n\r\nnew mail\r\n"))
		// Dovecot notices a new maildir file by inotify at once, or by its
		// mailbox_idle_check_interval (30 s) at worst.
		deadline := time.After(45 * time.Second)
	wait:
		for {
			select {
			case n := <-exists:
				if n >= 3 {
					break wait
				}
			case <-deadline:
				t.Fatal("no * 3 EXISTS during IDLE")
			}
		}
		if err := idle.Close(); err != nil {
			t.Fatalf("idle close (DONE): %v", err)
		}
		if err := idle.Wait(); err != nil {
			t.Fatalf("idle: %v", err)
		}
		// The session goes on after IDLE.
		if err := c.Noop().Wait(); err != nil {
			t.Fatalf("noop after idle: %v", err)
		}
		if err := c2.Logout().Wait(); err != nil {
			t.Fatalf("second session: logout: %v", err)
		}
		if err := c.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		select {
		case <-c.Closed():
		case <-time.After(10 * time.Second):
			t.Fatal("connection not closed after LOGOUT")
		}
		waitZero(t, p.Limiter)
	})
}

// TestE2EAppendNonSyncLiteral sends a 5 MB APPEND as a non-synchronizing
// literal (RFC 7888 LITERAL+, which both upstreams offer after login) in
// one stream with the command after it, and reads the message back.
func TestE2EAppendNonSyncLiteral(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{MaxCommandSize: 10240}, limits.Options{})
		c := login(t, p.Addr, user, pass)
		big := e2eBigMessage(5<<20, "big-nonsync")
		var b bytes.Buffer
		b.WriteString("a APPEND INBOX (\\Seen) {" + strconv.Itoa(len(big)) + "+}\r\n")
		b.Write(big)
		b.WriteString("\r\nb NOOP\r\n")
		// Write in a goroutine: the upstream may answer before all is sent.
		werr := make(chan error, 1)
		go func() {
			c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, err := c.nc.Write(b.Bytes())
			werr <- err
		}()
		un, st := c.until("a")
		if !strings.HasPrefix(st, "a OK") {
			t.Fatalf("APPEND: got %q (untagged %q)", st, un)
		}
		for _, l := range un {
			if strings.HasPrefix(l, "+") {
				t.Errorf("APPEND with {N+}: unexpected continuation %q", l)
			}
		}
		if _, st := c.until("b"); !strings.HasPrefix(st, "b OK") {
			t.Fatalf("NOOP after APPEND: got %q", st)
		}
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		c.cmd("z", "LOGOUT")
		c.expectClosed()

		ic := imapClient(t, p.Addr)
		if err := ic.Login(user, pass).Wait(); err != nil {
			t.Fatalf("login: %v", err)
		}
		if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("select: %v", err)
		}
		uid := e2eUIDOf(t, ic, nil, 2)
		if got := e2eFetchBody(t, ic, uid); !bytes.Equal(got, big) {
			t.Fatalf("5 MB message read back differs: got %d bytes, want %d", len(got), len(big))
		}
		if err := ic.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		waitZero(t, p.Limiter)
	})
}

// e2eCaps splits "tag OK [CAPABILITY a b c] text" or "* CAPABILITY a b c".
func e2eCaps(t *testing.T, line string) []string {
	t.Helper()
	if i := strings.Index(line, "[CAPABILITY "); i >= 0 {
		rest := line[i+len("[CAPABILITY "):]
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			t.Fatalf("unterminated capability code in %q", line)
		}
		return strings.Fields(rest[:end])
	}
	if rest, ok := strings.CutPrefix(line, "* CAPABILITY "); ok {
		return strings.Fields(rest)
	}
	t.Fatalf("no capability list in %q", line)
	return nil
}

func e2eCapLine(untagged []string) string {
	for _, l := range untagged {
		if strings.HasPrefix(strings.ToUpper(l), "* CAPABILITY ") {
			return l
		}
	}
	return ""
}

// e2eForbiddenCap reports capabilities the client must not see after
// login through the proxy.
func e2eForbiddenCap(c string) bool {
	u := strings.ToUpper(c)
	return strings.HasPrefix(u, "COMPRESS=") || strings.HasPrefix(u, "AUTH=") ||
		u == "STARTTLS" || u == "LOGINDISABLED"
}

// TestE2ECapabilities checks the capabilities a client sees after login:
// the upstream's own, without COMPRESS (RFC 4978 would blind the proxy's
// framing), STARTTLS or AUTH= (RFC 9051 §6.2.1, §6.2.2); and that
// COMPRESS is refused by the proxy, not forwarded.
func TestE2ECapabilities(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})

		// What the upstream itself offers after login.
		d := dialRaw(t, up)
		d.greeting()
		if _, st := d.cmd("a", "LOGIN "+user+" "+pass); !strings.Contains(st, "OK") {
			t.Fatalf("direct login: %q", st)
		}
		un, _ := d.cmd("b", "CAPABILITY")
		direct := e2eCaps(t, e2eCapLine(un))
		d.cmd("c", "LOGOUT")
		t.Logf("upstream capabilities after login: %v", direct)

		c := e2eDial(t, p.Addr)
		un, st := c.cmd("a", "LOGIN "+user+" "+pass)
		e2eWantLoggedIn(t, "a", un, st)
		inOK := e2eCaps(t, st)
		t.Logf("capabilities in the tagged OK: %v", inOK)
		for _, cp := range inOK {
			if e2eForbiddenCap(cp) {
				t.Errorf("tagged OK of LOGIN offers %s: %q", cp, st)
			}
		}
		if !e2eContainsFold(inOK, "IMAP4rev1") && !e2eContainsFold(inOK, "IMAP4rev2") {
			t.Errorf("tagged OK of LOGIN lacks IMAP4rev1/IMAP4rev2: %q", st)
		}
		// Everything else the upstream offers is passed on.
		for _, cp := range direct {
			u := strings.ToUpper(cp)
			if e2eForbiddenCap(cp) || u == "SASL-IR" {
				continue
			}
			if !e2eContainsFold(inOK, cp) {
				t.Errorf("upstream capability %s missing from the proxy's list %v", cp, inOK)
			}
		}

		un, st = c.cmd("b", "CAPABILITY")
		if !strings.HasPrefix(st, "b OK") {
			t.Fatalf("CAPABILITY: %q", st)
		}
		relayed := e2eCaps(t, e2eCapLine(un))
		for _, cp := range relayed {
			if e2eForbiddenCap(cp) {
				t.Errorf("CAPABILITY after login offers %s: %v", cp, relayed)
			}
		}

		if _, st := c.cmd("x", "COMPRESS DEFLATE"); !strings.HasPrefix(st, "x NO") {
			t.Fatalf("COMPRESS DEFLATE: got %q; want x NO", st)
		}
		// The stream is still plain IMAP.
		if un, st := c.cmd("y", "NOOP"); !strings.HasPrefix(st, "y OK") {
			t.Fatalf("NOOP after COMPRESS: %q %q", un, st)
		}
		e2eSelectAndLogout(t, c, "* 1 EXISTS")
		waitZero(t, p.Limiter)
	})
}

func e2eContainsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// e2eUntilAll reads responses until every tag in tags is completed, in any
// order (RFC 9051 §5.5 lets a server run pipelined commands concurrently;
// Dovecot answers a pipelined FETCH before an earlier NOOP). It returns all
// untagged lines and the tagged line of each tag.
func e2eUntilAll(c *rawConn, tags ...string) (untagged []string, tagged map[string]string) {
	c.t.Helper()
	tagged = make(map[string]string)
	for len(tagged) < len(tags) {
		l := c.line()
		done := false
		for _, tag := range tags {
			if strings.HasPrefix(l, tag+" ") {
				if _, dup := tagged[tag]; dup {
					c.t.Fatalf("second completion for tag %s: %q", tag, l)
				}
				tagged[tag] = l
				done = true
				break
			}
		}
		if !done {
			untagged = append(untagged, l)
		}
	}
	return untagged, tagged
}

func e2eHasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestE2EPipelining sends login and the first commands in one write: the
// commands after the login are relayed once it succeeds (RFC 9051 §5.5).
func TestE2EPipelining(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		// check reads the login answer, which the proxy gives before it
		// relays anything, then the answers to the pipelined commands.
		check := func(t *testing.T, c *rawConn, tags ...string) []string {
			t.Helper()
			if l := c.line(); !strings.HasPrefix(l, "a OK [CAPABILITY ") {
				t.Fatalf("first line %q; want a OK [CAPABILITY ...]", l)
			}
			un, st := e2eUntilAll(c, tags...)
			for _, tag := range tags {
				if !strings.HasPrefix(st[tag], tag+" OK") {
					t.Errorf("command %s: got %q; want OK (all answers %q, untagged %q)", tag, st[tag], st, un)
				}
			}
			if !e2eHasLine(un, "* 1 EXISTS") {
				t.Errorf("SELECT: no * 1 EXISTS in %q", un)
			}
			return un
		}
		t.Run("login", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a LOGIN " + user + " " + pass + "\r\nb SELECT INBOX\r\nc NOOP\r\n")
			check(t, c, "b", "c")
			e2eSelectAndLogout(t, c, "")
		})
		t.Run("login with literal", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a LOGIN " + user + " {" + strconv.Itoa(len(pass)) + "+}\r\n" + pass + "\r\nb SELECT INBOX\r\nc NOOP\r\n")
			check(t, c, "b", "c")
			e2eSelectAndLogout(t, c, "")
		})
		t.Run("authenticate fetch logout", func(t *testing.T) {
			c := e2eDial(t, p.Addr)
			c.send("a AUTHENTICATE PLAIN " + e2eB64("\x00"+user+"\x00"+pass) +
				"\r\nb SELECT INBOX\r\nc NOOP\r\nd FETCH 1 (BODY.PEEK[])\r\ne LOGOUT\r\n")
			un := check(t, c, "b", "c", "d", "e")
			if !e2eHasPrefix(un, "* 1 FETCH ") || !e2eHasPrefix(un, "* BYE") {
				t.Errorf("no * 1 FETCH or * BYE in %q", un)
			}
			if !e2eHasLine(un, "Hello through imapguard.") {
				t.Errorf("FETCH did not return message 1: %q", un)
			}
			c.expectClosed()
		})
		waitZero(t, p.Limiter)
	})
}

// e2eHoldListener accepts connections and keeps them open, optionally
// after writing greeting. Accepted connections are sent on conns.
type e2eHoldListener struct {
	ln    net.Listener
	conns chan net.Conn
}

func e2eHold(t *testing.T, greeting string) *e2eHoldListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &e2eHoldListener{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, nc)
			mu.Unlock()
			if greeting != "" {
				io.WriteString(nc, greeting)
			}
			select {
			case h.conns <- nc:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, nc := range held {
			nc.Close()
		}
		mu.Unlock()
	})
	return h
}

// e2eClosedPort returns an address on which nothing listens.
func e2eClosedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestE2EUpstreamUnavailable: an upstream that refuses, or accepts and
// never answers, gives the client a prompt NO [UNAVAILABLE] (RFC 5530)
// and leaves its connection usable.
func TestE2EUpstreamUnavailable(t *testing.T) {
	t.Parallel()
	// after checks the connection is still the proxy's, unauthenticated.
	after := func(t *testing.T, c *rawConn) {
		t.Helper()
		if _, st := c.cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
			t.Fatalf("NOOP after failed login: %q", st)
		}
		un, st := c.cmd("k", "CAPABILITY")
		if !strings.HasPrefix(st, "k OK") || !strings.Contains(e2eCapLine(un), "AUTH=PLAIN") {
			t.Fatalf("CAPABILITY after failed login: %q %q", un, st)
		}
		un, st = c.cmd("z", "LOGOUT")
		if !strings.HasPrefix(st, "z OK") || len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") {
			t.Fatalf("LOGOUT: %q %q", un, st)
		}
		c.expectClosed()
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		p := startProxy(t, e2eClosedPort(t), proxy.Options{}, limits.Options{})
		c := e2eDial(t, p.Addr)
		// More attempts than max_auth_failures: an unavailable upstream is
		// not the client's failure.
		for i, cmd := range []string{
			"LOGIN " + e2eUser + " " + e2ePass,
			"AUTHENTICATE PLAIN " + e2eB64("\x00"+e2eUser+"\x00"+e2ePass),
			"LOGIN " + e2eUser + " " + e2ePass,
			"LOGIN " + e2eUser + " " + e2ePass,
		} {
			tag := "a" + strconv.Itoa(i)
			start := time.Now()
			_, st := c.cmd(tag, cmd)
			if !strings.HasPrefix(st, tag+" NO [UNAVAILABLE]") {
				t.Fatalf("%s: got %q; want %s NO [UNAVAILABLE]", cmd, st, tag)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s: NO [UNAVAILABLE] after %v; want prompt", cmd, d)
			}
		}
		after(t, c)
		waitZero(t, p.Limiter)
	})
	for _, tc := range []struct{ name, greeting string }{
		{"silent", ""},
		{"greets then silent", "* OK hello\r\n"},
		{"greets with caps then silent", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hello\r\n"},
		{"waiting for auth", "* OK Waiting for authentication process to respond..\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := e2eHold(t, tc.greeting)
			const loginTimeout = 500 * time.Millisecond
			p := startProxy(t, h.ln.Addr().String(), proxy.Options{LoginTimeout: loginTimeout}, limits.Options{})
			c := e2eDial(t, p.Addr)
			start := time.Now()
			_, st := c.cmd("a", "LOGIN "+e2eUser+" "+e2ePass)
			d := time.Since(start)
			if !strings.HasPrefix(st, "a NO [UNAVAILABLE]") {
				t.Fatalf("got %q; want a NO [UNAVAILABLE]", st)
			}
			if d < loginTimeout-50*time.Millisecond || d > 5*time.Second {
				t.Errorf("answered after %v; want about the login timeout %v", d, loginTimeout)
			}
			// The proxy gave up on the upstream connection: it is closed.
			var nc net.Conn
			select {
			case nc = <-h.conns:
			case <-time.After(5 * time.Second):
				t.Fatal("the proxy never connected to the upstream")
			}
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, nc); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("the proxy left its upstream connection open")
				}
			}
			after(t, c)
			waitZero(t, p.Limiter)
		})
	}
}

// e2eForwarder is a TCP forwarder between the proxy and the upstream that
// the test can cut, as an upstream dropping the session would.
type e2eForwarder struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	cut   bool
	wg    sync.WaitGroup

	toUpstream atomic.Int64
}

func e2eForward(t *testing.T, target string) *e2eForwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &e2eForwarder{ln: ln, target: target}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			upc, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				down.Close()
				continue
			}
			f.mu.Lock()
			if f.cut {
				f.mu.Unlock()
				down.Close()
				upc.Close()
				continue
			}
			f.conns = append(f.conns, down, upc)
			f.mu.Unlock()
			f.wg.Add(2)
			go func() {
				defer f.wg.Done()
				io.Copy(upc, e2eCounting{down, &f.toUpstream})
				upc.Close()
				down.Close()
			}()
			go func() {
				defer f.wg.Done()
				io.Copy(down, upc)
				upc.Close()
				down.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.cutAll()
		f.wg.Wait()
	})
	return f
}

type e2eCounting struct {
	r io.Reader
	n *atomic.Int64
}

func (c e2eCounting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// cutAll closes every forwarded connection, both sides.
func (f *e2eForwarder) cutAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// waitForwarded waits until at least n bytes went to the upstream.
func (f *e2eForwarder) waitForwarded(t *testing.T, n int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for f.toUpstream.Load() < n {
		select {
		case <-deadline:
			t.Fatalf("only %d of %d bytes reached the upstream", f.toUpstream.Load(), n)
		case <-tick.C:
		}
	}
}

// TestE2EUpstreamDrops cuts the upstream side of relayed sessions: the
// client's connection is closed and every count returns to zero.
func TestE2EUpstreamDrops(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		t.Run("selected", func(t *testing.T) {
			f := e2eForward(t, up)
			p := startProxy(t, f.ln.Addr().String(), proxy.Options{}, limits.Options{})
			c := login(t, p.Addr, user, pass)
			if _, st := c.cmd("a", "SELECT INBOX"); !strings.HasPrefix(st, "a OK") {
				t.Fatalf("SELECT: %q", st)
			}
			f.cutAll()
			e2eExpectEnd(t, c)
			waitZero(t, p.Limiter)
		})
		t.Run("idle", func(t *testing.T) {
			f := e2eForward(t, up)
			p := startProxy(t, f.ln.Addr().String(), proxy.Options{}, limits.Options{})
			c := login(t, p.Addr, user, pass)
			if _, st := c.cmd("a", "SELECT INBOX"); !strings.HasPrefix(st, "a OK") {
				t.Fatalf("SELECT: %q", st)
			}
			c.send("b IDLE\r\n")
			if l := c.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("IDLE: got %q; want a continuation", l)
			}
			f.cutAll()
			e2eExpectEnd(t, c)
			waitZero(t, p.Limiter)
		})
		t.Run("mid append literal", func(t *testing.T) {
			f := e2eForward(t, up)
			p := startProxy(t, f.ln.Addr().String(), proxy.Options{}, limits.Options{})
			c := login(t, p.Addr, user, pass)
			before := f.toUpstream.Load()
			c.send("a APPEND INBOX {5000000}\r\n")
			if l := c.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("APPEND: got %q; want a continuation", l)
			}
			part := bytes.Repeat([]byte("0123456789abcde\r\n"), 1<<16) // ~1.1 MB
			c.send(string(part))
			f.waitForwarded(t, before+int64(len(part)))
			f.cutAll()
			e2eExpectEnd(t, c)
			waitZero(t, p.Limiter)
		})
		t.Run("several sessions", func(t *testing.T) {
			f := e2eForward(t, up)
			p := startProxy(t, f.ln.Addr().String(), proxy.Options{}, limits.Options{})
			var cs []*rawConn
			for range 3 {
				c := login(t, p.Addr, user, pass)
				if _, st := c.cmd("a", "NOOP"); !strings.HasPrefix(st, "a OK") {
					t.Fatalf("NOOP: %q", st)
				}
				cs = append(cs, c)
			}
			f.cutAll()
			for _, c := range cs {
				e2eExpectEnd(t, c)
			}
			waitZero(t, p.Limiter)
			// The proxy itself is fine: a new session to a healthy
			// upstream works.
			p.Server.SetOptions(proxy.Options{UpstreamAddr: up})
			c := login(t, p.Addr, user, pass)
			e2eSelectAndLogout(t, c, "")
			waitZero(t, p.Limiter)
		})
	})
}

// TestE2ELiteralRejected: an upstream may refuse a synchronizing literal
// with a tagged NO instead of "+" (RFC 9051 §7.5); the client then does
// not send it, and its next command must reach the upstream as a command.
func TestE2ELiteralRejected(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		c := login(t, p.Addr, user, pass)
		msg := "Subject: x\r\n\r\nhello\r\n"
		c.send("x APPEND nosuchbox {" + strconv.Itoa(len(msg)) + "}\r\n")
		l := c.line()
		switch {
		case strings.HasPrefix(l, "+"):
			// This upstream reads the literal before it looks at the
			// mailbox.
			c.send(msg + "\r\n")
			if _, st := c.until("x"); !strings.HasPrefix(st, "x NO") {
				t.Fatalf("APPEND to a missing mailbox: got %q; want x NO", st)
			}
		case strings.HasPrefix(l, "x NO"):
			t.Logf("upstream refused the literal: %q", l)
		default:
			t.Fatalf("APPEND: got %q; want + or x NO", l)
		}
		// What follows is a new command, relayed as such.
		if _, st := c.cmd("y", "NOOP"); !strings.HasPrefix(st, "y OK") {
			t.Fatalf("NOOP after refused literal: got %q", st)
		}
		// And a literal after it goes through normally.
		c.send("z APPEND INBOX {" + strconv.Itoa(len(msg)) + "}\r\n")
		if l := c.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("APPEND INBOX: got %q; want +", l)
		}
		c.send(msg + "\r\n")
		if un, st := c.until("z"); !strings.HasPrefix(st, "z OK") {
			t.Fatalf("APPEND INBOX: got %q (untagged %q)", st, un)
		}
		e2eSelectAndLogout(t, c, "* 2 EXISTS")
		waitZero(t, p.Limiter)
	})
}
