package test

// The client's address to the upstream (upstream.forward_client, issue
// 11): the ID the proxy sends before logging in, with the client's own
// ID fields merged and forged address fields dropped, and the PROXY
// header, against scripted upstreams. forward_dovecot_test.go runs the
// same against a real Dovecot with its auth penalty on.

import (
	"bytes"
	binenc "encoding/binary"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// idUpstream is a scripted upstream that advertises caps in its
// greeting, answers ID with idAnswer (its tag goes in place of TAG),
// logs anyone in and answers any other command OK.
func idUpstream(t *testing.T, caps, idAnswer string) *proxytest.Fake {
	t.Helper()
	return proxytest.StartFake(t, idHandler(caps, idAnswer))
}

// idHandler is idUpstream's script.
func idHandler(caps, idAnswer string) func(*proxytest.FakeConn) {
	return proxytest.Respond("* OK [CAPABILITY "+caps+"] ready\r\n",
		func(_ *proxytest.FakeConn, cmd proxytest.Command) string {
			switch strings.ToUpper(cmd.Name) {
			case "ID":
				return strings.ReplaceAll(idAnswer, "TAG", cmd.Tag)
			case "AUTHENTICATE", "LOGIN":
				return cmd.Tag + " OK [CAPABILITY IMAP4rev1 ID] in\r\n"
			case "LOGOUT":
				return proxytest.Logout(cmd.Tag)
			}
			return cmd.Tag + " OK done\r\n"
		})
}

const (
	idCaps  = "IMAP4rev1 AUTH=PLAIN SASL-IR ID"
	idOK    = "* ID (\"name\" \"upstream\")\r\nTAG OK ID completed\r\n"
	authCmd = "ig1 AUTHENTICATE PLAIN " // the proxy's login, with SASL-IR
)

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestForwardClientID(t *testing.T) {
	t.Parallel()
	f := idUpstream(t, idCaps, idOK)
	var logs proxytest.Buffer
	p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}) // ForwardClient "": the default, id

	c := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	c.Greeting()
	// The client's ID, with fields that would forge its address through
	// a trusted proxy: the proxy answers it itself, and keeps the rest.
	un := c.OK("i", `ID ("name" "Mutt" "version" "2.2.12" "x-originating-ip" "6.6.6.6" "X-Session-Ext-Id" "forged" "x-forward-user" "root" "os" NIL)`)
	if len(un) != 1 || un[0] != `* ID ("name" "imapguard")` {
		t.Errorf("ID before login: got %q; want the proxy's own * ID", un)
	}
	c.LogIn("l", "LOGIN alice secret")

	id := f.Next(t)
	re := regexp.MustCompile(`^igi ID \("name" "Mutt" "version" "2\.2\.12" "os" NIL "x-originating-ip" "127\.0\.0\.2" "x-originating-port" "(\d+)" "x-connected-ip" "127\.0\.0\.1" "x-connected-port" "(\d+)" "x-session-id" "([A-Za-z0-9_-]{16})"\)$`)
	m := re.FindStringSubmatch(id)
	if m == nil {
		t.Fatalf("first command upstream: got %q; want it to match %s", id, re)
	}
	if want := port(t, c.Client().LocalAddr().String()); m[1] != want {
		t.Errorf("x-originating-port: got %s; want the client's port %s", m[1], want)
	}
	if want := port(t, p.Addr); m[2] != want {
		t.Errorf("x-connected-port: got %s; want the proxy's port %s", m[2], want)
	}
	if login := f.Next(t); !strings.HasPrefix(login, authCmd) {
		t.Errorf("second command upstream: got %q; want the login", login)
	}
	// An ID after login is the client's business with the upstream: relayed
	// as it is, answered by the upstream.
	if un := c.OK("j", `ID ("name" "Mutt" "x-originating-ip" "6.6.6.6")`); len(un) != 1 || un[0] != `* ID ("name" "upstream")` {
		t.Errorf("ID after login: got %q; want the upstream's answer", un)
	}
	if got, want := f.Next(t), `j ID ("name" "Mutt" "x-originating-ip" "6.6.6.6")`; got != want {
		t.Errorf("ID after login upstream: got %q; want %q", got, want)
	}
	c.Logout("o")
	proxytest.WaitZero(t, p.Limiter)
	// The session id joins the proxy's log to the upstream's.
	if !strings.Contains(logs.String(), "session="+m[3]) {
		t.Errorf("the proxy's log does not name session %s:\n%s", m[3], logs.String())
	}
}

