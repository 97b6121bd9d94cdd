package proxy

import (
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// The proxy's own lines, as clients see them.
func TestResponses(t *testing.T) {
	lim := &limits.Error{Limit: "max_connections_per_user", Value: 16, Count: 16}
	for _, tt := range []struct {
		r    response
		want string
	}{
		{greeting("IMAP4rev1 ID"), "* OK [CAPABILITY IMAP4rev1 ID] imapguard ready"},
		{capabilityData("IMAP4rev1 ID"), "* CAPABILITY IMAP4rev1 ID"},
		{completed("a1", "NOOP"), "a1 OK NOOP completed"},
		{logoutBye(), "* BYE Logging out"},
		{idData(), `* ID ("name" "imapguard")`},
		{beginTLS("s"), "s OK Begin TLS negotiation now"},
		{continueReq(""), "+ "},
		{continueReq("VXNlcm5hbWU6"), "+ VXNlcm5hbWU6"},
		{literalGoAhead(), "+ Ready for literal data"},
		{bad("", "Invalid tag"), "* BAD Invalid tag"},
		{bad("a", "Unknown command"), "a BAD Unknown command"},
		{no("a", "Unsupported authentication mechanism"), "a NO Unsupported authentication mechanism"},
		{privacyRequired("a"), "a NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port before logging in"},
		{authenticationFailed("a"), "a NO [AUTHENTICATIONFAILED] Authentication failed"},
		{authorizationFailed("a"), "a NO [AUTHORIZATIONFAILED] Authorization as another user is not permitted"},
		{upstreamRefused("a", "EXPIRED", "Password expired"), "a NO [EXPIRED] Password expired"},
		{upstreamUnavailable("a"), "a NO [UNAVAILABLE] Mail server unavailable, try again later"},
		{loggedIn("a", "IMAP4rev1 IDLE"), "a OK [CAPABILITY IMAP4rev1 IDLE] Logged in"},
		{nulCredentials("a"), "a BAD NUL is not allowed in a user name or password"},
		{framerRefusal(imapwire.Refusal{Kind: imapwire.RefuseExpectedDone, Tag: "i"}, 1024), "* BAD Expected DONE"},
		{invalidCommandBye(), "* BYE [CLIENTBUG] Invalid line in a command already partly relayed"},
		{connLimitBye(&limits.Error{Limit: "max_connections", Value: 5}), "* BYE [UNAVAILABLE] Too many connections (max_connections=5)"},
		{evictedBye(5), "* BYE [UNAVAILABLE] Too many connections; closing the oldest unauthenticated one (max_connections=5)"},
		{userLimitNo("a", lim), "a NO [LIMIT] Too many connections for this user (max_connections_per_user=16)"},
		{connLimitBye(&limits.Error{Limit: "max_connection_rate_per_ip", Value: 1, Rate: 0.5}), "* BYE [UNAVAILABLE] Too many new connections from your address (max_connection_rate_per_ip=0.5)"},
		{userLimitNo("a", &limits.Error{Limit: "max_connections_per_user_ip", Value: 4}), "a NO [LIMIT] Too many connections for this user from your address (max_connections_per_user_ip=4)"},
		{authBlockedNo("a", &limits.Error{Limit: "max_auth_failures_per_ip", Value: 10}),
			"a NO [UNAVAILABLE] Too many failed logins, try again later (max_auth_failures_per_ip=10)"},
		{authBlockedNo("a", &limits.Error{Limit: "max_auth_failures_per_user", Value: 30}),
			"a NO [UNAVAILABLE] Too many failed logins, try again later (max_auth_failures_per_user=30)"},
		{tooBig("a", 1024), "a BAD [TOOBIG] Command too long (max_command_size=1024)"},
		{tooBig("", 1024), "* BAD [TOOBIG] Command too long (max_command_size=1024)"},
		{tooBigBye(1024), "* BYE [TOOBIG] Command too long (max_command_size=1024)"},
		{preauthTimeoutBye(time.Minute), "* BYE Autologout; not authenticated in time (preauth_timeout=1m)"},
		{idleTimeoutBye(30 * time.Minute), "* BYE Autologout; idle for too long (idle_timeout=30m)"},
		{tooManyBadCommands(3), "* BYE Too many invalid commands (max_bad_commands=3)"},
		{tooManyAuthFailures(3), "* BYE Too many authentication failures (max_auth_failures=3)"},
		{unavailableBye("Server shutting down"), "* BYE [UNAVAILABLE] Server shutting down"},
		{framerRefusal(imapwire.Refusal{Kind: imapwire.RefuseInvalidLiteral, Tag: "x"}, 1024), "x BAD Invalid literal"},
		{framerRefusal(imapwire.Refusal{Kind: imapwire.RefuseCompress, Tag: "x"}, 1024), "x NO [CANNOT] COMPRESS is not available through this proxy"},
		{framerRefusal(imapwire.Refusal{Kind: imapwire.RefuseStartTLS}, 1024), "* BAD STARTTLS is not valid in the authenticated state"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got %q; want %q", got, tt.want)
		}
	}
}

// Every outcome has a telemetry name, and the refusals that end a
// connection say how.
func TestOutcomes(t *testing.T) {
	for o := outcomeClosed; int(o) < len(outcomes); o++ {
		if o.String() == "" || o.info().endedBy == "" {
			t.Errorf("outcome %d has no name or endedBy", o)
		}
	}
	for _, r := range []response{tooBigBye(1), preauthTimeoutBye(time.Second), idleTimeoutBye(time.Second),
		tooManyBadCommands(1), tooManyAuthFailures(1), tlsHandshakeFailed(), logoutBye()} {
		if !r.closing || r.outcome == outcomeClosed {
			t.Errorf("%q: closing %v outcome %v", r, r.closing, r.outcome)
		}
		if r.refusal != "" && r.outcome.info().errorType != r.refusal {
			t.Errorf("%q: refusal %q, but the outcome's error.type is %q", r, r.refusal, r.outcome.info().errorType)
		}
	}
}
