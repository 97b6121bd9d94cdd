package test

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/park"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestTLSHandshakeFailures: handshakes that fail or never happen end in
// a close, with no IMAP in plaintext.
func TestTLSHandshakeFailures(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	up := proxytest.Imapd(t, aliceUser)
	p := startTLSProxy(t, ca, proxytest.Config{Upstream: up})

	for _, tc := range []struct {
		name string
		send string // written on the imaps port, or
		// cfg, a client configuration whose handshake must fail with an
		// error containing refusal
		cfg     func(*tls.Config)
		refusal string
		// before the close: "" nothing; "alert" nothing or a TLS alert
		// record (content type 21); "any" anything
		then string
	}{
		{name: "plaintext client", send: "a LOGIN x y\r\n"},
		{name: "garbage", send: "\x00\xff\xfe\x80GARBAGE\r\n\x16\x03", then: "alert"},
		{name: "malformed TLS record", send: "\x16\x03\x01\x00\x05\xde\xad\xbe\xef\x00", then: "alert"},
		{name: "TLS 1.1 client", cfg: func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, refusal: "protocol version"},
		// ALPACA: a client that wants another protocol is refused in the
		// handshake (RFC 7301 no_application_protocol).
		{name: "ALPN http/1.1 only", cfg: func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }, refusal: "no application protocol", then: "any"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, p.TLSAddr)
			if tc.cfg == nil {
				c.Send(tc.send)
			} else {
				cfg := ca.clientConfig()
				tc.cfg(cfg)
				st, err := c.Client().UpgradeTLS(cfg)
				if err == nil {
					t.Fatalf("handshake succeeded (%s, ALPN %q)", tls.VersionName(st.Version), st.NegotiatedProtocol)
				}
				if !strings.Contains(err.Error(), tc.refusal) {
					t.Errorf("handshake: %v; want %s", err, tc.refusal)
				}
			}
			data, err := c.ReadToEnd()
			switch {
			case tc.then == "" && len(data) != 0:
				t.Errorf("the imaps port answered with %q; want a close", data)
			case tc.then == "alert" && len(data) > 0 && data[0] != 21:
				t.Errorf("received %q on the imaps port; want nothing or a TLS alert", data)
			}
			t.Logf("closed after %d bytes (%x), read error %v", len(data), data, err)
			proxytest.WaitZero(t, p.Limiter)
		})
	}

	// Silent clients are closed by preauth_timeout, in the handshake: not
	// earlier, and without a word (see Clock.Expire).
	clk := proxytest.NewClock()
	short := startTLSProxy(t, ca, proxytest.Config{Upstream: up, Options: proxy.Options{PreauthTimeout: time.Minute, Clock: clk}})
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) *proxytest.Conn
	}{
		{"silent client on imaps", func(t *testing.T) *proxytest.Conn { return proxytest.Dial(t, short.TLSAddr) }},
		{"silent client after STARTTLS", func(t *testing.T) *proxytest.Conn {
			c := proxytest.Dial(t, short.Addr)
			c.Greeting()
			if un, st := c.Cmd("s", "STARTTLS"); !strings.HasPrefix(st, "s OK ") || len(un) != 0 {
				t.Fatalf("STARTTLS: %q %q", un, st)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.start(t)
			// The proxy starts the timer when it admits the connection.
			clk.Expire(t, time.Minute, 1)
			data, err := c.ReadToEnd()
			if len(data) != 0 {
				t.Errorf("silent client got %q; want a close", data)
			}
			t.Logf("closed, read error %v", err)
			proxytest.WaitZero(t, short.Limiter)
		})
	}
}

// TestTLSMaxConnectionsHandshake: a connection in its TLS handshake holds
// a max_connections slot; as any connection that has not logged in, it
// is the one closed to make room for a new one; and when the slot is a
// session's, a new connection is refused on both listeners.
func TestTLSMaxConnectionsHandshake(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{Limits: limits.Options{MaxConnections: 1}})

	first := proxytest.Dial(t, p.TLSAddr) // says nothing yet: mid-handshake
	proxytest.WaitCounts(t, p.Limiter, "the connection in its handshake is not counted", func(c limits.Counts) bool {
		return c.Connections == 1
	})
	// A new connection takes its place: its handshake is cut.
	holder, _ := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
	if data, _ := first.ReadToEnd(); len(data) != 0 && data[0] != 21 { // nothing, or a TLS alert
		t.Errorf("the evicted connection in its handshake got %q", data)
	}
	holder.Greeting()
	holder.LogIn("l", "LOGIN alice secret")

	// On the plaintext listener the refusal is a BYE.
	refused(t, "", p.Addr, byeMaxConns(1))

	// On the imaps listener, nothing TLS can carry a BYE yet: either a
	// close, or the BYE in plaintext. Which one is logged.
	data, err := proxytest.Dial(t, p.TLSAddr).ReadToEnd()
	switch string(data) {
	case "":
		t.Logf("imaps port: refused connection closed without a word (read error %v)", err)
	case byeMaxConns(1) + "\r\n":
		t.Logf("imaps port: refused connection got the BYE in plaintext before TLS: %q", data)
	default:
		t.Errorf("imaps port: refused connection got %q; want a close or %q", data, byeMaxConns(1))
	}
	// A TLS client there sees a failed handshake, not a hang.
	if _, err := proxytest.Dial(t, p.TLSAddr).Client().UpgradeTLS(ca.clientConfig()); err == nil {
		t.Errorf("TLS handshake of a refused connection succeeded")
	} else {
		if proxytest.IsTimeout(err) {
			t.Errorf("refused TLS client: handshake timed out")
		}
		t.Logf("imaps port: a refused TLS client's handshake fails with: %v", err)
	}
	proxytest.WaitCounts(t, p.Limiter, "refused connections were counted", func(c limits.Counts) bool {
		return c.Connections == 1
	})

	// The session logs out.
	holder.SelectAndLogout("* 3 EXISTS")
	proxytest.WaitZero(t, p.Limiter)

	// The slot is free again.
	c, _ := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
	c.Greeting()
	c.Logout("o")
	proxytest.WaitZero(t, p.Limiter)
}

