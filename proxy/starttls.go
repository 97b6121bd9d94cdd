package proxy

import (
	"crypto/tls"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// handleStartTLS runs STARTTLS (RFC 9051 §6.2.1).
func (c *conn) handleStartTLS(cmd *imapwire.Command) bool {
	switch {
	case c.opts.TLSConfig == nil:
		return c.bad(bad(cmd.Tag, "STARTTLS is not available"))
	case c.tlsActive:
		return c.bad(bad(cmd.Tag, "TLS is already active"))
	case len(cmd.Args) != 0:
		return c.bad(bad(cmd.Tag, "STARTTLS takes no arguments"))
	}
	if c.w.respond(beginTLS(cmd.Tag)) != nil {
		return false
	}
	// CVE-2011-0411: whatever the client pipelined behind STARTTLS in
	// plaintext may have been injected by an attacker; it is thrown away,
	// never executed after the handshake.
	if n := c.r.Discard(); n > 0 {
		c.log.Info("discarded plaintext pipelined after STARTTLS", "bytes", n)
	}
	return c.startTLS() == nil
}

// startTLS makes the client connection TLS, with a handshake bounded by
// preauth_timeout (see preauthExpire).
func (c *conn) startTLS() error {
	tc := tls.Server(c.nc, c.opts.TLSConfig)
	c.w.mute()
	span := c.trace.startHandshake(c.implicitTLS)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		c.trace.endHandshake(span, nil, err)
		if c.ctx.Err() != nil {
			return err // kicked or shut down: the outcome says so
		}
		c.w.respond(tlsHandshakeFailed())
		c.log.Info("client TLS handshake failed", "err", err)
		return err
	}
	st := tc.ConnectionState()
	c.trace.endHandshake(span, &st, nil)
	c.mu.Lock()
	c.nc = tc
	c.tlsActive = true
	c.mu.Unlock()
	c.w.setConn(tc)
	c.setReader(tc)
	c.log.Debug("client TLS established", "version", tls.VersionName(st.Version), "alpn", st.NegotiatedProtocol)
	return nil
}
