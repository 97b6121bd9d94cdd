package test

// TLS towards the upstream: the three modes (Options.UpstreamTLS) against
// imapd with TLS and a private Dovecot, STARTTLS injection by the
// upstream, and sessions with TLS on both legs.

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/dovecot"
	"github.com/imapguard/imapguard/test/proxytest"
)

// startIMAPDTLS starts imapd with aliceUser and a leaf of ca: addr offers
// STARTTLS, tlsAddr implicit TLS. Without insecureAuth it accepts a login
// only over TLS.
func startIMAPDTLS(t *testing.T, ca *testCA, insecureAuth bool) (addr, tlsAddr string) {
	t.Helper()
	return server.StartTLS(t, server.Options{Users: []server.User{aliceUser}, TLSConfig: ca.serverConfig(), InsecureAuth: insecureAuth})
}

// loginUnavailable logs in on a new connection to p and checks the
// proxy answers NO [UNAVAILABLE], promptly (within limit), and that the
// connection is still usable.
func loginUnavailable(t *testing.T, p *proxytest.Proxy, command string, limit time.Duration) {
	t.Helper()
	c := proxytest.Dial(t, p.Addr)
	c.Greeting()
	start := time.Now()
	un, st := c.Cmd("l", command)
	el := time.Since(start)
	if st != "l "+noUnavailable || len(un) != 0 {
		t.Fatalf("login: got %q (untagged %q); want l %s", st, un, noUnavailable)
	}
	if el > limit {
		t.Errorf("the NO took %v; want it promptly (under %v)", el, limit)
	}
	t.Logf("login answer after %v", el.Round(time.Millisecond))
	if un, st := c.Cmd("o", "LOGOUT"); st != "o OK LOGOUT completed" {
		t.Errorf("LOGOUT after the NO: %q %q", un, st)
	}
	c.ExpectClosed()
}

