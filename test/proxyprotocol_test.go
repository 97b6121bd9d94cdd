package test

// PROXY protocol in (issue 11, item 1): a load balancer at 127.0.0.2 is
// trusted and tells the proxy the client's address in a v1 or v2 header;
// 127.0.0.3 is a peer outside trusted_proxies.

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

const (
	balancer  = "127.0.0.2" // in trusted_proxies
	untrusted = "127.0.0.3" // not
)

// ppProxy is a proxy with proxy_protocol on, trusting balancer, serving
// plaintext and imaps in front of imapd, on a fake clock, logging to
// logs.
type ppProxy struct {
	*proxytest.Proxy
	ca    *testCA
	clock *proxytest.Clock
	logs  *proxytest.Buffer
}

func startPP(t *testing.T, lim limits.Options) *ppProxy {
	t.Helper()
	p := &ppProxy{ca: newTestCA(t, "pp"), clock: proxytest.NewClock(), logs: &proxytest.Buffer{}}
	p.Proxy = startTLSProxy(t, p.ca, proxytest.Config{
		Options: proxy.Options{
			ProxyProtocol:      true,
			AllowPlaintextAuth: true,
			TrustedProxies:     []netip.Prefix{netip.MustParsePrefix(balancer + "/32")},
			Clock:              p.clock,
		},
		Limits: lim,
		Logger: slog.New(slog.NewTextHandler(p.logs, nil)),
	})
	return p
}

// addr is the listener's address: "imap" or "imaps".
func (p *ppProxy) addr(listener string) string {
	if listener == "imaps" {
		return p.TLSAddr
	}
	return p.Addr
}

// open dials listener from src, writes head (if any) and, on imaps, runs
// the TLS handshake; the greeting is next.
func (p *ppProxy) open(t *testing.T, src, listener string, head []byte) *proxytest.Conn {
	t.Helper()
	c := proxytest.DialFrom(t, src, p.addr(listener))
	if head != nil {
		c.Send(string(head))
	}
	if listener == "imaps" {
		c.UpgradeTLS(p.ca.clientConfig())
	}
	return c
}

// gone waits until no connection is left, in the registry (which the
// admin API lists) as in the limiter.
func (p *ppProxy) gone(t *testing.T) {
	t.Helper()
	proxytest.WaitFor(t, "no connection left", func() bool { return len(p.Server.Conns()) == 0 })
	proxytest.WaitZero(t, p.Limiter)
}

// clientOf returns the client address the proxy shows for user's
// session, waiting for it.
func (p *ppProxy) clientOf(t *testing.T, user string) string {
	t.Helper()
	return p.sessionOf(t, user).Client
}

// sessionOf returns what the proxy shows the admin API of user's
// session, waiting for it.
func (p *ppProxy) sessionOf(t *testing.T, user string) proxy.ConnInfo {
	t.Helper()
	var got proxy.ConnInfo
	proxytest.WaitFor(t, "the session of "+user, func() bool {
		for _, ci := range p.Server.Conns() {
			if ci.User == user {
				got = ci
				return true
			}
		}
		return false
	})
	return got
}

