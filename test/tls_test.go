package test

// TLS end-to-end tests: implicit TLS (ServeTLS) and STARTTLS (Serve with
// Options.TLSConfig) towards clients, the three upstream modes towards
// imapd, a scripted upstream and Dovecot, STARTTLS command injection in
// both directions (CVE-2011-0411), failed handshakes, and clients nobody
// here wrote (curl, openssl s_client). Certificates come from a test CA
// made in memory by each test. Synchronisation is by deadlines, channels
// and polled counts; nothing sleeps for a guessed time.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/dovecot"
	"github.com/imapguard/imapguard/test/testcert"
)

// tlsTimeout bounds every TLS handshake, read and external command here.
const tlsTimeout = 10 * time.Second

// tlsUnavailable is the proxy's answer to a login whose upstream could
// not be reached or trusted.
const tlsUnavailable = "NO [UNAVAILABLE] Mail server unavailable, try again later"

// tlsPKI is a test certificate authority, made in memory.
type tlsPKI struct {
	*testcert.CA
	t *testing.T
}

// newTLSPKI makes a CA named name.
func newTLSPKI(t *testing.T, name string) *tlsPKI {
	t.Helper()
	ca, err := testcert.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsPKI{CA: ca, t: t}
}

// leaf issues a certificate for names: IP literals become IP subject
// alternative names, anything else DNS names.
func (p *tlsPKI) leaf(names ...string) tls.Certificate {
	p.t.Helper()
	cert, err := p.Leaf(names...)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert
}

// serverConfig is a server configuration like the one imapguard's tls
// package builds: TLS 1.2 or later, ALPN "imap", a leaf for names
// (default 127.0.0.1 and localhost).
func (p *tlsPKI) serverConfig(names ...string) *tls.Config {
	if len(names) == 0 {
		names = []string{"127.0.0.1", "localhost"}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{p.leaf(names...)},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"imap"},
	}
}