// TestTLSIdleTimeout: a quiet session whose plain TCP direction has
// parked is ended by idle_timeout, with a BYE that a TLS client gets
// inside TLS. The timers run on a fake clock; only the parking waits for
// the wall clock, since the sweeper that evicts idle reads looks every
// sweepEvery (250ms) on it. The session does not IDLE: the proxy may note
// an IDLE sent over TLS or to a TLS upstream after the client has read
// "+ idling" (see proxytest.Clock), and then neither parks it nor cuts
// it when this test expects; TestLimitIdleTimeoutIDLE covers IDLE.
func TestTLSIdleTimeout(t *testing.T) {
	ca := newTestCA(t, "test CA")
	startAddr, implicitAddr := startIMAPDTLS(t, ca, true)
	const idle = 30 * time.Minute
	for _, tc := range []struct {
		name           string
		clientTLS      bool
		upMode, upAddr string
		parks          int // directions that park: the plain TCP ones
	}{
		{"TLS client, plain upstream", true, "none", startAddr, 1},
		{"plain client, TLS upstream", false, "implicit", implicitAddr, 1},
		{"TLS both legs", true, "starttls", startAddr, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := proxytest.NewClock()
			parker := &countingParker{Parker: park.New()}
			if _, ok := parker.Parker.(park.Nop); ok {
				tc.parks = 0 // nothing parks on this platform
			}
			t.Cleanup(func() { parker.Close() }) // after the proxy's cleanup
			p := startTLSProxy(t, ca, proxytest.Config{Upstream: tc.upAddr, Options: proxy.Options{
				AllowPlaintextAuth: !tc.clientTLS,
				UpstreamTLS:        tc.upMode, UpstreamTLSConfig: ca.upstreamConfig(),
				IdleTimeout: idle, Clock: clk, Parker: parker,
			}})
			var c *proxytest.Conn
			if tc.clientTLS {
				c, _ = proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
			} else {
				c = proxytest.Dial(t, p.Addr)
			}
			c.Greeting()
			c.LogIn("l", "LOGIN alice secret")
			c.OK("s", "SELECT INBOX")
			c.Settle("x")
			// A minute without traffic is well over parkAfter: at its next
			// look the sweeper evicts the waiting reads, and the plain TCP
			// direction parks.
			clk.Advance(time.Minute)
			proxytest.WaitFor(t, fmt.Sprintf("%d relay directions parked", tc.parks), func() bool { return parker.parked.Load() >= int32(tc.parks) })
			clk.ByeAfter(c, idle-time.Minute, 1, byeIdle("30m"))
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// countingParker is a park.Parker that counts the directions it parked.
type countingParker struct {
	park.Parker
	parked atomic.Int32
}

func (p *countingParker) Park(fd int, r park.Resumer) bool {
	ok := p.Parker.Park(fd, r)
	if ok {
		p.parked.Add(1)
	}
	return ok
}

// TestTLSShutdown: Shutdown tells TLS clients BYE inside TLS, and ends
// connections in their handshake without waiting for them.
func TestTLSShutdown(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{})

	relaying, _ := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
	relaying.Greeting()
	relaying.LogIn("l", "LOGIN alice secret")
	relaying.OK("s", "SELECT INBOX")
	preauthImplicit, _ := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
	preauthImplicit.Greeting()
	preauthStartTLS := proxytest.Dial(t, p.Addr)
	preauthStartTLS.Greeting()
	preauthStartTLS.StartTLS("t", ca.clientConfig())
	if _, st := preauthStartTLS.Cmd("n", "NOOP"); st != "n OK NOOP completed" {
		t.Fatalf("NOOP: %q", st)
	}
	inImplicitHandshake := proxytest.Dial(t, p.TLSAddr)
	inStartTLSHandshake := proxytest.Dial(t, p.Addr)
	inStartTLSHandshake.Greeting()
	if _, st := inStartTLSHandshake.Cmd("t", "STARTTLS"); !strings.HasPrefix(st, "t OK ") {
		t.Fatalf("STARTTLS: %q", st)
	}
	proxytest.WaitCounts(t, p.Limiter, "five connections", func(c limits.Counts) bool { return c.Connections == 5 })

	shutdown(t, p)
	for name, c := range map[string]*proxytest.Conn{
		"relaying": relaying, "implicit TLS before login": preauthImplicit, "STARTTLS before login": preauthStartTLS,
	} {
		wantLine(t, name, c.Line(), byeShutdown)
		c.ExpectClosed()
	}
	for name, c := range map[string]*proxytest.Conn{
		"in the imaps handshake": inImplicitHandshake, "in the STARTTLS handshake": inStartTLSHandshake,
	} {
		data, err := c.ReadToEnd()
		switch string(data) {
		case "":
			t.Logf("%s: closed without a word (read error %v)", name, err)
		case byeShutdown + "\r\n":
			t.Logf("%s: got the BYE in plaintext where TLS was due: %q", name, data)
		default:
			t.Errorf("%s: got %q; want a close or the BYE", name, data)
		}
	}
	proxytest.WaitZero(t, p.Limiter)
}