// TestForwardClientIDNotSent: no ID to an upstream that does not
// advertise it, nor, with forward_client "none", when the client sent
// none; with "none" a client's own fields still go, without an address.
func TestForwardClientIDNotSent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, caps, mode, clientID, want string
	}{
		{"upstream without ID", "IMAP4rev1 AUTH=PLAIN SASL-IR", proxy.ForwardID, `ID ("name" "Mutt")`, ""},
		{"none", idCaps, proxy.ForwardNone, "", ""},
		{"none, client ID", idCaps, proxy.ForwardNone, `ID ("name" "Mutt" "x-originating-ip" "6.6.6.6")`, `igi ID ("name" "Mutt")`},
		{"none, client ID NIL", idCaps, proxy.ForwardNone, `ID NIL`, ""},
		{"proxy_v1, client ID", idCaps, proxy.ForwardProxyV1, `ID ("name" "Mutt")`, `igi ID ("name" "Mutt")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handler := idHandler(tc.caps, idOK)
			if tc.mode == proxy.ForwardProxyV1 {
				script := handler
				handler = func(c *proxytest.FakeConn) {
					if h, err := c.Line(); err != nil || !strings.HasPrefix(h, "PROXY TCP4 127.0.0.3 127.0.0.1 ") {
						t.Errorf("PROXY header: got %q, %v", h, err)
						return
					}
					script(c)
				}
			}
			f := proxytest.StartFake(t, handler)
			p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: proxy.Options{ForwardClient: tc.mode}})
			c := proxytest.DialFrom(t, "127.0.0.3", p.Addr)
			c.Greeting()
			if tc.clientID != "" {
				c.OK("i", tc.clientID)
			}
			c.LogIn("l", "LOGIN alice secret")
			first := f.Next(t)
			if tc.want != "" {
				if first != tc.want {
					t.Errorf("first command upstream: got %q; want %q", first, tc.want)
				}
				first = f.Next(t)
			}
			if !strings.HasPrefix(first, authCmd) {
				t.Errorf("command upstream: got %q; want the login", first)
			}
			c.Logout("o")
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// TestForwardClientIDRefused: an upstream that answers the ID NO or BAD
// (or with a long untagged answer) still gets the login, and the client
// never sees the upstream's answer to the proxy's ID.
func TestForwardClientIDRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, answer string }{
		{"NO", "TAG NO [CLIENTBUG] ID not for you\r\n"},
		{"BAD", "TAG BAD Invalid ID parameters\r\n"},
		{"untagged with a literal", "* ID (\"name\" {5}\r\nhello)\r\n* OK noise\r\nTAG OK ID completed\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := idUpstream(t, idCaps, tc.answer)
			var logs proxytest.Buffer
			p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			c := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
			c.Greeting()
			c.LogIn("l", "LOGIN alice secret")
			if id := f.Next(t); !strings.HasPrefix(id, "igi ID (") {
				t.Errorf("first command upstream: got %q; want the ID", id)
			}
			if login := f.Next(t); !strings.HasPrefix(login, authCmd) {
				t.Errorf("second command upstream: got %q; want the login", login)
			}
			un, st := c.Cmd("n", "NOOP")
			if st != "n OK done" || len(un) != 0 {
				t.Errorf("NOOP after login: got %q %q; want only n OK done", un, st)
			}
			c.Logout("o")
			proxytest.WaitZero(t, p.Limiter)
			refused := strings.Contains(logs.String(), "upstream refused the ID")
			if want := tc.name != "untagged with a literal"; refused != want {
				t.Errorf("log says the ID was refused: %v; want %v\n%s", refused, want, logs.String())
			}
		})
	}
}

// TestForwardClientIDBounds: a client's ID over RFC 2971's bounds gets
// BAD and is not kept.
func TestForwardClientIDBounds(t *testing.T) {
	t.Parallel()
	f := idUpstream(t, idCaps, idOK)
	p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: proxy.Options{ForwardClient: proxy.ForwardNone}})
	c := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	c.Greeting()
	c.OK("i", `ID ("name" "kept")`)
	if _, st := c.Cmd("j", `ID ("`+strings.Repeat("f", 31)+`" "v")`); !strings.HasPrefix(st, "j BAD ") {
		t.Errorf("field of 31 octets: got %q; want BAD", st)
	}
	if _, st := c.Cmd("k", `ID ("name" "`+strings.Repeat("v", 1025)+`")`); !strings.HasPrefix(st, "k BAD ") {
		t.Errorf("value of 1025 octets: got %q; want BAD", st)
	}
	c.LogIn("l", "LOGIN alice secret")
	if got := f.Next(t); got != `igi ID ("name" "kept")` {
		t.Errorf("ID upstream: got %q; want the last valid ID's fields", got)
	}
	c.Logout("o")
	proxytest.WaitZero(t, p.Limiter)
}

// TestForwardClientProxyHeader: with proxy_v1 and proxy_v2 the upstream
// connection starts with the PROXY header, before the greeting, and
// before TLS with upstream.tls = implicit.
func TestForwardClientProxyHeader(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "upstream CA")
	for _, tc := range []struct {
		mode, tls string
	}{
		{proxy.ForwardProxyV1, "none"},
		{proxy.ForwardProxyV2, "none"},
		{proxy.ForwardProxyV2, "implicit"},
		{proxy.ForwardProxyV1, "starttls"},
	} {
		t.Run(tc.mode+" tls "+tc.tls, func(t *testing.T) {
			t.Parallel()
			headers := make(chan []byte, 1)
			f := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
				var h []byte
				var err error
				if tc.mode == proxy.ForwardProxyV1 {
					var line string
					line, err = c.Line()
					h = []byte(line + "\r\n")
				} else {
					h = make([]byte, 16+12) // signature, version, family, length; IPv4 addresses and ports
					_, err = io.ReadFull(c, h)
				}
				headers <- h
				if err != nil {
					return
				}
				caps := "IMAP4rev1 AUTH=PLAIN SASL-IR"
				switch tc.tls {
				case "implicit":
					if c.StartTLS(ca.serverConfig()) != nil {
						return
					}
				case "starttls":
					c.Write("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
					cmd, err := c.Command()
					if err != nil || cmd.Name != "STARTTLS" {
						return
					}
					c.Write(cmd.Tag + " OK go\r\n")
					if c.StartTLS(ca.serverConfig()) != nil {
						return
					}
				}
				proxytest.Respond("* OK [CAPABILITY "+caps+"] hi\r\n", func(_ *proxytest.FakeConn, cmd proxytest.Command) string {
					if strings.EqualFold(cmd.Name, "LOGOUT") {
						return proxytest.Logout(cmd.Tag)
					}
					return cmd.Tag + " OK [CAPABILITY IMAP4rev1] in\r\n"
				})(c)
			})
			opts := proxy.Options{ForwardClient: tc.mode, UpstreamTLS: tc.tls}
			if tc.tls != "none" {
				opts.UpstreamTLSConfig = ca.upstreamConfig()
			}
			p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: opts})
			c := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
			c.Greeting()
			c.LogIn("l", "LOGIN alice secret")
			h := <-headers

			cport, _ := strconv.Atoi(port(t, c.Client().LocalAddr().String()))
			pport, _ := strconv.Atoi(port(t, p.Addr))
			var want []byte
			if tc.mode == proxy.ForwardProxyV1 {
				want = []byte("PROXY TCP4 127.0.0.2 127.0.0.1 " + strconv.Itoa(cport) + " " + strconv.Itoa(pport) + "\r\n")
			} else {
				// proxy-protocol.txt §2.2: signature, 0x21 (v2, PROXY),
				// 0x11 (TCP over IPv4), length 12, then the addresses and
				// ports in network order.
				want = append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1)
				want = binenc.BigEndian.AppendUint16(want, uint16(cport))
				want = binenc.BigEndian.AppendUint16(want, uint16(pport))
			}
			if !bytes.Equal(h, want) {
				t.Errorf("header: got %q; want %q", h, want)
			}
			c.Logout("o")
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// TestForwardClientNoneSendsNothing: with "none" the upstream connection
// starts with the upstream's greeting (no header) and the login is the
// first command.
func TestForwardClientNoneSendsNothing(t *testing.T) {
	t.Parallel()
	first := make(chan string, 1)
	f := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		c.Write("* OK [CAPABILITY " + idCaps + "] hi\r\n")
		cmd, err := c.Command()
		first <- cmd.Text
		if err != nil {
			return
		}
		c.Write(cmd.Tag + " OK [CAPABILITY IMAP4rev1] in\r\n")
		for {
			cmd, err := c.Command()
			if err != nil {
				return
			}
			if strings.EqualFold(cmd.Name, "LOGOUT") {
				c.Write(proxytest.Logout(cmd.Tag))
				return
			}
		}
	})
	p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: proxy.Options{ForwardClient: proxy.ForwardNone}})
	c := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	if got := <-first; !strings.HasPrefix(got, authCmd) {
		t.Errorf("first bytes upstream: got %q; want the login", got)
	}
	c.Logout("o")
	proxytest.WaitZero(t, p.Limiter)
}

// TestForwardClientReload: a new forward_client (SIGHUP: SetOptions)
// applies to connections accepted after it; one accepted before keeps
// the mode it started with.
func TestForwardClientReload(t *testing.T) {
	t.Parallel()
	f := idUpstream(t, idCaps, idOK)
	p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: proxy.Options{ForwardClient: proxy.ForwardID}})
	old := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	old.Greeting()
	p.Server.SetOptions(proxy.Options{UpstreamAddr: f.Addr, ForwardClient: proxy.ForwardNone})

	fresh := proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "alice", "secret")
	if got := f.Next(t); !strings.HasPrefix(got, authCmd) {
		t.Errorf("new connection, forward_client none: first command upstream %q; want the login", got)
	}
	old.LogIn("l", "LOGIN alice secret")
	if got := f.Next(t); !strings.HasPrefix(got, `igi ID ("x-originating-ip" "127.0.0.2" `) {
		t.Errorf("older connection, forward_client id: first command upstream %q; want the ID", got)
	}
	fresh.Logout("o")
	old.Logout("o")
	proxytest.WaitZero(t, p.Limiter)
}