// clientConfig trusts exactly this CA and expects 127.0.0.1.
func (p *tlsPKI) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// caFile writes the CA certificate to a file for external clients.
func (p *tlsPKI) caFile() string {
	p.t.Helper()
	path := filepath.Join(p.t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, p.PEM, 0o644); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// tlsProxy is a proxy serving plaintext (with STARTTLS) on Addr and
// implicit TLS on TLSAddr.
type tlsProxy struct {
	*testProxy
	TLSAddr string
}

// startTLSProxy is startProxy plus a ServeTLS listener; opts.TLSConfig
// must be set. Its cleanup runs after startProxy's (Shutdown and the
// count check) and checks that ServeTLS returned.
func startTLSProxy(t *testing.T, upstream string, opts proxy.Options, lim limits.Options) *tlsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var done chan error // set once ServeTLS runs
	t.Cleanup(func() {
		if done == nil {
			ln.Close()
			return
		}
		if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	p := startProxy(t, upstream, opts, lim)
	done = make(chan error, 1)
	go func() { done <- p.Server.ServeTLS(ln) }()
	return &tlsProxy{testProxy: p, TLSAddr: ln.Addr().String()}
}

// tlsDialCounter is a proxy.Options.Dial that counts upstream dials.
type tlsDialCounter struct{ n atomic.Int64 }

func (d *tlsDialCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// tlsDialRaw opens a TLS connection to addr as a rawConn and returns the
// handshake's state.
func tlsDialRaw(t *testing.T, addr string, cfg *tls.Config) (*rawConn, tls.ConnectionState) {
	t.Helper()
	c := dialRaw(t, addr)
	tc := tls.Client(c.nc, cfg)
	tc.SetDeadline(time.Now().Add(tlsTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	tc.SetDeadline(time.Time{})
	t.Cleanup(func() { tc.Close() })
	c.nc, c.br = tc, bufio.NewReader(tc)
	return c, tc.ConnectionState()
}

// upgradeTLS runs STARTTLS on c and switches it to TLS.
func (c *rawConn) upgradeTLS(tag string, cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	if un, st := c.cmd(tag, "STARTTLS"); !strings.HasPrefix(st, tag+" OK ") || len(un) != 0 {
		c.t.Fatalf("STARTTLS: got %q (untagged %q); want %s OK", st, un, tag)
	}
	if n := c.br.Buffered(); n != 0 {
		b, _ := c.br.Peek(n)
		c.t.Fatalf("server sent %q in plaintext after its STARTTLS OK", b)
	}
	tc := tls.Client(c.nc, cfg)
	tc.SetDeadline(time.Now().Add(tlsTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc, c.br = tc, bufio.NewReader(tc)
	return tc.ConnectionState()
}

// tlsIMAPClient runs go-imap's client over nc (TLS already, or plaintext
// for STARTTLS), with a deadline on the whole conversation so that no
// read can hang.
func tlsIMAPClient(t *testing.T, nc net.Conn, opts *imapclient.Options, starttls bool) *imapclient.Client {
	t.Helper()
	nc.SetDeadline(time.Now().Add(3 * tlsTimeout))
	var c *imapclient.Client
	if starttls {
		var err error
		if c, err = imapclient.NewStartTLS(nc, opts); err != nil {
			t.Fatalf("imapclient STARTTLS: %v", err)
		}
	} else {
		c = imapclient.New(nc, opts)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

// tlsReadUntilClosed reads whatever the peer sends until it closes the
// connection; it fails the test if the connection stays open. err is nil
// for an orderly close (FIN), else the error that ended it (such as a
// reset: a peer that closes with unread data in its receive buffer sends
// RST instead of FIN).
func tlsReadUntilClosed(t *testing.T, nc net.Conn) (data []byte, err error) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(tlsTimeout))
	data, err = io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v (received %q)", tlsTimeout, data)
	}
	return data, err
}

func tlsCapsOf(line string) []string {
	i := strings.Index(line, "CAPABILITY ")
	if i < 0 {
		return nil
	}
	rest := line[i+len("CAPABILITY "):]
	if j := strings.IndexByte(rest, ']'); j >= 0 {
		rest = rest[:j]
	}
	return strings.Fields(rest)
}

// tlsCheckCaps checks a capability list for the caps in want and the
// absence of those in wantNot ("AUTH=" matches any mechanism).
func tlsCheckCaps(t *testing.T, what string, caps []string, want, wantNot []string) {
	t.Helper()
	has := func(name string) bool {
		for _, c := range caps {
			if strings.EqualFold(c, name) || strings.HasSuffix(name, "=") && strings.HasPrefix(strings.ToUpper(c), name) {
				return true
			}
		}
		return false
	}
	for _, w := range want {
		if !has(w) {
			t.Errorf("%s: capabilities %q lack %s", what, caps, w)
		}
	}
	for _, w := range wantNot {
		if has(w) {
			t.Errorf("%s: capabilities %q have %s", what, caps, w)
		}
	}
}

// tlsAlice is the imapd account most tests use.
var tlsAlice = server.User{Username: "alice", Password: "secret", Messages: 3}

// 1. Implicit TLS.

func TestTLSImplicit(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	p := startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})

	t.Run("imapclient", func(t *testing.T) {
		cfg := pki.clientConfig()
		cfg.NextProtos = []string{"imap"}
		nc, err := tls.DialWithDialer(&net.Dialer{Timeout: tlsTimeout}, "tcp", p.TLSAddr, cfg)
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
		c := tlsIMAPClient(t, nc, nil, false)
		caps := c.Caps()
		if !caps.Has(imap.AuthCap("PLAIN")) || caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) {
			t.Errorf("capabilities on the imaps port: %v; want AUTH=PLAIN, no STARTTLS, no LOGINDISABLED", caps)
		}
		if err := c.Login("alice", "secret").Wait(); err != nil {
			t.Fatalf("login: %v", err)
		}
		sel, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatalf("select: %v", err)
		}
		if sel.NumMessages != 3 {
			t.Errorf("INBOX holds %d messages; want 3", sel.NumMessages)
		}
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
		data := e2eAppend(t, c, msg)
		uid := e2eUIDOf(t, c, data, 4)
		if got := e2eFetchBody(t, c, uid); !bytes.Equal(got, msg) {
			t.Errorf("appended message reads back as %q; want %q", got, msg)
		}
		if err := c.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		waitZero(t, p.Limiter)
	})

	t.Run("no ALPN from the client", func(t *testing.T) {
		c, st := tlsDialRaw(t, p.TLSAddr, pki.clientConfig())
		if st.NegotiatedProtocol != "" {
			t.Errorf("ALPN %q negotiated though the client offered none", st.NegotiatedProtocol)
		}
		if g := c.greeting(); !strings.HasPrefix(g, "* OK ") {
			t.Fatalf("greeting %q", g)
		}
		if un, st := c.cmd("s", "STARTTLS"); !strings.HasPrefix(st, "s BAD ") || len(un) != 0 {
			t.Errorf("STARTTLS on the imaps port: got %q (untagged %q); want s BAD", st, un)
		}
		_, st2 := c.cmd("l", "LOGIN alice secret")
		e2eWantLoggedIn(t, "l", nil, st2)
		e2eSelectAndLogout(t, c, "") // 3 or 4 messages, after the append above
		waitZero(t, p.Limiter)
	})
}

// 2. STARTTLS.

func TestTLSStartTLS(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	plainAuth := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))

	t.Run("required", func(t *testing.T) {
		var dials tlsDialCounter
		p := startProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig(), Dial: dials.dial}, limits.Options{})
		c := dialRaw(t, p.Addr)
		g := c.greeting()
		if !strings.HasPrefix(g, "* OK [CAPABILITY ") {
			t.Fatalf("greeting %q", g)
		}
		tlsCheckCaps(t, "greeting", tlsCapsOf(g), []string{"IMAP4rev1", "STARTTLS", "LOGINDISABLED"}, []string{"AUTH="})
		un, st := c.cmd("c0", "CAPABILITY")
		if st != "c0 OK CAPABILITY completed" || len(un) != 1 {
			t.Fatalf("CAPABILITY: %q %q", un, st)
		}
		tlsCheckCaps(t, "CAPABILITY before STARTTLS", tlsCapsOf(un[0]), []string{"STARTTLS", "LOGINDISABLED"}, []string{"AUTH="})

		for _, tc := range []struct{ tag, cmd string }{
			{"l1", "LOGIN alice secret"},
			{"l2", "AUTHENTICATE PLAIN " + plainAuth},
			{"l3", "AUTHENTICATE PLAIN"}, // no continuation request either
			{"l4", "AUTHENTICATE LOGIN"},
		} {
			un, st := c.cmd(tc.tag, tc.cmd)
			if !strings.HasPrefix(st, tc.tag+" NO [PRIVACYREQUIRED] ") || len(un) != 0 {
				t.Errorf("%s before STARTTLS: got %q (untagged %q); want %s NO [PRIVACYREQUIRED] ...", tc.cmd, st, un, tc.tag)
			}
		}
		if n := dials.n.Load(); n != 0 {
			t.Errorf("the proxy dialled the upstream %d times for credentials sent before STARTTLS", n)
		}

		c.upgradeTLS("s1", pki.clientConfig())
		un, st = c.cmd("c1", "CAPABILITY")
		if st != "c1 OK CAPABILITY completed" || len(un) != 1 {
			t.Fatalf("CAPABILITY after STARTTLS: %q %q", un, st)
		}
		tlsCheckCaps(t, "CAPABILITY after STARTTLS", tlsCapsOf(un[0]),
			[]string{"IMAP4rev1", "AUTH=PLAIN"}, []string{"STARTTLS", "LOGINDISABLED"})
		if un, st := c.cmd("s2", "STARTTLS"); !strings.HasPrefix(st, "s2 BAD ") || len(un) != 0 {
			t.Errorf("second STARTTLS: got %q (untagged %q); want s2 BAD", st, un)
		}
		un, st = c.cmd("l5", "LOGIN alice secret")
		e2eWantLoggedIn(t, "l5", un, st)
		e2eSelectAndLogout(t, c, "* 3 EXISTS")
		if n := dials.n.Load(); n != 1 {
			t.Errorf("upstream dials: %d; want 1", n)
		}

		// go-imap's client, STARTTLS on its own.
		nc, err := net.DialTimeout("tcp", p.Addr, tlsTimeout)
		if err != nil {
			t.Fatal(err)
		}
		ic := tlsIMAPClient(t, nc, &imapclient.Options{TLSConfig: pki.clientConfig()}, true)
		if err := ic.Login("alice", "secret").Wait(); err != nil {
			t.Fatalf("imapclient login after STARTTLS: %v", err)
		}
		if sel, err := ic.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 3 {
			t.Fatalf("select: %v (%+v)", err, sel)
		}
		if err := ic.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		waitZero(t, p.Limiter)
	})

	t.Run("AllowPlaintextAuth", func(t *testing.T) {
		p := startProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig(), AllowPlaintextAuth: true}, limits.Options{})
		c := dialRaw(t, p.Addr)
		g := c.greeting()
		tlsCheckCaps(t, "greeting", tlsCapsOf(g), []string{"STARTTLS", "AUTH=PLAIN"}, []string{"LOGINDISABLED"})
		un, st := c.cmd("l1", "LOGIN alice secret")
		e2eWantLoggedIn(t, "l1", un, st)
		e2eSelectAndLogout(t, c, "* 3 EXISTS")

		// STARTTLS is still offered and works.
		c = dialRaw(t, p.Addr)
		c.greeting()
		c.upgradeTLS("s1", pki.clientConfig())
		un, st = c.cmd("l1", "AUTHENTICATE PLAIN "+plainAuth)
		e2eWantLoggedIn(t, "l1", un, st)
		e2eSelectAndLogout(t, c, "* 3 EXISTS")
		waitZero(t, p.Limiter)
	})

	t.Run("no TLSConfig", func(t *testing.T) {
		p := startProxy(t, up, proxy.Options{}, limits.Options{})
		c := dialRaw(t, p.Addr)
		g := c.greeting()
		tlsCheckCaps(t, "greeting", tlsCapsOf(g), []string{"AUTH=PLAIN"}, []string{"STARTTLS", "LOGINDISABLED"})
		if un, st := c.cmd("s1", "STARTTLS"); !strings.HasPrefix(st, "s1 BAD ") || len(un) != 0 {
			t.Errorf("STARTTLS without TLSConfig: got %q (untagged %q); want s1 BAD", st, un)
		}
		un, st := c.cmd("l1", "LOGIN alice secret")
		e2eWantLoggedIn(t, "l1", un, st)
		e2eSelectAndLogout(t, c, "* 3 EXISTS")
		waitZero(t, p.Limiter)
	})
}