// header is a PROXY header of version v for a TCP connection from src to
// dst (host:port each).
func header(t *testing.T, v byte, src, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var listeners = []string{"imap", "imaps"}

// TestProxyProtocolTrusted: a v1 or v2 header from the balancer makes the
// address it carries the client's, on both listeners (on imaps the header
// comes before the ClientHello): in the admin API's sessions and on the
// log lines, with the balancer as "via".
func TestProxyProtocolTrusted(t *testing.T) {
	p := startPP(t, limits.Options{})
	for _, listener := range listeners {
		for _, tt := range []struct {
			v        byte
			src, dst string
		}{
			{1, "192.0.2.10:40001", "198.51.100.1:143"},
			{2, "192.0.2.11:40002", "198.51.100.1:993"},
			{1, "[2001:db8::12]:40003", "[2001:db8::1]:143"},
			{2, "[2001:db8::13]:40004", "[2001:db8::1]:993"},
		} {
			t.Run(listener+"/v"+string('0'+tt.v)+"/"+tt.src, func(t *testing.T) {
				c := p.open(t, balancer, listener, header(t, tt.v, tt.src, tt.dst))
				c.Greeting()
				c.LogIn("l1", "LOGIN alice secret")
				if got := p.sessionOf(t, "alice"); got.Client != tt.src || !strings.HasPrefix(got.Via, balancer+":") {
					t.Errorf("session: got client %s via %q; want %s via %s:port", got.Client, got.Via, tt.src, balancer)
				}
				c.Logout("l2")
				p.gone(t)
				want := "client=" + tt.src + " via=" + balancer + ":"
				proxytest.WaitFor(t, "the log line", func() bool { return strings.Contains(p.logs.String(), want) })
			})
		}
	}
}

// TestProxyProtocolUntrusted: a peer outside trusted_proxies is served
// under its own address when it sends no header, and closed when it
// sends one (after the greeting on the plaintext listener, where the
// client speaks second; before the TLS handshake on imaps).
func TestProxyProtocolUntrusted(t *testing.T) {
	p := startPP(t, limits.Options{})
	for _, listener := range listeners {
		t.Run(listener+"/no header", func(t *testing.T) {
			c := p.open(t, untrusted, listener, nil)
			c.Greeting()
			c.LogIn("l1", "LOGIN alice secret")
			if got := p.sessionOf(t, "alice"); !strings.HasPrefix(got.Client, untrusted+":") || got.Via != "" {
				t.Errorf("session: got client %s via %q; want %s:port, no via", got.Client, got.Via, untrusted)
			}
			c.Logout("l2")
			p.gone(t)
		})
		for _, v := range []byte{1, 2} {
			t.Run(listener+"/v"+string('0'+v), func(t *testing.T) {
				c := proxytest.DialFrom(t, untrusted, p.addr(listener))
				if listener == "imap" {
					c.Greeting()
				}
				c.Send(string(header(t, v, "192.0.2.20:40000", "198.51.100.1:143")))
				c.ExpectClosed()
				proxytest.WaitZero(t, p.Limiter)
			})
		}
	}
	proxytest.WaitFor(t, "the refusals logged", func() bool {
		return strings.Count(p.logs.String(), `err="proxy: PROXY header from an untrusted peer" trusted=false`) == 4
	})
}

// TestProxyProtocolPerIPCap: the per-address cap counts the carried
// address: two connections from the one balancer carrying different
// clients are two addresses; two carrying the same client hit
// max_connections_per_ip = 1.
func TestProxyProtocolPerIPCap(t *testing.T) {
	p := startPP(t, limits.Options{MaxConnectionsPerIP: 1})
	for _, listener := range listeners {
		t.Run(listener, func(t *testing.T) {
			a := p.open(t, balancer, listener, header(t, 2, "192.0.2.30:1000", "198.51.100.1:143"))
			a.Greeting()
			b := p.open(t, balancer, listener, header(t, 1, "192.0.2.31:1000", "198.51.100.1:143"))
			b.Greeting()
			proxytest.WaitCounts(t, p.Limiter, "two addresses", func(n limits.Counts) bool {
				return n.Connections == 2 && n.Addresses == 2 && n.MaxPerAddress == 1
			})
			// The same client through the balancer again: refused. On
			// imaps the refusal is silent (the client waits for a
			// ServerHello), so the handshake fails.
			c := proxytest.DialFrom(t, balancer, p.addr(listener))
			c.Send(string(header(t, 1, "192.0.2.30:1001", "198.51.100.1:143")))
			if listener == "imap" {
				c.Expect(byeMaxPerIP(1))
			}
			c.ExpectClosed()
			a.Logout("a1")
			b.Logout("b1")
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// TestProxyProtocolBadHeaders: a trusted peer that sends no header, a
// malformed or a truncated one, or one for a transport the proxy cannot
// take an address from is closed without a word, on both listeners, and
// holds no slot afterwards.
func TestProxyProtocolBadHeaders(t *testing.T) {
	good := header(t, 2, "192.0.2.40:1000", "198.51.100.1:143")
	udp := proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 41), Port: 53}, &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 53})
	udpBytes, err := udp.Format()
	if err != nil {
		t.Fatal(err)
	}
	sig := string(proxyproto.SIGV2)
	for _, tt := range []struct {
		name     string
		head     string
		closeOut bool // the peer then closes its sending side
	}{
		{"IMAP instead of a header", "a1 CAPABILITY\r\n", false},
		{"TLS instead of a header", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false},
		{"v1 bad address", "PROXY TCP4 192.0.2.300 198.51.100.1 1000 143\r\n", false},
		{"v1 bad port", "PROXY TCP4 192.0.2.42 198.51.100.1 70000 143\r\n", false},
		{"v1 family mismatch", "PROXY TCP6 192.0.2.42 198.51.100.1 1000 143\r\n", false},
		{"v1 LF without CR", "PROXY TCP4 192.0.2.42 198.51.100.1 1000 143\n", false},
		{"v1 without end", "PROXY TCP4 " + strings.Repeat("1", 200), false},
		{"v1 misspelt", "PROXYX TCP4 192.0.2.42 198.51.100.1 1000 143\r\n", false},
		{"v1 truncated", "PROXY TCP4 192.0.2.42 198.51", true},
		{"v2 truncated", string(good[:20]), true},
		{"v2 signature only", sig, true},
		{"v2 bad version", sig + "\x31\x11\x00\x0c" + strings.Repeat("\x00", 12), false},
		{"v2 bad family", sig + "\x21\x41\x00\x0c" + strings.Repeat("\x00", 12), false},
		{"v2 length too short", sig + "\x21\x11\x00\x04\xc0\x00\x02\x2a", false},
		{"v2 UDP", string(udpBytes), false},
	} {
		for _, listener := range listeners {
			t.Run(listener+"/"+tt.name, func(t *testing.T) {
				p := startPP(t, limits.Options{})
				c := proxytest.DialFrom(t, balancer, p.addr(listener))
				c.Send(tt.head)
				if tt.closeOut {
					c.CloseWrite()
				}
				c.ExpectClosed()
				proxytest.WaitFor(t, "the connection gone", func() bool { return len(p.Server.Conns()) == 0 })
				proxytest.WaitZero(t, p.Limiter)
				if !strings.Contains(p.logs.String(), `msg="PROXY header refused"`) || !strings.Contains(p.logs.String(), "trusted=true") {
					t.Errorf("log: got %q; want a PROXY header refused line", p.logs.String())
				}
			})
		}
	}
}

// TestProxyProtocolHealthCheck: a trusted balancer's plain TCP health
// check, which connects and leaves without a byte (with a FIN or a
// reset), is not a refused header: it is a client that closed.
func TestProxyProtocolHealthCheck(t *testing.T) {
	p := startPP(t, limits.Options{})
	for _, listener := range listeners {
		for _, reset := range []bool{false, true} {
			c := proxytest.DialFrom(t, balancer, p.addr(listener))
			if reset {
				c.Reset()
			} else {
				c.CloseWrite()
				c.ExpectClosed()
			}
		}
	}
	p.gone(t)
	if strings.Contains(p.logs.String(), "PROXY header refused") {
		t.Errorf("log: got %q; want no refusal", p.logs.String())
	}
}

// TestProxyProtocolSplit: a header written a byte at a time, v1 or v2,
// is gathered and used, on both listeners.
func TestProxyProtocolSplit(t *testing.T) {
	p := startPP(t, limits.Options{})
	for _, listener := range listeners {
		for _, v := range []byte{1, 2} {
			t.Run(listener+"/v"+string('0'+v), func(t *testing.T) {
				src := "192.0.2.50:" + string('0'+v) + "000"
				c := proxytest.DialFrom(t, balancer, p.addr(listener))
				for _, b := range header(t, v, src, "198.51.100.1:143") {
					c.Send(string([]byte{b}))
				}
				if listener == "imaps" {
					c.UpgradeTLS(p.ca.clientConfig())
				}
				c.Greeting()
				c.LogIn("l1", "LOGIN alice secret")
				if got := p.clientOf(t, "alice"); got != src {
					t.Errorf("client: got %s; want %s", got, src)
				}
				c.Logout("l2")
				p.gone(t)
			})
		}
	}
}

// TestProxyProtocolPipelined: what the client sends in the segment of the
// header is kept: a command on the plaintext listener, the ClientHello on
// imaps (the proxy reads ahead of the header there).
func TestProxyProtocolPipelined(t *testing.T) {
	p := startPP(t, limits.Options{})
	h := header(t, 1, "192.0.2.60:1000", "198.51.100.1:143")
	c := proxytest.DialFrom(t, balancer, p.Addr)
	c.Send(string(h) + "a1 NOOP\r\n")
	c.Greeting()
	c.Expect("a1 OK NOOP completed")
	c.Logout("a2")

	// imaps: the header and the ClientHello in one write.
	nc, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP(balancer)}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(p.TLSAddr)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(proxytest.Timeout))
	tc := tls.Client(&prefixWriter{Conn: nc, prefix: h}, p.ca.clientConfig())
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after a header in the same write: %v", err)
	}
	buf := make([]byte, 512)
	n, err := tc.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "* OK ") {
		t.Fatalf("greeting: got %q, %v; want * OK", buf[:n], err)
	}
	tc.Close()
	proxytest.WaitZero(t, p.Limiter)
}

