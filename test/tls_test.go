package test

// TLS towards clients: implicit TLS (Config.ServeTLS) and STARTTLS
// (Options.TLSConfig), and STARTTLS command injection (CVE-2011-0411).
// The other TLS tests: tls_handshake_test.go (handshakes that fail or
// never happen, timeouts and shutdown in TLS), upstream_tls_test.go (TLS
// towards the upstream) and external_clients_test.go (curl, openssl).
// Certificates come from a test CA made in memory by each test.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/testcert"
)

// testCA is a test certificate authority, made in memory.
type testCA struct {
	*testcert.CA
	t *testing.T
}

// newTestCA makes a CA named name.
func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca, err := testcert.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{CA: ca, t: t}
}

// leaf issues a certificate for names: IP literals become IP subject
// alternative names, anything else DNS names.
func (ca *testCA) leaf(names ...string) tls.Certificate {
	ca.t.Helper()
	cert, err := ca.Leaf(names...)
	if err != nil {
		ca.t.Fatal(err)
	}
	return cert
}

// serverConfig is a server configuration like the one imapguard's tls
// package builds: TLS 1.2 or later, ALPN "imap", a leaf for names
// (default 127.0.0.1 and localhost).
func (ca *testCA) serverConfig(names ...string) *tls.Config {
	if len(names) == 0 {
		names = []string{"127.0.0.1", "localhost"}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(names...)},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"imap"},
	}
}

// clientConfig trusts exactly this CA and expects 127.0.0.1.
func (ca *testCA) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// upstreamConfig trusts exactly this CA, with the upstream's host as the
// server name.
func (ca *testCA) upstreamConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
}

// caFile writes the CA certificate to a file for external clients.
func (ca *testCA) caFile() string {
	ca.t.Helper()
	path := filepath.Join(ca.t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// aliceUser is the imapd account most TLS tests use.
var aliceUser = server.User{Username: "alice", Password: "secret", Messages: 3}

// startTLSProxy starts the proxy c describes serving STARTTLS and
// implicit TLS with a leaf of ca, in front of imapd with aliceUser if
// c.Upstream is "".
func startTLSProxy(t *testing.T, ca *testCA, c proxytest.Config) *proxytest.Proxy {
	t.Helper()
	if c.Upstream == "" {
		c.Upstream = proxytest.Imapd(t, aliceUser)
	}
	c.Options.TLSConfig, c.ServeTLS = ca.serverConfig(), true
	return proxytest.Start(t, c)
}

// goIMAPTLS connects go-imap's client to p over TLS: "implicit" on its
// imaps port, "starttls" on its plaintext port. The whole conversation
// has one deadline, so that no read can hang.
func goIMAPTLS(t *testing.T, p *proxytest.Proxy, mode string, cfg *tls.Config) *imapclient.Client {
	t.Helper()
	var nc net.Conn
	var err error
	if mode == "implicit" {
		nc, err = tls.DialWithDialer(&net.Dialer{Timeout: proxytest.Timeout}, "tcp", p.TLSAddr, cfg)
	} else {
		nc, err = net.DialTimeout("tcp", p.Addr, proxytest.Timeout)
	}
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(3 * proxytest.Timeout))
	return newGoIMAP(t, nc, &imapclient.Options{TLSConfig: cfg}, mode == "starttls")
}

// checkCaps checks a capability list for the caps in want and the
// absence of those in wantNot ("AUTH=" matches any mechanism).
func checkCaps(t *testing.T, what string, caps []string, want, wantNot []string) {
	t.Helper()
	for _, w := range want {
		if !proxytest.HasCap(caps, w) {
			t.Errorf("%s: capabilities %q lack %s", what, caps, w)
		}
	}
	for _, w := range wantNot {
		if proxytest.HasCap(caps, w) {
			t.Errorf("%s: capabilities %q have %s", what, caps, w)
		}
	}
}

func TestTLSImplicit(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{})

	t.Run("imapclient", func(t *testing.T) {
		cfg := ca.clientConfig()
		cfg.NextProtos = []string{"imap"}
		nc, err := tls.DialWithDialer(&net.Dialer{Timeout: proxytest.Timeout}, "tcp", p.TLSAddr, cfg)
		if err != nil {
			t.Fatalf("tls.Dial: %v", err)
		}
		st := nc.ConnectionState()
		if st.NegotiatedProtocol != "imap" {
			t.Errorf("ALPN: negotiated %q; want \"imap\"", st.NegotiatedProtocol)
		}
		if st.Version < tls.VersionTLS12 {
			t.Errorf("TLS version %s", tls.VersionName(st.Version))
		}
		nc.SetDeadline(time.Now().Add(3 * proxytest.Timeout))
		c := newGoIMAP(t, nc, nil, false)
		caps := c.Caps()
		if !caps.Has(imap.AuthCap("PLAIN")) || caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) {
			t.Errorf("capabilities on the imaps port: %v; want AUTH=PLAIN, no STARTTLS, no LOGINDISABLED", caps)
		}
		loginSelect(t, c, "alice", "secret", 3)
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{Envelope: true, UID: true}).Collect()
		if err != nil || len(msgs) != 3 {
			t.Fatalf("fetch 1:3: %v (%d messages)", err, len(msgs))
		}
		for _, m := range msgs {
			if m.Envelope == nil || m.Envelope.Subject == "" {
				t.Errorf("message %d: no subject in envelope %+v", m.SeqNum, m.Envelope)
			}
		}
		msg := []byte("From: tls@example.org\r\nSubject: over imaps\r\n\r\nappended through implicit TLS\r\n")
		uid := uidOf(t, c, appendMessage(t, c, msg), 4)
		if got := fetchBody(t, c, uid); !bytes.Equal(got, msg) {
			t.Errorf("appended message reads back as %q; want %q", got, msg)
		}
		if err := c.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		proxytest.WaitZero(t, p.Limiter)
	})

	t.Run("no ALPN from the client", func(t *testing.T) {
		c, st := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
		if st.NegotiatedProtocol != "" {
			t.Errorf("ALPN %q negotiated though the client offered none", st.NegotiatedProtocol)
		}
		c.Greeting()
		if un, st := c.Cmd("s", "STARTTLS"); !strings.HasPrefix(st, "s BAD ") || len(un) != 0 {
			t.Errorf("STARTTLS on the imaps port: got %q (untagged %q); want s BAD", st, un)
		}
		c.LogIn("l", "LOGIN alice secret")
		c.SelectAndLogout("") // 3 or 4 messages, after the append above
		proxytest.WaitZero(t, p.Limiter)
	})
}