// 3. STARTTLS command injection, client side (CVE-2011-0411): what a
// man in the middle appends in plaintext behind the client's STARTTLS
// must not run inside the TLS session.

func TestTLSStartTLSInjection(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	for _, allowPlain := range []bool{false, true} {
		t.Run(fmt.Sprintf("AllowPlaintextAuth=%v", allowPlain), func(t *testing.T) {
			var dials tlsDialCounter
			p := startProxy(t, up, proxy.Options{
				TLSConfig: pki.serverConfig(), AllowPlaintextAuth: allowPlain, Dial: dials.dial,
			}, limits.Options{})
			c := dialRaw(t, p.Addr)
			c.greeting()
			c.send("a STARTTLS\r\nb LOGIN alice secret\r\n") // one write
			if l := c.line(); !strings.HasPrefix(l, "a OK ") {
				t.Fatalf("STARTTLS: got %q; want a OK", l)
			}
			if n := c.br.Buffered(); n != 0 {
				b, _ := c.br.Peek(n)
				t.Fatalf("plaintext after the STARTTLS OK: %q", b)
			}
			tc := tls.Client(c.nc, pki.clientConfig())
			tc.SetDeadline(time.Now().Add(tlsTimeout))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			tc.SetDeadline(time.Time{})
			c.nc, c.br = tc, bufio.NewReader(tc)

			un, st := c.cmd("c", "NOOP")
			if st != "c OK NOOP completed" || len(un) != 0 {
				t.Errorf("NOOP after TLS: got %q (before it %q); want only c OK NOOP completed", st, un)
			}
			if n := dials.n.Load(); n != 0 {
				t.Fatalf("the injected LOGIN ran: the proxy dialled the upstream %d times", n)
			}
			// The session itself is intact: a real login works and is
			// the first upstream dial.
			un, st = c.cmd("d", "LOGIN alice secret")
			e2eWantLoggedIn(t, "d", un, st)
			e2eSelectAndLogout(t, c, "* 3 EXISTS")
			if n := dials.n.Load(); n != 1 {
				t.Errorf("upstream dials: %d; want 1", n)
			}
			waitZero(t, p.Limiter)
		})
	}
}

// 4. Handshakes that fail or never happen.