// prefixWriter writes prefix in front of the first write.
type prefixWriter struct {
	net.Conn
	prefix []byte
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	if w.prefix != nil {
		_, err := w.Conn.Write(append(w.prefix, b...))
		w.prefix = nil
		return len(b), err
	}
	return w.Conn.Write(b)
}

// TestProxyProtocolLocal: a v2 LOCAL header (the balancer's health
// check) and a v1 "PROXY UNKNOWN" keep the balancer's own address.
func TestProxyProtocolLocal(t *testing.T) {
	p := startPP(t, limits.Options{})
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, head string }{
		{"v2 LOCAL", string(local)},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n"},
	} {
		for _, listener := range listeners {
			t.Run(listener+"/"+tt.name, func(t *testing.T) {
				c := p.open(t, balancer, listener, []byte(tt.head))
				c.Greeting()
				c.LogIn("l1", "LOGIN alice secret")
				if got := p.sessionOf(t, "alice"); !strings.HasPrefix(got.Client, balancer+":") || got.Via != "" {
					t.Errorf("session: got client %s via %q; want %s:port, no via", got.Client, got.Via, balancer)
				}
				c.Logout("l2")
				p.gone(t)
			})
		}
	}
}

// TestProxyProtocolStall: a trusted peer that sends nothing, or half a
// header, and stalls is closed at preauth_timeout (on the fake clock),
// without a word; it held no slot, and its registration goes.
func TestProxyProtocolStall(t *testing.T) {
	for _, tt := range []struct{ name, head string }{
		{"nothing", ""},
		{"half a v1 header", "PROXY TCP4 192.0.2.70 "},
		{"half a v2 header", string(proxyproto.SIGV2[:8])},
	} {
		for _, listener := range listeners {
			t.Run(listener+"/"+tt.name, func(t *testing.T) {
				p := startPP(t, limits.Options{})
				c := proxytest.DialFrom(t, balancer, p.addr(listener))
				if tt.head != "" {
					c.Send(tt.head)
				}
				proxytest.WaitFor(t, "the connection registered", func() bool { return len(p.Server.Conns()) == 1 })
				if n := p.Limiter.Counts().Connections; n != 0 {
					t.Errorf("connections counted while the header is awaited: got %d; want 0", n)
				}
				// The wait is the connection's own: others are served.
				other := p.open(t, balancer, listener, header(t, 1, "192.0.2.71:1", "198.51.100.1:143"))
				other.Greeting()
				other.Logout("o1")
				p.clock.Expire(t, limits.DefaultPreauthTimeout, 1)
				c.ExpectClosed()
				proxytest.WaitFor(t, "the connection gone", func() bool { return len(p.Server.Conns()) == 0 })
				proxytest.WaitZero(t, p.Limiter)
				if !strings.Contains(p.logs.String(), `msg="no PROXY header within preauth_timeout"`) {
					t.Errorf("log: got %q; want the preauth timeout", p.logs.String())
				}
			})
		}
	}
}

