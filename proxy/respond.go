package proxy

import (
	"strconv"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// This file is the proxy's response vocabulary. Every line the proxy
// itself sends to a client is a response made by one of the functions
// below, and clientWriter.respond is the one function that writes it: it
// formats the line, records the outcome of a line that ends the
// connection and counts refusals for telemetry. The text of each limit's
// refusal is written once, here (the connection caps' texts are
// limits.Error's).

// respKind is the kind of a response line (RFC 9051 §7).
type respKind uint8

const (
	respOK       respKind = iota
	respNO                // a command failed
	respBAD               // a command was invalid or refused as such
	respBYE               // the connection is closing
	respData              // untagged data: "* CAPABILITY ...", "* ID ..."
	respContinue          // a continuation request: "+ ..."
)

var respWords = [...]string{respOK: "OK", respNO: "NO", respBAD: "BAD", respBYE: "BYE"}

// response is one line the proxy sends: "tag KIND [CODE] text", untagged
// ("* ...") when tag is empty.
type response struct {
	tag  string
	kind respKind
	code string // response code without the brackets, if any
	text string

	// closing makes it the connection's last line: the writer closes the
	// connection once it is out.
	closing bool
	// silent: nothing is written (the client cannot take a line now: an
	// imaps client before its handshake, an upstream stalled inside a
	// response), but the rest applies.
	silent bool
	// outcome is how a closing response ends the connection.
	outcome outcome
	// refusal, when set, counts the response in
	// imapguard.connections.refused with this reason.
	refusal string
}

// appendTo appends the line, CRLF included.
func (r response) appendTo(b []byte) []byte {
	switch {
	case r.kind == respContinue:
		return append(append(append(b, "+ "...), r.text...), '\r', '\n')
	case r.tag == "":
		b = append(b, '*')
	default:
		b = append(b, r.tag...)
	}
	if r.kind != respData {
		b = append(append(b, ' '), respWords[r.kind]...)
	}
	if r.code != "" {
		b = append(append(append(b, " ["...), r.code...), ']')
	}
	if r.text != "" {
		b = append(append(b, ' '), r.text...)
	}
	return append(b, '\r', '\n')
}

// size is the length of the line with its CRLF (at most: the words
// are counted at their longest).
func (r response) size() int {
	return len(r.tag) + len(r.code) + len(r.text) + 24
}

// String is the line without CRLF (tests and logs).
func (r response) String() string {
	b := r.appendTo(nil)
	return string(b[:len(b)-2])
}

// Before authentication.

func greeting(caps string) response {
	return response{kind: respOK, code: "CAPABILITY " + caps, text: "imapguard ready"}
}

func capabilityData(caps string) response {
	return response{kind: respData, text: "CAPABILITY " + caps}
}

// completed is "tag OK NAME completed".
func completed(tag, name string) response {
	return response{tag: tag, kind: respOK, text: name + " completed"}
}

func logoutBye() response {
	return response{kind: respBYE, text: "Logging out", closing: true, outcome: outcomeLogout}
}

func idData() response { return response{kind: respData, text: `ID ("name" "imapguard")`} }

func beginTLS(tag string) response {
	return response{tag: tag, kind: respOK, text: "Begin TLS negotiation now"}
}

// continueReq is "+ text": a synchronizing literal's go-ahead or a SASL
// challenge.
func continueReq(text string) response { return response{kind: respContinue, text: text} }

func literalGoAhead() response { return continueReq("Ready for literal data") }

// bad is a tagged BAD, or untagged when the tag could not be read.
func bad(tag, text string) response { return response{tag: tag, kind: respBAD, text: text} }

// no is a tagged NO without a code.
func no(tag, text string) response { return response{tag: tag, kind: respNO, text: text} }

// RFC 9051 §6.2.3 (LOGINDISABLED); RFC 5530 PRIVACYREQUIRED.
func privacyRequired(tag string) response {
	return response{tag: tag, kind: respNO, code: "PRIVACYREQUIRED", text: "Use STARTTLS or the TLS port before logging in"}
}

func authenticationFailed(tag string) response {
	return response{tag: tag, kind: respNO, code: "AUTHENTICATIONFAILED", text: "Authentication failed"}
}

// RFC 4616 §2: acting as another user is an authorization request this
// proxy does not grant.
func authorizationFailed(tag string) response {
	return response{tag: tag, kind: respNO, code: "AUTHORIZATIONFAILED", text: "Authorization as another user is not permitted"}
}

// upstreamRefused passes on the upstream's refusal of a login with one
// of the codes in passedCodes.
func upstreamRefused(tag, code, text string) response {
	return response{tag: tag, kind: respNO, code: code, text: text}
}

func upstreamUnavailable(tag string) response {
	return response{tag: tag, kind: respNO, code: "UNAVAILABLE", text: "Mail server unavailable, try again later",
		refusal: reasonUpstreamUnavailable}
}

// clusterUnavailable refuses a login whose session the fleet-wide store
// ([cluster] store = "redis") could not count, with redis_failure =
// "deny" (limits.ErrUnavailable).
func clusterUnavailable(tag string) response {
	return response{tag: tag, kind: respNO, code: "UNAVAILABLE", text: "Service temporarily unavailable, try again later",
		refusal: reasonClusterUnavailable}
}

func nulCredentials(tag string) response {
	return bad(tag, "NUL is not allowed in a user name or password")
}

func loggedIn(tag, caps string) response {
	return response{tag: tag, kind: respOK, code: "CAPABILITY " + caps, text: "Logged in"}
}

// The limits.

// connLimitBye refuses a connection over max_connections,
// max_connections_per_ip or max_connection_rate_per_ip.
func connLimitBye(e *limits.Error) response {
	return response{kind: respBYE, code: "UNAVAILABLE", text: e.Error(), closing: true,
		outcome: outcomeRefused, refusal: e.Limit}
}

// evictedBye closes the oldest connection that has not logged in, to make
// room for a new one under max_connections.
func evictedBye(max int) response {
	return response{kind: respBYE, code: "UNAVAILABLE",
		text:    "Too many connections; closing the oldest unauthenticated one (max_connections=" + strconv.Itoa(max) + ")",
		closing: true, outcome: outcomeEvicted, refusal: reasonEvicted}
}

// userLimitNo refuses a login over max_connections_per_user or
// max_connections_per_user_ip.
func userLimitNo(tag string, e *limits.Error) response {
	return response{tag: tag, kind: respNO, code: "LIMIT", text: e.Error(), refusal: e.Limit}
}

// authBlockedNo refuses a login, without asking the upstream, from an
// address or for a user that the brute-force defence blocks
// (max_auth_failures_per_ip, max_auth_failures_per_user). UNAVAILABLE
// (RFC 5530: try again later), so that clients do not take it for a wrong
// password and ask the user for a new one.
func authBlockedNo(tag string, e *limits.Error) response {
	return response{tag: tag, kind: respNO, code: "UNAVAILABLE", text: e.Error(), refusal: e.Limit}
}

func tooBigText(max int) string {
	return "Command too long (max_command_size=" + strconv.Itoa(max) + ")"
}

// tooBig refuses one command over max_command_size; the connection goes
// on.
func tooBig(tag string, max int) response {
	return response{tag: tag, kind: respBAD, code: "TOOBIG", text: tooBigText(max), refusal: reasonCommandTooBig}
}

// tooBigBye ends a connection whose oversize command could not be
// skipped, or was already partly relayed.
func tooBigBye(max int) response {
	return response{kind: respBYE, code: "TOOBIG", text: tooBigText(max), closing: true,
		outcome: outcomeCommandTooBig, refusal: reasonCommandTooBig}
}

// invalidCommandBye ends a session whose command, already partly
// relayed, goes on with a line the proxy must refuse (a literal it
// cannot follow, a CR inside the line, APPEND arguments it cannot
// check).
func invalidCommandBye() response {
	return response{kind: respBYE, code: "CLIENTBUG", text: "Invalid line in a command already partly relayed", closing: true,
		outcome: outcomeInvalidCommand, refusal: reasonInvalidCommand}
}

func preauthTimeoutBye(d time.Duration) response {
	return response{kind: respBYE, text: "Autologout; not authenticated in time (preauth_timeout=" + limits.FormatDuration(d) + ")",
		closing: true, outcome: outcomePreauthTimeout, refusal: reasonPreauthTimeout}
}

// idleTimeoutBye ends a session idle for idle_timeout. Because any
// traffic restarts the wait, an IDLE command (RFC 2177) is never cut
// before idle_timeout, which is at least 30 minutes by default as RFC
// 9051 §5.4 asks.
func idleTimeoutBye(d time.Duration) response {
	return response{kind: respBYE, text: "Autologout; idle for too long (idle_timeout=" + limits.FormatDuration(d) + ")",
		closing: true, outcome: outcomeIdleTimeout, refusal: reasonIdleTimeout}
}

// tooManyBadCommands closes a connection after max_bad_commands (ALPACA:
// a non-IMAP client sent here by an attacker is cut off quickly).
func tooManyBadCommands(n int) response {
	return response{kind: respBYE, text: "Too many invalid commands (max_bad_commands=" + strconv.Itoa(n) + ")",
		closing: true, outcome: outcomeBadCommands, refusal: reasonBadCommands}
}

func tooManyAuthFailures(n int) response {
	return response{kind: respBYE, text: "Too many authentication failures (max_auth_failures=" + strconv.Itoa(n) + ")",
		closing: true, outcome: outcomeAuthFailures, refusal: reasonAuthFailures}
}

// tlsHandshakeFailed ends a connection whose TLS handshake failed: no
// line can reach the client.
func tlsHandshakeFailed() response {
	return response{silent: true, closing: true, outcome: outcomeTLSHandshake, refusal: reasonTLSHandshake}
}

// unavailableBye ends a connection for the proxy's own reasons (a kick,
// a shutdown), with the text the caller gives; the outcome is recorded by
// the caller, before it waits for a response boundary.
func unavailableBye(text string) response {
	return response{kind: respBYE, code: "UNAVAILABLE", text: text, closing: true}
}

// After authentication: the proxy's answers to the commands the framer
// refuses.

func framerRefusal(r imapwire.Refusal, max int) response {
	switch r.Kind {
	case imapwire.RefuseTooBig:
		return tooBig(r.Tag, max)
	case imapwire.RefuseInvalidLiteral:
		return bad(r.Tag, "Invalid literal")
	case imapwire.RefuseCompress:
		// RFC 4978 would turn the rest of the stream into deflate data;
		// the capability is hidden too (clientCaps, FilterCaps).
		return response{tag: r.Tag, kind: respNO, code: "CANNOT", text: "COMPRESS is not available through this proxy"}
	case imapwire.RefuseStartTLS:
		// RFC 9051 §6.2.1: only valid before authentication.
		return bad(r.Tag, "STARTTLS is not valid in the authenticated state")
	case imapwire.RefuseExpectedDone:
		// RFC 2177: during IDLE the client sends DONE and nothing else.
		return bad("", "Expected DONE")
	case imapwire.RefuseBareCR:
		return bad(r.Tag, "CR without LF in a command")
	case imapwire.RefuseTag:
		// The proxy waits for the upstream's answer to a literal or IDLE
		// by its tag; Dovecot answers a tag with "]" untagged.
		return bad(r.Tag, "Invalid tag for a literal or IDLE")
	case imapwire.RefuseAppendArgs:
		return bad(r.Tag, "Invalid APPEND arguments")
	case imapwire.RefuseOpenQuote:
		return bad(r.Tag, "Unterminated quoted string")
	case imapwire.RefuseAppendUTF8:
		return response{tag: r.Tag, kind: respNO, code: "CANNOT", text: "APPEND UTF8 is not available through this proxy"}
	}
	return bad(r.Tag, "Command refused")
}