func TestTLSHandshakeFailures(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	p := startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})

	// noPlaintext checks that a failed handshake got no IMAP in clear:
	// nothing, or a TLS alert record (content type 21).
	noPlaintext := func(t *testing.T, data []byte, err error) {
		t.Helper()
		if len(data) > 0 && data[0] != 21 {
			t.Errorf("received %q on the imaps port; want nothing or a TLS alert", data)
		}
		t.Logf("closed after %d bytes (%x), read error %v", len(data), data, err)
	}

	t.Run("plaintext client", func(t *testing.T) {
		c := dialRaw(t, p.TLSAddr)
		c.send("a LOGIN x y\r\n")
		data, err := tlsReadUntilClosed(t, c.nc)
		if len(data) != 0 {
			t.Errorf("imaps port answered a plaintext client with %q; want a close", data)
		}
		t.Logf("closed, read error %v", err)
		waitZero(t, p.Limiter)
	})
	t.Run("garbage", func(t *testing.T) {
		c := dialRaw(t, p.TLSAddr)
		c.send("\x00\xff\xfe\x80GARBAGE\r\n\x16\x03")
		data, err := tlsReadUntilClosed(t, c.nc)
		noPlaintext(t, data, err)
		waitZero(t, p.Limiter)
	})
	t.Run("malformed TLS record", func(t *testing.T) {
		c := dialRaw(t, p.TLSAddr)
		c.send("\x16\x03\x01\x00\x05\xde\xad\xbe\xef\x00")
		data, err := tlsReadUntilClosed(t, c.nc)
		noPlaintext(t, data, err)
		waitZero(t, p.Limiter)
	})
	t.Run("TLS 1.1 client", func(t *testing.T) {
		c := dialRaw(t, p.TLSAddr)
		cfg := pki.clientConfig()
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		tc := tls.Client(c.nc, cfg)
		tc.SetDeadline(time.Now().Add(tlsTimeout))
		err := tc.Handshake()
		if err == nil {
			t.Fatalf("TLS 1.1 handshake succeeded (%s)", tls.VersionName(tc.ConnectionState().Version))
		}
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("TLS 1.1 handshake: %v; want a protocol version alert", err)
		}
		data, err := tlsReadUntilClosed(t, c.nc)
		if len(data) != 0 {
			t.Errorf("after the failed handshake: %q", data)
		}
		t.Logf("closed, read error %v", err)
		waitZero(t, p.Limiter)
	})
	t.Run("ALPN http/1.1 only", func(t *testing.T) {
		// ALPACA: a client that wants another protocol is refused in the
		// handshake (RFC 7301 no_application_protocol).
		c := dialRaw(t, p.TLSAddr)
		cfg := pki.clientConfig()
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c.nc, cfg)
		tc.SetDeadline(time.Now().Add(tlsTimeout))
		err := tc.Handshake()
		if err == nil {
			t.Fatalf("handshake with ALPN http/1.1 succeeded (negotiated %q)", tc.ConnectionState().NegotiatedProtocol)
		}
		if !strings.Contains(err.Error(), "no application protocol") {
			t.Errorf("handshake: %v; want no_application_protocol", err)
		}
		tlsReadUntilClosed(t, c.nc)
		waitZero(t, p.Limiter)
	})

	// Silent clients are closed by preauth_timeout, in the handshake.
	short := startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig(), PreauthTimeout: 500 * time.Millisecond}, limits.Options{})
	t.Run("silent client on imaps", func(t *testing.T) {
		start := time.Now()
		c := dialRaw(t, short.TLSAddr)
		data, err := tlsReadUntilClosed(t, c.nc)
		el := time.Since(start)
		if len(data) != 0 {
			t.Errorf("silent client got %q; want a close", data)
		}
		if el < 400*time.Millisecond || el > 5*time.Second {
			t.Errorf("closed after %v; want about preauth_timeout (500ms)", el)
		}
		t.Logf("closed after %v, read error %v", el, err)
		waitZero(t, short.Limiter)
	})
	t.Run("silent client after STARTTLS", func(t *testing.T) {
		start := time.Now()
		c := dialRaw(t, short.Addr)
		c.greeting()
		if un, st := c.cmd("s", "STARTTLS"); !strings.HasPrefix(st, "s OK ") || len(un) != 0 {
			t.Fatalf("STARTTLS: %q %q", un, st)
		}
		data, err := tlsReadUntilClosed(t, c.nc)
		el := time.Since(start)
		if len(data) != 0 {
			t.Errorf("client silent after STARTTLS got %q; want a close", data)
		}
		if el < 400*time.Millisecond || el > 5*time.Second {
			t.Errorf("closed after %v; want about preauth_timeout (500ms)", el)
		}
		t.Logf("closed after %v, read error %v", el, err)
		waitZero(t, short.Limiter)
	})
}

// TestTLSMaxConnectionsHandshake: a connection in its TLS handshake holds
// a max_connections slot.
func TestTLSMaxConnectionsHandshake(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	p := startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{MaxConnections: 1})

	first := dialRaw(t, p.TLSAddr) // says nothing yet: mid-handshake
	waitCounts(t, p.Limiter, "the connection in its handshake is not counted", func(c limits.Counts) bool {
		return c.Connections == 1
	})

	// On the plaintext listener the refusal is a BYE.
	c := dialRaw(t, p.Addr)
	if l := c.line(); l != limByeMaxConns(1) {
		t.Errorf("second connection (plaintext port): got %q; want %q", l, limByeMaxConns(1))
	}
	c.expectClosed()

	// On the imaps listener, nothing TLS can carry a BYE yet: either a
	// close, or the BYE in plaintext. Which one is logged.
	c = dialRaw(t, p.TLSAddr)
	data, err := tlsReadUntilClosed(t, c.nc)
	switch string(data) {
	case "":
		t.Logf("imaps port: refused connection closed without a word (read error %v)", err)
	case limByeMaxConns(1) + "\r\n":
		t.Logf("imaps port: refused connection got the BYE in plaintext before TLS: %q", data)
	default:
		t.Errorf("imaps port: refused connection got %q; want a close or %q", data, limByeMaxConns(1))
	}
	// A TLS client there sees a failed handshake, not a hang.
	c = dialRaw(t, p.TLSAddr)
	tc := tls.Client(c.nc, pki.clientConfig())
	tc.SetDeadline(time.Now().Add(tlsTimeout))
	if err := tc.Handshake(); err == nil {
		t.Errorf("TLS handshake of a refused connection succeeded")
	} else {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("refused TLS client: handshake timed out")
		}
		t.Logf("imaps port: a refused TLS client's handshake fails with: %v", err)
	}
	waitCounts(t, p.Limiter, "refused connections were counted", func(c limits.Counts) bool {
		return c.Connections == 1
	})

	// The first connection finishes its handshake and logs in.
	tcf := tls.Client(first.nc, pki.clientConfig())
	tcf.SetDeadline(time.Now().Add(tlsTimeout))
	if err := tcf.Handshake(); err != nil {
		t.Fatalf("first connection's handshake: %v", err)
	}
	tcf.SetDeadline(time.Time{})
	first.nc, first.br = tcf, bufio.NewReader(tcf)
	if g := first.greeting(); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q", g)
	}
	un, st := first.cmd("l", "LOGIN alice secret")
	e2eWantLoggedIn(t, "l", un, st)
	e2eSelectAndLogout(t, first, "* 3 EXISTS")
	waitZero(t, p.Limiter)

	// The slot is free again.
	c, _ = tlsDialRaw(t, p.TLSAddr, pki.clientConfig())
	if g := c.greeting(); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting after the slot was freed: %q", g)
	}
	c.cmd("o", "LOGOUT")
	c.expectClosed()
	waitZero(t, p.Limiter)
}

// 5. Upstream TLS modes against imapd with TLS.