// TestProxyProtocolOff: without proxy_protocol a header is not read: on
// the plaintext listener "PROXY TCP4 ..." is a command like any other
// (tag PROXY, command TCP4), and every peer is its own address.
func TestProxyProtocolOff(t *testing.T) {
	p := proxytest.Start(t, proxytest.Config{Upstream: proxytest.Imapd(t, aliceUser)})
	c := proxytest.DialFrom(t, balancer, p.Addr)
	c.Greeting()
	c.Send("PROXY TCP4 192.0.2.80 198.51.100.1 1000 143\r\n")
	c.Expect("PROXY BAD Unknown command")
	c.LogIn("l1", "LOGIN alice secret")
	if i := slices.IndexFunc(p.Server.Conns(), func(ci proxy.ConnInfo) bool { return ci.User == "alice" }); i < 0 || !strings.HasPrefix(p.Server.Conns()[i].Client, balancer+":") {
		t.Errorf("sessions: got %+v; want alice from %s", p.Server.Conns(), balancer)
	}
	c.Logout("l2")
}

// TestProxyProtocolTelemetry: the connection span carries the client's
// address from the header as client.*, the address it connected to as
// server.*, and the balancer as network.peer.*; a connection closed over
// its header counts as refused for proxy_header and closed as "bad proxy
// header".
func TestProxyProtocolTelemetry(t *testing.T) {
	up := proxytest.Imapd(t, aliceUser)
	tp := startTracedProxy(t, up, proxy.Options{
		ProxyProtocol:      true,
		TrustedProxies:     []netip.Prefix{netip.MustParsePrefix(balancer + "/32")},
		AllowPlaintextAuth: true,
	}, limits.Options{})
	c := proxytest.DialFrom(t, balancer, tp.Addr)
	c.Send(string(header(t, 2, "192.0.2.90:4090", "198.51.100.9:143")))
	c.Greeting()
	c.LogIn("l1", "LOGIN alice secret")
	c.Logout("l2")
	root := tp.connTrees(t, 1)[0]
	wantAttr(t, root, "client.address", "192.0.2.90")
	wantAttr(t, root, "client.port", 4090)
	wantAttr(t, root, "server.address", "198.51.100.9")
	wantAttr(t, root, "server.port", 143)
	wantAttr(t, root, "network.peer.address", balancer)
	wantAttr(t, root, "imapguard.proxy_protocol.version", 2)

	bad := proxytest.DialFrom(t, balancer, tp.Addr)
	bad.Send("PROXY TCP4 nonsense\r\n")
	bad.ExpectClosed()
	untrustedPeer := proxytest.DialFrom(t, untrusted, tp.Addr)
	untrustedPeer.Greeting()
	untrustedPeer.Send(string(header(t, 1, "192.0.2.91:1", "198.51.100.9:143")))
	untrustedPeer.ExpectClosed()
	roots := tp.connTrees(t, 3)
	for _, r := range roots[1:] {
		wantAttr(t, r, "imapguard.outcome", "bad proxy header")
		wantAttr(t, r, "error.type", "proxy_header")
		if _, ok := attrOf(r.s, "network.peer.address"); ok {
			t.Errorf("a refused header's span has network.peer.address: %v", r.s.Attributes)
		}
	}
	proxytest.WaitZero(t, tp.Limiter)
	m := collectUntil(t, tp.reader, "no connection open", func(m metrics) bool {
		return m.gauge("imapguard.connections.open") == 0
	})
	m.want(t, []metricWant{
		{"sum", "imapguard.connections.refused", []string{"reason=proxy_header"}, 2},
		{"sum", "imapguard.connections.closed", []string{"outcome=bad_proxy_header"}, 2},
		{"sum", "imapguard.connections.accepted", nil, 2},
	})
}