func TestTLSStartTLS(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	up := proxytest.Imapd(t, aliceUser)
	plainAuth := proxytest.SASLPlain("alice", "secret")

	t.Run("required", func(t *testing.T) {
		var dials proxytest.Dialer
		p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{TLSConfig: ca.serverConfig(), Dial: dials.Dial}})
		c := proxytest.Dial(t, p.Addr)
		g := c.ExpectPrefix("* OK [CAPABILITY ")
		checkCaps(t, "greeting", proxytest.Caps(g), []string{"IMAP4rev1", "STARTTLS", "LOGINDISABLED"}, []string{"AUTH="})
		un, st := c.Cmd("c0", "CAPABILITY")
		if st != "c0 OK CAPABILITY completed" || len(un) != 1 {
			t.Fatalf("CAPABILITY: %q %q", un, st)
		}
		checkCaps(t, "CAPABILITY before STARTTLS", proxytest.Caps(un[0]), []string{"STARTTLS", "LOGINDISABLED"}, []string{"AUTH="})

		for _, tc := range []struct{ tag, cmd string }{
			{"l1", "LOGIN alice secret"},
			{"l2", "AUTHENTICATE PLAIN " + plainAuth},
			{"l3", "AUTHENTICATE PLAIN"}, // no continuation request either
			{"l4", "AUTHENTICATE LOGIN"},
		} {
			un, st := c.Cmd(tc.tag, tc.cmd)
			if !strings.HasPrefix(st, tc.tag+" NO [PRIVACYREQUIRED] ") || len(un) != 0 {
				t.Errorf("%s before STARTTLS: got %q (untagged %q); want %s NO [PRIVACYREQUIRED] ...", tc.cmd, st, un, tc.tag)
			}
		}
		if n := dials.Dials.Load(); n != 0 {
			t.Errorf("the proxy dialled the upstream %d times for credentials sent before STARTTLS", n)
		}

		c.StartTLS("s1", ca.clientConfig())
		un, st = c.Cmd("c1", "CAPABILITY")
		if st != "c1 OK CAPABILITY completed" || len(un) != 1 {
			t.Fatalf("CAPABILITY after STARTTLS: %q %q", un, st)
		}
		checkCaps(t, "CAPABILITY after STARTTLS", proxytest.Caps(un[0]),
			[]string{"IMAP4rev1", "AUTH=PLAIN"}, []string{"STARTTLS", "LOGINDISABLED"})
		if un, st := c.Cmd("s2", "STARTTLS"); !strings.HasPrefix(st, "s2 BAD ") || len(un) != 0 {
			t.Errorf("second STARTTLS: got %q (untagged %q); want s2 BAD", st, un)
		}
		c.LogIn("l5", "LOGIN alice secret")
		c.SelectAndLogout("* 3 EXISTS")
		if n := dials.Dials.Load(); n != 1 {
			t.Errorf("upstream dials: %d; want 1", n)
		}

		// go-imap's client, STARTTLS on its own.
		ic := goIMAPTLS(t, p, "starttls", ca.clientConfig())
		loginSelect(t, ic, "alice", "secret", 3)
		if err := ic.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		proxytest.WaitZero(t, p.Limiter)
	})

	t.Run("AllowPlaintextAuth", func(t *testing.T) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{TLSConfig: ca.serverConfig(), AllowPlaintextAuth: true}})
		c := proxytest.Dial(t, p.Addr)
		checkCaps(t, "greeting", proxytest.Caps(c.Greeting()), []string{"STARTTLS", "AUTH=PLAIN"}, []string{"LOGINDISABLED"})
		c.LogIn("l1", "LOGIN alice secret")
		c.SelectAndLogout("* 3 EXISTS")

		// STARTTLS is still offered and works.
		c = proxytest.Dial(t, p.Addr)
		c.Greeting()
		c.StartTLS("s1", ca.clientConfig())
		c.LogIn("l1", "AUTHENTICATE PLAIN "+plainAuth)
		c.SelectAndLogout("* 3 EXISTS")
		proxytest.WaitZero(t, p.Limiter)
	})

	t.Run("no TLSConfig", func(t *testing.T) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		c := proxytest.Dial(t, p.Addr)
		checkCaps(t, "greeting", proxytest.Caps(c.Greeting()), []string{"AUTH=PLAIN"}, []string{"STARTTLS", "LOGINDISABLED"})
		if un, st := c.Cmd("s1", "STARTTLS"); !strings.HasPrefix(st, "s1 BAD ") || len(un) != 0 {
			t.Errorf("STARTTLS without TLSConfig: got %q (untagged %q); want s1 BAD", st, un)
		}
		c.LogIn("l1", "LOGIN alice secret")
		c.SelectAndLogout("* 3 EXISTS")
		proxytest.WaitZero(t, p.Limiter)
	})
}