func TestTLSUpstreamModes(t *testing.T) {
	upPKI := newTLSPKI(t, "upstream CA")
	otherPKI := newTLSPKI(t, "some other CA")
	// No InsecureAuth: this imapd accepts a login only over TLS, so a
	// login that works proves the proxy's upstream leg was TLS.
	startAddr, implicitAddr := server.StartTLS(t, server.Options{
		Users:     []server.User{tlsAlice},
		TLSConfig: upPKI.serverConfig("127.0.0.1", "localhost"),
	})
	plainAddr := startUpstream(t, tlsAlice) // no TLS at all
	_, implicitPort, _ := net.SplitHostPort(implicitAddr)

	trusted := func() *tls.Config { return &tls.Config{RootCAs: upPKI.Pool, MinVersion: tls.VersionTLS12} }
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
		{"implicit untrusted", implicitAddr, "implicit", &tls.Config{RootCAs: otherPKI.Pool}, 0, false},
		{"starttls untrusted", startAddr, "starttls", &tls.Config{RootCAs: otherPKI.Pool}, 0, false},
		{"implicit system roots", implicitAddr, "implicit", nil, 0, false},
		{"starttls without STARTTLS upstream", plainAddr, "starttls", trusted(), 0, false},
		{"implicit to a plaintext port", plainAddr, "implicit", trusted(), 0, false},
		{"implicit ServerName mismatch", implicitAddr, "implicit", &tls.Config{RootCAs: upPKI.Pool, ServerName: "mail.example.org"}, 0, false},
		{"starttls ServerName mismatch", startAddr, "starttls", &tls.Config{RootCAs: upPKI.Pool, ServerName: "mail.example.org"}, 0, false},
		{"implicit InsecureSkipVerify", implicitAddr, "implicit", &tls.Config{RootCAs: otherPKI.Pool, ServerName: "mail.example.org", InsecureSkipVerify: true}, 0, true},
		{"starttls InsecureSkipVerify", startAddr, "starttls", &tls.Config{InsecureSkipVerify: true}, 0, true},
		// Both sides wait for the other to speak first; login_timeout
		// ends it.
		{"starttls to an imaps port", implicitAddr, "starttls", trusted(), time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, tc.addr, proxy.Options{
				UpstreamTLS: tc.mode, UpstreamTLSConfig: tc.cfg, LoginTimeout: tc.loginTimeout,
			}, limits.Options{})
			c := dialRaw(t, p.Addr)
			c.greeting()
			start := time.Now()
			un, st := c.cmd("l1", "LOGIN alice secret")
			el := time.Since(start)
			if tc.ok {
				e2eWantLoggedIn(t, "l1", un, st)
				e2eSelectAndLogout(t, c, "* 3 EXISTS")
			} else {
				if st != "l1 "+tlsUnavailable {
					t.Fatalf("login: got %q (untagged %q); want l1 %s", st, un, tlsUnavailable)
				}
				limit := 5 * time.Second
				if tc.loginTimeout != 0 {
					limit = tc.loginTimeout + 4*time.Second
				}
				if el > limit {
					t.Errorf("the NO took %v; want it promptly (under %v)", el, limit)
				}
				// The connection stays usable.
				if un, st := c.cmd("o", "LOGOUT"); st != "o OK LOGOUT completed" {
					t.Errorf("LOGOUT after the NO: %q %q", un, st)
				}
				c.expectClosed()
			}
			t.Logf("login answer after %v", el.Round(time.Millisecond))
			waitZero(t, p.Limiter)
		})
	}
}

// More sessions with TLS on one or both legs.

// TestTLSBothLegs relays large literals both ways with TLS on both legs,
// in every combination of client and upstream TLS modes.
func TestTLSBothLegs(t *testing.T) {
	pki := newTLSPKI(t, "test CA")
	startAddr, implicitAddr := server.StartTLS(t, server.Options{
		Users:     []server.User{{Username: "alice", Password: "secret"}},
		TLSConfig: pki.serverConfig(),
	})
	upCfg := &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}
	for _, up := range []struct{ mode, addr string }{{"implicit", implicitAddr}, {"starttls", startAddr}} {
		p := startTLSProxy(t, up.addr, proxy.Options{
			TLSConfig: pki.serverConfig(), UpstreamTLS: up.mode, UpstreamTLSConfig: upCfg,
		}, limits.Options{})
		for _, client := range []string{"implicit", "starttls"} {
			t.Run("client "+client+", upstream "+up.mode, func(t *testing.T) {
				var c *imapclient.Client
				if client == "implicit" {
					nc, err := tls.DialWithDialer(&net.Dialer{Timeout: tlsTimeout}, "tcp", p.TLSAddr, pki.clientConfig())
					if err != nil {
						t.Fatal(err)
					}
					c = tlsIMAPClient(t, nc, nil, false)
				} else {
					nc, err := net.DialTimeout("tcp", p.Addr, tlsTimeout)
					if err != nil {
						t.Fatal(err)
					}
					c = tlsIMAPClient(t, nc, &imapclient.Options{TLSConfig: pki.clientConfig()}, true)
				}
				if err := c.Login("alice", "secret").Wait(); err != nil {
					t.Fatalf("login: %v", err)
				}
				if _, err := c.Select("INBOX", nil).Wait(); err != nil {
					t.Fatalf("select: %v", err)
				}
				big := e2eBigMessage(2<<20, "tls-"+client+"-"+up.mode)
				data := e2eAppend(t, c, big)
				if data == nil || data.UID == 0 {
					t.Fatalf("APPEND returned no UID: %+v", data)
				}
				if got := e2eFetchBody(t, c, data.UID); !bytes.Equal(got, big) {
					t.Errorf("2 MiB message read back as %d bytes; want it unchanged (%d bytes)", len(got), len(big))
				}
				if err := c.Logout().Wait(); err != nil {
					t.Fatalf("logout: %v", err)
				}
				waitZero(t, p.Limiter)
			})
		}
	}
}

