package proxy

import (
	"strings"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// handleLogin runs LOGIN (RFC 9051 §6.2.3).
func (c *conn) handleLogin(cmd *imapwire.Command) bool {
	if !c.authAllowed() {
		return c.privacyRequired(cmd)
	}
	if len(cmd.Args) != 2 || !cmd.Args[0].IsAstring() || !cmd.Args[1].IsAstring() {
		c.trace.startAuth(c.ctx, "LOGIN", "LOGIN", "").end(authMalformed, "")
		return c.bad(bad(cmd.Tag, "LOGIN takes a user name and a password"))
	}
	return c.login(cmd.Tag, "LOGIN", "LOGIN", cmd.Args[0].Val, cmd.Args[1].Val)
}

// privacyRequired refuses LOGIN or AUTHENTICATE on a connection that must
// switch to TLS first (LOGINDISABLED is advertised).
func (c *conn) privacyRequired(cmd *imapwire.Command) bool {
	c.trace.startAuth(c.ctx, cmd.Name, attemptedMechanism(cmd), "").end(authPrivacyRequired, "")
	return c.w.respond(privacyRequired(cmd.Tag)) == nil
}

// authFailed answers a failed authentication and closes the connection
// after max_auth_failures of them.
func (c *conn) authFailed(r response) bool {
	return c.countedFailure(r, &c.authFailures, c.opts.MaxAuthFailures, tooManyAuthFailures)
}

// attemptedMechanism names the mechanism of a LOGIN or AUTHENTICATE
// command for telemetry, from a fixed set (a metric label must not take
// whatever a client sends).
func attemptedMechanism(cmd *imapwire.Command) string {
	if cmd.Name == "LOGIN" {
		return "LOGIN"
	}
	if len(cmd.Args) > 0 {
		switch m := strings.ToUpper(cmd.Args[0].Val); m {
		case "PLAIN", "LOGIN", mechOAuthBearer, mechXOAuth2:
			return m
		}
	}
	return "other"
}
