package proxy

import "github.com/imapguard/imapguard/proxy/imapwire"

// capabilities is the pre-authentication list for this connection's
// state (RFC 9051 §6.1.1), with the upstream's OAuth mechanisms. LITERAL+ (RFC 7888) lets clients send
// credentials as non-synchronizing literals; the size cap applies all the
// same. After login the client gets the upstream's own list (clientCaps).
// It has STARTTLS while TLS is possible and not active, and LOGINDISABLED
// instead of AUTH= mechanisms while login must wait for TLS (RFC 9051
// §6.2.3, §7.2.2).
func (c *conn) capabilities() string {
	caps := "IMAP4rev1 SASL-IR LITERAL+ ID"
	if c.opts.TLSConfig != nil && !c.tlsActive {
		caps += " STARTTLS"
	}
	if c.authAllowed() {
		// OAUTHBEARER and XOAUTH2 only pass through: offered when the
		// upstream offers them (oauth.go).
		return caps + " AUTH=PLAIN AUTH=LOGIN" + c.oauthCaps()
	}
	return caps + " LOGINDISABLED"
}

// authAllowed reports whether credentials may be sent on this connection.
func (c *conn) authAllowed() bool {
	return c.tlsActive || c.opts.TLSConfig == nil || c.opts.AllowPlaintextAuth
}

// handleCapability runs CAPABILITY (RFC 9051 §6.1.1).
func (c *conn) handleCapability(cmd *imapwire.Command) bool {
	if len(cmd.Args) != 0 {
		return c.bad(bad(cmd.Tag, "CAPABILITY takes no arguments"))
	}
	return c.w.respond(capabilityData(c.capabilities()), completed(cmd.Tag, "CAPABILITY")) == nil
}