// TestTLSIdleTimeout: a session idling in IDLE longer than parkAfter
// (its plain TCP direction parks) is ended by idle_timeout with a BYE
// that arrives inside TLS.
func TestTLSIdleTimeout(t *testing.T) {
	pki := newTLSPKI(t, "test CA")
	startAddr, implicitAddr := server.StartTLS(t, server.Options{
		Users: []server.User{tlsAlice}, TLSConfig: pki.serverConfig(), InsecureAuth: true,
	})
	upCfg := &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}
	const idle = time.Second
	for _, tc := range []struct {
		name           string
		clientTLS      bool
		upMode, upAddr string
	}{
		{"TLS client, plain upstream", true, "none", startAddr},
		{"plain client, TLS upstream", false, "implicit", implicitAddr},
		{"TLS both legs", true, "starttls", startAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startTLSProxy(t, tc.upAddr, proxy.Options{
				TLSConfig: pki.serverConfig(), AllowPlaintextAuth: !tc.clientTLS,
				UpstreamTLS: tc.upMode, UpstreamTLSConfig: upCfg, IdleTimeout: idle,
			}, limits.Options{})
			var c *rawConn
			if tc.clientTLS {
				c, _ = tlsDialRaw(t, p.TLSAddr, pki.clientConfig())
			} else {
				c = dialRaw(t, p.Addr)
			}
			c.greeting()
			un, st := c.cmd("l", "LOGIN alice secret")
			e2eWantLoggedIn(t, "l", un, st)
			if _, st := c.cmd("s", "SELECT INBOX"); !strings.HasPrefix(st, "s OK ") {
				t.Fatalf("SELECT: %q", st)
			}
			start := time.Now()
			c.send("i IDLE\r\n")
			limWantPrefix(t, "IDLE", c.line(), "+")
			l := c.line()
			el := time.Since(start)
			limWantLine(t, "after idle_timeout", l, "* BYE Autologout; idle for too long (idle_timeout=1s)")
			if el < idle-100*time.Millisecond {
				t.Errorf("BYE after %v; want idle_timeout (%v)", el, idle)
			}
			c.expectClosed()
			waitZero(t, p.Limiter)
		})
	}
}

// TestTLSShutdown: Shutdown tells TLS clients BYE inside TLS, and ends
// connections in their handshake without waiting for them.
func TestTLSShutdown(t *testing.T) {
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	p := startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})

	relaying, _ := tlsDialRaw(t, p.TLSAddr, pki.clientConfig())
	relaying.greeting()
	un, st := relaying.cmd("l", "LOGIN alice secret")
	e2eWantLoggedIn(t, "l", un, st)
	if _, st := relaying.cmd("s", "SELECT INBOX"); !strings.HasPrefix(st, "s OK ") {
		t.Fatalf("SELECT: %q", st)
	}
	preauthImplicit, _ := tlsDialRaw(t, p.TLSAddr, pki.clientConfig())
	preauthImplicit.greeting()
	preauthStartTLS := dialRaw(t, p.Addr)
	preauthStartTLS.greeting()
	preauthStartTLS.upgradeTLS("t", pki.clientConfig())
	if _, st := preauthStartTLS.cmd("n", "NOOP"); st != "n OK NOOP completed" {
		t.Fatalf("NOOP: %q", st)
	}
	inImplicitHandshake := dialRaw(t, p.TLSAddr)
	inStartTLSHandshake := dialRaw(t, p.Addr)
	inStartTLSHandshake.greeting()
	if _, st := inStartTLSHandshake.cmd("t", "STARTTLS"); !strings.HasPrefix(st, "t OK ") {
		t.Fatalf("STARTTLS: %q", st)
	}
	waitCounts(t, p.Limiter, "five connections", func(c limits.Counts) bool { return c.Connections == 5 })

	ctx, cancel := context.WithTimeout(context.Background(), tlsTimeout)
	defer cancel()
	if err := p.Server.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (connections in a handshake held it up?)", err)
	}
	for name, c := range map[string]*rawConn{
		"relaying": relaying, "implicit TLS before login": preauthImplicit, "STARTTLS before login": preauthStartTLS,
	} {
		limWantLine(t, name, c.line(), limShutdownBye)
		c.expectClosed()
	}
	for name, c := range map[string]*rawConn{
		"in the imaps handshake": inImplicitHandshake, "in the STARTTLS handshake": inStartTLSHandshake,
	} {
		data, err := tlsReadUntilClosed(t, c.nc)
		switch string(data) {
		case "":
			t.Logf("%s: closed without a word (read error %v)", name, err)
		case limShutdownBye + "\r\n":
			t.Logf("%s: got the BYE in plaintext where TLS was due: %q", name, data)
		default:
			t.Errorf("%s: got %q; want a close or the BYE", name, data)
		}
	}
	waitZero(t, p.Limiter)
}

// 6. Upstream STARTTLS injection: bytes the upstream sends behind its
// STARTTLS OK, before the handshake, are refused.

// tlsFake scripts a fake upstream for one connection.
type tlsFake struct {
	greeting   string // default: "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi"
	preCaps    string // the answer to CAPABILITY before TLS
	startReply string // the status after the STARTTLS tag; default "OK Begin TLS"
	forged     string // sent in the same write right behind the STARTTLS answer
}

// tlsFakeUpstream serves one connection as scripted by f: the greeting,
// CAPABILITY and STARTTLS in plaintext; then, if STARTTLS was answered OK
// with nothing forged behind it, TLS and a minimal server that accepts
// alice/secret. It reports on done how the connection ended.
func tlsFakeUpstream(t *testing.T, pki *tlsPKI, f tlsFake) (addr string, done <-chan string) {
	t.Helper()
	if f.greeting == "" {
		f.greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi"
	}
	if f.startReply == "" {
		f.startReply = "OK Begin TLS"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 1)
	cfg := pki.serverConfig()
	go func() { ch <- f.serve(ln, cfg) }()
	return ln.Addr().String(), ch
}

// tlsFakeResult waits for the fake upstream's report.
func tlsFakeResult(t *testing.T, done <-chan string) string {
	t.Helper()
	select {
	case got := <-done:
		return got
	case <-time.After(2 * tlsTimeout):
		t.Fatal("fake upstream did not finish")
		return ""
	}
}