func TestTLSUpstreamModes(t *testing.T) {
	upCA := newTestCA(t, "upstream CA")
	otherCA := newTestCA(t, "some other CA")
	// No InsecureAuth: this imapd accepts a login only over TLS, so a
	// login that works proves the proxy's upstream leg was TLS.
	startAddr, implicitAddr := startIMAPDTLS(t, upCA, false)
	plainAddr := proxytest.Imapd(t, aliceUser) // no TLS at all
	_, implicitPort, _ := net.SplitHostPort(implicitAddr)

	trusted := upCA.upstreamConfig
	cases := []struct {
		name         string
		addr, mode   string
		cfg          *tls.Config
		loginTimeout time.Duration
		ok           bool
	}{
		{"implicit trusted", implicitAddr, "implicit", trusted(), 0, true},
		{"starttls trusted", startAddr, "starttls", trusted(), 0, true},
		{"implicit ServerName from UpstreamAddr localhost", net.JoinHostPort("localhost", implicitPort), "implicit", trusted(), 0, true},
		{"implicit untrusted", implicitAddr, "implicit", &tls.Config{RootCAs: otherCA.Pool}, 0, false},
		{"starttls untrusted", startAddr, "starttls", &tls.Config{RootCAs: otherCA.Pool}, 0, false},
		{"implicit system roots", implicitAddr, "implicit", nil, 0, false},
		{"starttls without STARTTLS upstream", plainAddr, "starttls", trusted(), 0, false},
		{"implicit to a plaintext port", plainAddr, "implicit", trusted(), 0, false},
		{"implicit ServerName mismatch", implicitAddr, "implicit", &tls.Config{RootCAs: upCA.Pool, ServerName: "mail.example.org"}, 0, false},
		{"starttls ServerName mismatch", startAddr, "starttls", &tls.Config{RootCAs: upCA.Pool, ServerName: "mail.example.org"}, 0, false},
		{"implicit InsecureSkipVerify", implicitAddr, "implicit", &tls.Config{RootCAs: otherCA.Pool, ServerName: "mail.example.org", InsecureSkipVerify: true}, 0, true},
		{"starttls InsecureSkipVerify", startAddr, "starttls", &tls.Config{InsecureSkipVerify: true}, 0, true},
		// Both sides wait for the other to speak first; login_timeout
		// ends it.
		{"starttls to an imaps port", implicitAddr, "starttls", trusted(), time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := proxytest.Start(t, proxytest.Config{Upstream: tc.addr, Options: proxy.Options{
				UpstreamTLS: tc.mode, UpstreamTLSConfig: tc.cfg, LoginTimeout: tc.loginTimeout,
			}})
			if tc.ok {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				c.LogIn("l1", "LOGIN alice secret")
				c.SelectAndLogout("* 3 EXISTS")
			} else {
				limit := 5 * time.Second
				if tc.loginTimeout != 0 {
					limit = tc.loginTimeout + 4*time.Second
				}
				loginUnavailable(t, p, "LOGIN alice secret", limit)
			}
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// TestTLSUpstreamInjection: bytes the upstream sends behind its STARTTLS
// OK, before the handshake, are refused (CVE-2011-0411, the upstream's
// side).
func TestTLSUpstreamInjection(t *testing.T) {
	ca := newTestCA(t, "fake upstream CA")
	const hungUp = "after the STARTTLS answer the proxy sent 0 bytes, then <nil>"
	const closedPlain = "closed in plaintext: EOF" // never sent STARTTLS
	for _, tc := range []struct {
		name string
		fake starttlsFake
		want string // the fake upstream's report: "clean logout in TLS" for a login that must work
	}{
		// Logins that must work: they show the fake is a valid upstream.
		{"control: clean STARTTLS", starttlsFake{}, loggedOutInTLS},
		// The plaintext capabilities are stale after TLS: LOGINDISABLED
		// before TLS must not stop AUTHENTICATE after it.
		{"stale capabilities dropped", starttlsFake{greeting: "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi"}, loggedOutInTLS},
		{"greeting without capabilities", starttlsFake{greeting: "* OK hi", preCaps: "IMAP4rev1 STARTTLS LOGINDISABLED"}, loggedOutInTLS},

		// Logins that must fail with UNAVAILABLE, the proxy hanging up
		// on the upstream before any TLS.
		{"forged capability after STARTTLS OK", starttlsFake{forged: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] forged\r\n"}, hungUp},
		{"forged tagged OK after STARTTLS OK", starttlsFake{forged: "ig1 OK [CAPABILITY IMAP4rev1] forged login\r\n"}, hungUp},
		{"one forged byte", starttlsFake{forged: "*"}, hungUp},
		{"STARTTLS refused", starttlsFake{startReply: "NO not today"}, hungUp},
		{"STARTTLS BAD", starttlsFake{startReply: "BAD what"}, hungUp},
		{"STARTTLS not offered after CAPABILITY", starttlsFake{greeting: "* OK hi", preCaps: "IMAP4rev1 AUTH=PLAIN"}, closedPlain},
		{"STARTTLS not offered in greeting", starttlsFake{greeting: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi"}, closedPlain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := tc.fake.start(t, ca)
			p := proxytest.Start(t, proxytest.Config{Upstream: addr, Options: proxy.Options{
				UpstreamTLS: "starttls", UpstreamTLSConfig: ca.upstreamConfig(),
			}})
			if tc.want == loggedOutInTLS {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				c.LogIn("l", "LOGIN alice secret")
				if un, st := c.Cmd("o", "LOGOUT"); st != "o OK LOGOUT completed" || len(un) != 1 {
					t.Errorf("LOGOUT: %q %q", un, st)
				}
				c.ExpectClosed()
			} else {
				loginUnavailable(t, p, "LOGIN alice secret", 5*time.Second)
			}
			select {
			case got := <-done:
				if got != tc.want {
					t.Errorf("fake upstream: %s; want %s (the proxy hangs up before any TLS or login)", got, tc.want)
				}
			case <-time.After(2 * proxytest.Timeout):
				t.Fatal("fake upstream did not finish")
			}
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// loggedOutInTLS is starttlsFake's report of a session that went through.
const loggedOutInTLS = "clean logout in TLS"

// starttlsFake scripts an upstream that offers STARTTLS.
type starttlsFake struct {
	greeting   string // default: "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi"
	preCaps    string // the answer to CAPABILITY before TLS
	startReply string // the status after the STARTTLS tag; default "OK Begin TLS"
	forged     string // sent in the same write right behind the STARTTLS answer
}

// start serves the fake: the greeting, CAPABILITY and STARTTLS in
// plaintext; then, if STARTTLS was answered OK with nothing forged behind
// it, TLS with a leaf of ca and a minimal server that accepts
// alice/secret. It reports on done how the first connection ended.
func (f starttlsFake) start(t *testing.T, ca *testCA) (addr string, done <-chan string) {
	t.Helper()
	if f.greeting == "" {
		f.greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi"
	}
	if f.startReply == "" {
		f.startReply = "OK Begin TLS"
	}
	ch := make(chan string, 1)
	cfg := ca.serverConfig()
	fake := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		select {
		case ch <- f.serve(c, cfg):
		default:
		}
	})
	return fake.Addr, ch
}

func (f starttlsFake) serve(c *proxytest.FakeConn, cfg *tls.Config) string {
	c.Write(f.greeting + "\r\n")
	for {
		cmd, err := c.Command()
		if err != nil {
			return "closed in plaintext: " + err.Error()
		}
		switch strings.ToUpper(cmd.Name) {
		case "CAPABILITY":
			c.Write("* CAPABILITY " + f.preCaps + "\r\n" + cmd.Tag + " OK done\r\n")
			continue
		case "STARTTLS":
		default:
			return fmt.Sprintf("unexpected command before TLS: %q", cmd.Text)
		}
		if err := c.Write(cmd.Tag + " " + f.startReply + "\r\n" + f.forged); err != nil {
			return "writing STARTTLS answer: " + err.Error()
		}
		if f.forged != "" || !strings.HasPrefix(f.startReply, "OK") {
			// The proxy should hang up, without a ClientHello.
			rest, err := c.ReadAll()
			return fmt.Sprintf("after the STARTTLS answer the proxy sent %d bytes, then %v", len(rest), err)
		}
		break
	}
	if err := c.StartTLS(cfg); err != nil {
		return "handshake: " + err.Error()
	}
	for {
		cmd, err := c.Command()
		if err != nil {
			return "read in TLS: " + err.Error()
		}
		_, arg, _ := strings.Cut(strings.TrimPrefix(cmd.Text, cmd.Tag+" "), " ")
		var out string
		switch strings.ToUpper(cmd.Name) {
		case "CAPABILITY":
			out = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + cmd.Tag + " OK done\r\n"
		case "AUTHENTICATE":
			mech, ir, hasIR := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				out = cmd.Tag + " NO unsupported mechanism\r\n"
				break
			}
			if !hasIR {
				c.Write("+ \r\n")
				if ir, err = c.Line(); err != nil {
					return "reading SASL response: " + err.Error()
				}
			}
			if resp, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(ir)); string(resp) != "\x00alice\x00secret" {
				out = cmd.Tag + " NO [AUTHENTICATIONFAILED] no\r\n"
			} else {
				out = cmd.Tag + " OK [CAPABILITY IMAP4rev1] logged in over TLS\r\n"
			}
		case "LOGOUT":
			c.Write(proxytest.Logout(cmd.Tag))
			return loggedOutInTLS
		default:
			out = cmd.Tag + " BAD unexpected " + cmd.Name + "\r\n"
		}
		if err := c.Write(out); err != nil {
			return "write in TLS: " + err.Error()
		}
	}
}

func TestTLSDovecot(t *testing.T) {
	addr, tlsAddr, certPEM := startDovecotTLS(t, []dovecotUser{{Username: mainUser, Password: mainPass}})
	upCfg, err := dovecot.ClientTLSConfig(certPEM)
	if err != nil {
		t.Fatalf("Dovecot's certificate: %v", err)
	}
	// Dovecot's own certificate (Debian's snakeoil) names localhost, not
	// 127.0.0.1: the proxy verifies it with ServerName set to that name,
	// trusting exactly the certificate the harness returned.
	t.Logf("upstream ServerName %q (from Dovecot's certificate)", upCfg.ServerName)
	seed(t, addr)

	ca := newTestCA(t, "proxy CA")
	for _, tc := range []struct{ mode, addr string }{
		{"implicit", tlsAddr},
		{"starttls", addr},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := startTLSProxy(t, ca, proxytest.Config{Upstream: tc.addr, Options: proxy.Options{
				UpstreamTLS: tc.mode, UpstreamTLSConfig: upCfg,
			}})
			// TLS on both legs: the client uses the proxy's imaps port.
			c := goIMAPTLS(t, p, "implicit", ca.clientConfig())
			loginSelect(t, c, mainUser, mainPass, 1) // the seed
			if body := fetchBody(t, c, uidOf(t, c, nil, 1)); string(body) != seedMessage {
				t.Errorf("seed message reads back as %q", body)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Fatalf("logout: %v", err)
			}
			proxytest.WaitZero(t, p.Limiter)
		})
	}

	// The certificate is really checked: trusting another CA fails.
	t.Run("untrusted", func(t *testing.T) {
		other := newTestCA(t, "some other CA")
		for _, tc := range []struct{ mode, addr string }{{"implicit", tlsAddr}, {"starttls", addr}} {
			p := proxytest.Start(t, proxytest.Config{Upstream: tc.addr, Options: proxy.Options{
				UpstreamTLS:       tc.mode,
				UpstreamTLSConfig: &tls.Config{RootCAs: other.Pool, ServerName: upCfg.ServerName},
			}})
			loginUnavailable(t, p, "LOGIN "+mainUser+" "+mainPass, proxytest.Timeout)
			proxytest.WaitZero(t, p.Limiter)
		}
	})
}

// TestTLSBothLegs relays large literals both ways with TLS on both legs,
// in every combination of client and upstream TLS modes.
func TestTLSBothLegs(t *testing.T) {
	ca := newTestCA(t, "test CA")
	startAddr, implicitAddr := startIMAPDTLS(t, ca, false)
	for _, up := range []struct{ mode, addr string }{{"implicit", implicitAddr}, {"starttls", startAddr}} {
		p := startTLSProxy(t, ca, proxytest.Config{Upstream: up.addr, Options: proxy.Options{
			UpstreamTLS: up.mode, UpstreamTLSConfig: ca.upstreamConfig(),
		}})
		for _, client := range []string{"implicit", "starttls"} {
			t.Run("client "+client+", upstream "+up.mode, func(t *testing.T) {
				c := goIMAPTLS(t, p, client, ca.clientConfig())
				loginSelect(t, c, "alice", "secret", -1)
				big := bigMessage(2<<20, "tls-"+client+"-"+up.mode)
				data := appendMessage(t, c, big)
				if data == nil || data.UID == 0 {
					t.Fatalf("APPEND returned no UID: %+v", data)
				}
				if got := fetchBody(t, c, data.UID); !bytes.Equal(got, big) {
					t.Errorf("2 MiB message read back as %d bytes; want it unchanged (%d bytes)", len(got), len(big))
				}
				if err := c.Logout().Wait(); err != nil {
					t.Fatalf("logout: %v", err)
				}
				proxytest.WaitZero(t, p.Limiter)
			})
		}
	}
}
