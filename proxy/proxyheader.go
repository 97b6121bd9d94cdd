package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"

	"github.com/pires/go-proxyproto"
)

// This file is the PROXY protocol in (HAProxy's "The PROXY protocol",
// versions 1 and 2; issue 11): a load balancer in front of imapguard
// tells it the client's address in a header before the client's first
// byte. The header is parsed by github.com/pires/go-proxyproto; this file
// decides whom to believe and what the connection's addresses become.
//
// With Options.ProxyProtocol:
//   - a peer in Options.TrustedProxies must send a header, before
//     anything else and within preauth_timeout; its source address
//     becomes the client's address for everything (the caps, the log
//     lines, the spans, the admin API), its destination the local
//     ("connected") address. A LOCAL header (v2: the balancer's own
//     health check) or one without addresses (v1 "PROXY UNKNOWN") keeps
//     the peer's addresses. A trusted peer that sends no header, a
//     malformed or truncated one, or one for a transport other than TCP
//     over IPv4 or IPv6 is closed without a word: it is not speaking
//     IMAP yet. (One that leaves without sending a byte, a balancer's TCP
//     health check, is recorded as a client that closed, not a refusal.)
//   - any other peer is served as a direct client under its own address,
//     which nothing it sends can change, as Dovecot's haproxy listeners
//     do; if what it sends first is a PROXY header, it is closed. So a
//     balancer missing from trusted_proxies fails loudly (every
//     connection through it is closed) instead of making all its clients
//     one address, and a monitoring probe or an administrator on the
//     machine still gets in.
//
// Where the header is read: on the connection's own goroutine, before
// admission (the caps count the carried address, so they cannot be
// asked before it is known), under the preauth_timeout timer. While a
// trusted peer's header is awaited the connection is registered (a
// shutdown closes it) but holds no slot under the caps: only trusted
// peers can be in that state, for at most preauth_timeout.

// errUntrustedProxyHeader is a PROXY header from a peer that is not in
// trusted_proxies.
var errUntrustedProxyHeader = errors.New("proxy: PROXY header from an untrusted peer")

// errProxyHeaderFamily is a header for a transport the proxy cannot take
// a client's address from (UDP, Unix sockets).
var errProxyHeaderFamily = errors.New("proxy: PROXY header for a transport other than TCP over IPv4 or IPv6")

// peerGone is a trusted peer that closed or reset the connection before
// sending anything: a balancer's plain TCP health check.
type peerGone struct{ err error }

func (e *peerGone) Error() string {
	return "proxy: the peer left before a PROXY header: " + e.err.Error()
}
func (e *peerGone) Unwrap() error { return e.err }

// maxV1Header is the longest v1 header, CRLF included (the spec's worst
// case, "PROXY UNKNOWN" with two IPv6 addresses and ports).
const maxV1Header = 107

// trustedPeer reports whether the connection's peer may send a PROXY
// header.
func (c *conn) trustedPeer() bool {
	a := clientAddr(c.peer).Unmap()
	for _, p := range c.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// proxyHeader runs the PROXY protocol's part before admission and
// reports whether the connection goes on. For a plaintext listener it
// sets up the command reader (a header's bytes and what follows are read
// through it); on an imaps listener it leaves c.nc ready for the TLS
// handshake.
func (c *conn) proxyHeader() bool {
	if !c.implicitTLS {
		c.setReader(c.nc)
	}
	if !c.opts.ProxyProtocol {
		return true
	}
	if !c.trustedPeer() {
		// Served as a direct client; checkUntrusted looks at its first
		// bytes once it speaks (before the TLS handshake on imaps, after
		// the greeting on a plaintext listener, where the client waits
		// for the server).
		c.untrustedPeer = true
		return true
	}
	br := c.br
	if c.implicitTLS {
		br = bufio.NewReaderSize(c.nc, 512)
	}
	h, err := readProxyHeader(br)
	if err == nil {
		err = c.useHeader(h)
	}
	if err != nil {
		c.refuseHeader(err)
		return false
	}
	if c.implicitTLS {
		c.keepBuffered(br)
	}
	return true
}

// readProxyHeader reads a v1 or v2 header from br. A v1 header split
// across TCP segments is gathered first (up to its maximum length):
// go-proxyproto refuses a v1 line that is not buffered whole, which a
// slow but honest balancer would trip; the caller's deadline bounds the
// wait. Anything that is not a header is proxyproto.ErrNoProxyProtocol.
func readProxyHeader(br *bufio.Reader) (*proxyproto.Header, error) {
	first, err := br.Peek(1)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		return nil, &peerGone{err}
	}
	if first[0] != proxyproto.SIGV1[0] {
		return proxyproto.Read(br) // v2, whose parser reads what it needs
	}
	line, err := readLine(br, maxV1Header)
	if err != nil {
		return nil, err
	}
	return proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(line), maxV1Header))
}

// readLine reads up to and including the first LF from br, at most limit
// bytes; a longer line is proxyproto.ErrVersion1HeaderTooLong.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	for n := 1; ; {
		b, err := br.Peek(min(max(n, br.Buffered()), limit))
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := append([]byte(nil), b[:i+1]...)
			br.Discard(i + 1)
			return line, nil
		}
		if len(b) >= limit {
			return nil, proxyproto.ErrVersion1HeaderTooLong
		}
		if err != nil {
			return nil, err
		}
		n = len(b) + 1
	}
}