func (f tlsFake) serve(ln net.Listener, cfg *tls.Config) string {
	nc, err := ln.Accept()
	if err != nil {
		return "accept: " + err.Error()
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(tlsTimeout))
	br := bufio.NewReader(nc)
	io.WriteString(nc, f.greeting+"\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "closed in plaintext: " + err.Error()
		}
		tag, cmd, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch strings.ToUpper(cmd) {
		case "CAPABILITY":
			io.WriteString(nc, "* CAPABILITY "+f.preCaps+"\r\n"+tag+" OK done\r\n")
			continue
		case "STARTTLS":
		default:
			return fmt.Sprintf("unexpected command before TLS: %q", line)
		}
		if _, err := io.WriteString(nc, tag+" "+f.startReply+"\r\n"+f.forged); err != nil {
			return "writing STARTTLS answer: " + err.Error()
		}
		if f.forged != "" || !strings.HasPrefix(f.startReply, "OK") {
			// The proxy should hang up, without a ClientHello.
			rest, err := io.ReadAll(br)
			return fmt.Sprintf("after the STARTTLS answer the proxy sent %d bytes, then %v", len(rest), err)
		}
		break
	}
	tc := tls.Server(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return "handshake: " + err.Error()
	}
	br = bufio.NewReader(tc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "read in TLS: " + err.Error()
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		name, arg, _ := strings.Cut(rest, " ")
		var out string
		switch strings.ToUpper(name) {
		case "CAPABILITY":
			out = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + " OK done\r\n"
		case "AUTHENTICATE":
			mech, ir, hasIR := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				out = tag + " NO unsupported mechanism\r\n"
				break
			}
			if !hasIR {
				io.WriteString(tc, "+ \r\n")
				if ir, err = br.ReadString('\n'); err != nil {
					return "reading SASL response: " + err.Error()
				}
			}
			resp, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
			if string(resp) != "\x00alice\x00secret" {
				out = tag + " NO [AUTHENTICATIONFAILED] no\r\n"
			} else {
				out = tag + " OK [CAPABILITY IMAP4rev1] logged in over TLS\r\n"
			}
		case "LOGOUT":
			io.WriteString(tc, "* BYE bye\r\n"+tag+" OK LOGOUT completed\r\n")
			return "clean logout in TLS"
		default:
			out = tag + " BAD unexpected " + name + "\r\n"
		}
		if _, err := io.WriteString(tc, out); err != nil {
			return "write in TLS: " + err.Error()
		}
	}
}

func TestTLSUpstreamInjection(t *testing.T) {
	pki := newTLSPKI(t, "fake upstream CA")
	upCfg := &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}
	const hungUp = "after the STARTTLS answer the proxy sent 0 bytes, then <nil>"

	// Logins that must work: they show the fake is a valid upstream.
	for _, tc := range []struct {
		name string
		fake tlsFake
	}{
		{"control: clean STARTTLS", tlsFake{}},
		// The plaintext capabilities are stale after TLS: LOGINDISABLED
		// before TLS must not stop AUTHENTICATE after it.
		{"stale capabilities dropped", tlsFake{greeting: "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi"}},
		{"greeting without capabilities", tlsFake{greeting: "* OK hi", preCaps: "IMAP4rev1 STARTTLS LOGINDISABLED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := tlsFakeUpstream(t, pki, tc.fake)
			p := startProxy(t, addr, proxy.Options{UpstreamTLS: "starttls", UpstreamTLSConfig: upCfg}, limits.Options{})
			c := dialRaw(t, p.Addr)
			c.greeting()
			un, st := c.cmd("l", "LOGIN alice secret")
			e2eWantLoggedIn(t, "l", un, st)
			if un, st := c.cmd("o", "LOGOUT"); st != "o OK LOGOUT completed" || len(un) != 1 {
				t.Errorf("LOGOUT: %q %q", un, st)
			}
			if got := tlsFakeResult(t, done); got != "clean logout in TLS" {
				t.Errorf("fake upstream: %s", got)
			}
			c.expectClosed()
			waitZero(t, p.Limiter)
		})
	}

	// Logins that must fail with UNAVAILABLE, the proxy hanging up on the
	// upstream before any TLS.
	const closedPlain = "closed in plaintext: EOF" // never sent STARTTLS
	for _, tc := range []struct {
		name string
		fake tlsFake
		want string // the fake upstream's report
	}{
		{"forged capability after STARTTLS OK", tlsFake{forged: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] forged\r\n"}, hungUp},
		{"forged tagged OK after STARTTLS OK", tlsFake{forged: "ig1 OK [CAPABILITY IMAP4rev1] forged login\r\n"}, hungUp},
		{"one forged byte", tlsFake{forged: "*"}, hungUp},
		{"STARTTLS refused", tlsFake{startReply: "NO not today"}, hungUp},
		{"STARTTLS BAD", tlsFake{startReply: "BAD what"}, hungUp},
		{"STARTTLS not offered after CAPABILITY", tlsFake{greeting: "* OK hi", preCaps: "IMAP4rev1 AUTH=PLAIN"}, closedPlain},
		{"STARTTLS not offered in greeting", tlsFake{greeting: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi"}, closedPlain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := tlsFakeUpstream(t, pki, tc.fake)
			p := startProxy(t, addr, proxy.Options{UpstreamTLS: "starttls", UpstreamTLSConfig: upCfg}, limits.Options{})
			c := dialRaw(t, p.Addr)
			c.greeting()
			start := time.Now()
			un, st := c.cmd("l", "LOGIN alice secret")
			if st != "l "+tlsUnavailable || len(un) != 0 {
				t.Fatalf("login: got %q (untagged %q); want l %s", st, un, tlsUnavailable)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("the NO took %v", el)
			}
			if got := tlsFakeResult(t, done); got != tc.want {
				t.Errorf("fake upstream: %s; want %s (the proxy hangs up before any TLS or login)", got, tc.want)
			}
			c.cmd("o", "LOGOUT")
			c.expectClosed()
			waitZero(t, p.Limiter)
		})
	}
}

// 7. Dovecot with TLS.