// TestCLIReloadTrustedProxies: SIGHUP applies a new trusted_proxies to
// new connections without a restart; proxy_protocol itself needs one.
func TestCLIReloadTrustedProxies(t *testing.T) {
	upAddr := startIMAPD(t)
	cfg := func(on bool, trusted string) string {
		return "[listen]\nimap = \"127.0.0.1:0\"\nproxy_protocol = " + strconv.FormatBool(on) +
			"\ntrusted_proxies = [\"" + trusted + "\"]\n[upstream]\naddress = \"" + upAddr + "\"\n"
	}
	path := writeFile(t, "imapguard.toml", cfg(true, balancer))
	p := startImapguard(t, path)
	addr := p.waitLog(regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`))[1]

	// loginVia logs in from src with a header carrying client, or fails
	// to (the connection is closed) when served is false.
	loginVia := func(src, client string, served bool) {
		t.Helper()
		c := proxytest.DialFrom(t, src, addr)
		h := string(header(t, 1, client, "198.51.100.1:143"))
		if !served {
			// Untrusted: greeted as a direct client, closed at the header.
			c.Greeting()
			c.Send(h)
			c.ExpectClosed()
			return
		}
		c.Send(h)
		c.Greeting()
		c.LogIn("l1", "LOGIN demo demo")
		c.Logout("l2")
		p.waitLog(regexp.MustCompile(`msg="logged in" conn=\d+ client=` + regexp.QuoteMeta(client) + ` via=` + regexp.QuoteMeta(src) + `:`))
	}
	loginVia(balancer, "192.0.2.100:1", true)
	loginVia(untrusted, "192.0.2.101:1", false)

	reload := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(regexp.MustCompile(`configuration reloaded`))
	}
	reload(cfg(true, untrusted))
	if strings.Contains(p.output(), "take effect only after a restart") {
		t.Errorf("a new trusted_proxies alone asked for a restart:\n%s", p.output())
	}
	loginVia(untrusted, "192.0.2.102:1", true)
	loginVia(balancer, "192.0.2.103:1", false)

	// proxy_protocol off needs a restart: the old setting stays, and so
	// does the list in force.
	reload(cfg(false, balancer))
	if !strings.Contains(p.output(), "take effect only after a restart") {
		t.Errorf("turning proxy_protocol off did not ask for a restart:\n%s", p.output())
	}
	loginVia(untrusted, "192.0.2.104:1", true)
}