// useHeader makes the addresses h carries the connection's.
func (c *conn) useHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
		// The balancer's own connection (a health check), or a v1
		// "PROXY UNKNOWN": the spec says to use the real addresses.
		c.setAddrs(c.peer, c.local, int(h.Version))
		return nil
	}
	src, ok1 := h.SourceAddr.(*net.TCPAddr)
	dst, ok2 := h.DestinationAddr.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return errProxyHeaderFamily
	}
	c.setAddrs(unmapped(src), unmapped(dst), int(h.Version))
	return nil
}

// unmapped returns a with an IPv4-mapped IPv6 address written as IPv4,
// as the kernel reports an IPv4 peer.
func unmapped(a *net.TCPAddr) *net.TCPAddr {
	ap := a.AddrPort()
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// setAddrs makes remote and local the connection's client and local
// addresses, as a PROXY header of version v carried them (the peer is
// kept as "via" on the log lines and network.peer.* on the span).
func (c *conn) setAddrs(remote, local net.Addr, v int) {
	c.mu.Lock()
	c.remote, c.local = remote, local
	c.mu.Unlock()
	c.log = connLogger(c.srv.log, c.id, remote, c.peer, c.trace.traceID())
	c.trace.proxied(remote, local, c.peer, v)
}

// keepBuffered makes what br read beyond the header the first bytes read
// from c.nc (an imaps client's ClientHello often comes in the same
// segment as the balancer's header).
func (c *conn) keepBuffered(br *bufio.Reader) {
	if br.Buffered() == 0 {
		return
	}
	c.mu.Lock()
	c.nc = &bufferedConn{Conn: c.nc, br: br}
	c.mu.Unlock()
}

// checkUntrusted closes the connection of an untrusted peer whose first
// bytes are a PROXY header's signature, and reports whether it goes on.
// On imaps it runs before the TLS handshake, on a plaintext listener
// after the greeting, before the first command.
func (c *conn) checkUntrusted() bool {
	if !c.untrustedPeer {
		return true
	}
	br := c.br
	if c.implicitTLS {
		br = bufio.NewReaderSize(c.nc, 512)
		defer c.keepBuffered(br)
	}
	if sent, _ := sentSignature(br); sent {
		c.refuseHeader(errUntrustedProxyHeader)
		return false
	}
	// A read error is left for the normal path (the TLS handshake or the
	// command reader), which meets it again and answers it.
	return true
}

// sentSignature reports whether what br starts with is the signature of
// a PROXY header, v1 ("PROXY ") or v2. It reads only while what has come
// is a prefix of one (bounded by preauth_timeout, like any read before
// login): an IMAP tag or a TLS ClientHello differs at its first bytes.
// (A client whose first command has the tag "PROXY" is taken for a
// header; no client tags that way.)
func sentSignature(br *bufio.Reader) (bool, error) {
	for n := 1; ; {
		b, err := br.Peek(max(n, br.Buffered()))
		if err != nil {
			return false, err
		}
		v1, v2 := prefixOf(b, sigV1), prefixOf(b, proxyproto.SIGV2)
		switch {
		case v1 && len(b) >= len(sigV1), v2 && len(b) >= len(proxyproto.SIGV2):
			return true, nil
		case !v1 && !v2:
			return false, nil
		}
		n = len(b) + 1
	}
}

// sigV1 starts a v1 header: proxyproto.SIGV1 and the space after it.
var sigV1 = []byte("PROXY ")

// prefixOf reports whether b and sig agree on their common length.
func prefixOf(b, sig []byte) bool {
	k := min(len(b), len(sig))
	return bytes.Equal(b[:k], sig[:k])
}

// refuseHeader ends a connection over its PROXY header, before any IMAP:
// nothing is written to it (the peer is not speaking IMAP, or is a
// balancer). The deadline set by preauth_timeout is that timeout's
// outcome; anything else is "bad proxy header".
func (c *conn) refuseHeader(err error) {
	c.mu.Lock()
	expired := c.preauthExpired && !c.closing
	c.mu.Unlock()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && expired:
		c.log.Info("no PROXY header within preauth_timeout", "timeout", c.opts.PreauthTimeout)
		c.noteOutcome(outcomePreauthTimeout)
		c.trace.refused(reasonPreauthTimeout, true)
	case c.ctx.Err() != nil || errors.Is(err, net.ErrClosed):
		// Kicked or shut down: the outcome says so.
	case errors.As(err, new(*peerGone)):
		// Not a refusal: a balancer's TCP health check connects and
		// leaves (often with a reset), every few seconds.
		c.log.Debug("closed before a PROXY header", "err", err)
		c.noteOutcome(endOf(err, clientSide, clientSide))
	default:
		c.log.Info("PROXY header refused", "err", err, "trusted", !c.untrustedPeer)
		c.noteOutcome(outcomeProxyHeader)
		c.trace.refused(reasonProxyHeader, true)
	}
}

// bufferedConn is a net.Conn whose first bytes come from br, which read
// them from Conn ahead of a TLS handshake. Only an imaps connection
// whose ClientHello arrived with the PROXY header, or was looked at for
// one, is wrapped; TLS connections are not spliced or parked anyway.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.br != nil && b.br.Buffered() > 0 {
		return b.br.Read(p)
	}
	b.br = nil
	return b.Conn.Read(p)
}