func TestTLSDovecot(t *testing.T) {
	addr, tlsAddr, certPEM := startDovecotTLS(t, []dovecotUser{{Username: e2eUser, Password: e2ePass}})
	upCfg, err := dovecot.ClientTLSConfig(certPEM)
	if err != nil {
		t.Fatalf("Dovecot's certificate: %v", err)
	}
	// Dovecot's own certificate (Debian's snakeoil) names localhost, not
	// 127.0.0.1: the proxy verifies it with ServerName set to that name,
	// trusting exactly the certificate the harness returned.
	t.Logf("upstream ServerName %q (from Dovecot's certificate)", upCfg.ServerName)
	e2eSeed(t, addr)

	pki := newTLSPKI(t, "proxy CA")
	for _, tc := range []struct{ mode, addr string }{
		{"implicit", tlsAddr},
		{"starttls", addr},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := startTLSProxy(t, tc.addr, proxy.Options{
				TLSConfig: pki.serverConfig(), UpstreamTLS: tc.mode, UpstreamTLSConfig: upCfg,
			}, limits.Options{})
			// TLS on both legs: the client uses the proxy's imaps port.
			nc, err := tls.DialWithDialer(&net.Dialer{Timeout: tlsTimeout}, "tcp", p.TLSAddr, pki.clientConfig())
			if err != nil {
				t.Fatal(err)
			}
			c := tlsIMAPClient(t, nc, nil, false)
			if err := c.Login(e2eUser, e2ePass).Wait(); err != nil {
				t.Fatalf("login: %v", err)
			}
			sel, err := c.Select("INBOX", nil).Wait()
			if err != nil {
				t.Fatalf("select: %v", err)
			}
			if sel.NumMessages != 1 {
				t.Errorf("INBOX holds %d messages; want 1 (the seed)", sel.NumMessages)
			}
			uid := e2eUIDOf(t, c, nil, 1)
			if body := e2eFetchBody(t, c, uid); string(body) != e2eSeedMessage {
				t.Errorf("seed message reads back as %q", body)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Fatalf("logout: %v", err)
			}
			waitZero(t, p.Limiter)
		})
	}

	// The certificate is really checked: trusting another CA fails.
	t.Run("untrusted", func(t *testing.T) {
		other := newTLSPKI(t, "some other CA")
		for _, tc := range []struct{ mode, addr string }{{"implicit", tlsAddr}, {"starttls", addr}} {
			p := startProxy(t, tc.addr, proxy.Options{
				UpstreamTLS:       tc.mode,
				UpstreamTLSConfig: &tls.Config{RootCAs: other.Pool, ServerName: upCfg.ServerName},
			}, limits.Options{})
			c := dialRaw(t, p.Addr)
			c.greeting()
			if _, st := c.cmd("l", "LOGIN "+e2eUser+" "+e2ePass); st != "l "+tlsUnavailable {
				t.Errorf("%s with an untrusted certificate: %q; want l %s", tc.mode, st, tlsUnavailable)
			}
			c.cmd("o", "LOGOUT")
			waitZero(t, p.Limiter)
		}
	})
}

// 8. Clients nobody here wrote.

// tlsTool finds an external program, skipping the test without it
// (failing in CI).
func tlsTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if ciEnabled() {
			t.Fatalf("%s is not installed, and CI is set: %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return path
}

// tlsRun runs a command with a timeout and returns its exit code, stdout
// and stderr.
func tlsRun(t *testing.T, stdin string, name string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*tlsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q: timed out; stdout %q, stderr %q", name, args, out.String(), errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", name, err)
	}
	return code, out.String(), errb.String()
}

func tlsProxyForClients(t *testing.T) (*tlsProxy, *tlsPKI) {
	t.Helper()
	pki := newTLSPKI(t, "proxy CA")
	up := startUpstream(t, tlsAlice)
	return startTLSProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{}), pki
}

func TestTLSCurl(t *testing.T) {
	curl := tlsTool(t, "curl")
	p, pki := tlsProxyForClients(t)
	ca := pki.caFile()
	_, port, _ := net.SplitHostPort(p.Addr)
	_, tlsPort, _ := net.SplitHostPort(p.TLSAddr)

	for _, tc := range []struct{ name, url string }{
		{"STARTTLS", "imap://127.0.0.1:" + port + "/"},
		{"imaps", "imaps://127.0.0.1:" + tlsPort + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := tlsRun(t, "", curl, "--silent", "--show-error", "--ssl-reqd",
				"--max-time", "15", "--cacert", ca, "--user", "alice:secret", tc.url)
			if code != 0 {
				t.Fatalf("curl %s: exit %d; stdout %q, stderr %q", tc.url, code, out, errs)
			}
			if !strings.Contains(out, "* LIST ") || !strings.Contains(out, "INBOX") {
				t.Errorf("curl %s: output %q does not list INBOX", tc.url, out)
			}
			t.Logf("curl %s:\n%s", tc.url, out)
			waitZero(t, p.Limiter)
		})
	}
	t.Run("unknown CA", func(t *testing.T) {
		// Without --cacert curl trusts the system CAs only: the handshake
		// fails with 60 (peer certificate cannot be authenticated).
		code, out, errs := tlsRun(t, "", curl, "--silent", "--show-error", "--max-time", "15",
			"--user", "alice:secret", "imaps://127.0.0.1:"+tlsPort+"/")
		if code != 60 {
			t.Errorf("curl without the CA: exit %d; want 60 (stdout %q, stderr %q)", code, out, errs)
		}
		waitZero(t, p.Limiter)
	})
}

func TestTLSOpenSSL(t *testing.T) {
	openssl := tlsTool(t, "openssl")
	p, pki := tlsProxyForClients(t)
	ca := pki.caFile()
	script := "a LOGIN alice secret\r\nb SELECT INBOX\r\nc LOGOUT\r\n"

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"STARTTLS", []string{"-starttls", "imap", "-connect", p.Addr}},
		{"imaps", []string{"-connect", p.TLSAddr, "-alpn", "imap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"s_client"}, tc.args...)
			args = append(args, "-CAfile", ca, "-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet")
			code, out, errs := tlsRun(t, script, openssl, args...)
			if code != 0 {
				t.Fatalf("openssl %q: exit %d; stdout %q, stderr %q", args, code, out, errs)
			}
			for _, want := range []string{"a OK [CAPABILITY ", "* 3 EXISTS", "b OK ", "* BYE", "c OK LOGOUT"} {
				if !strings.Contains(out, want) {
					t.Errorf("openssl %s: output lacks %q:\n%s", tc.name, want, out)
				}
			}
			t.Logf("openssl s_client %s:\n%s", tc.name, out)
			waitZero(t, p.Limiter)
		})
	}
}