// TestTLSStartTLSInjection: STARTTLS command injection, client side
// (CVE-2011-0411): what a man in the middle appends in plaintext behind
// the client's STARTTLS must not run inside the TLS session.
func TestTLSStartTLSInjection(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	up := proxytest.Imapd(t, aliceUser)
	for _, allowPlain := range []bool{false, true} {
		t.Run(fmt.Sprintf("AllowPlaintextAuth=%v", allowPlain), func(t *testing.T) {
			var dials proxytest.Dialer
			p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{
				TLSConfig: ca.serverConfig(), AllowPlaintextAuth: allowPlain, Dial: dials.Dial,
			}})
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			c.Send("a STARTTLS\r\nb LOGIN alice secret\r\n") // one write
			c.ExpectPrefix("a OK ")
			// Nothing in plaintext after the STARTTLS OK (UpgradeTLS
			// checks).
			c.UpgradeTLS(ca.clientConfig())

			un, st := c.Cmd("c", "NOOP")
			if st != "c OK NOOP completed" || len(un) != 0 {
				t.Errorf("NOOP after TLS: got %q (before it %q); want only c OK NOOP completed", st, un)
			}
			if n := dials.Dials.Load(); n != 0 {
				t.Fatalf("the injected LOGIN ran: the proxy dialled the upstream %d times", n)
			}
			// The session itself is intact: a real login works and is
			// the first upstream dial.
			c.LogIn("d", "LOGIN alice secret")
			c.SelectAndLogout("* 3 EXISTS")
			if n := dials.Dials.Load(); n != 1 {
				t.Errorf("upstream dials: %d; want 1", n)
			}
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}
