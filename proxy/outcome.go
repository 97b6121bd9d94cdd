package proxy

import "strings"

// outcome is how a connection ended. Its String is the value telemetry
// records: the connection span's imapguard.outcome, the summary log
// line's outcome and, with spaces as underscores, the outcome label of
// imapguard.connections.closed.
type outcome uint8

const (
	outcomeClosed          outcome = iota // nothing more specific is known
	outcomeLogout                         // the client sent LOGOUT
	outcomeClientClosed                   // the client closed its end
	outcomeClientError                    // reading from the client failed (reset, ...)
	outcomeUpstreamClosed                 // the upstream closed its end
	outcomeConnectionError                // a relayed connection failed
	outcomeRefused                        // a connection cap refused it
	outcomePreauthTimeout                 // not authenticated within preauth_timeout
	outcomeIdleTimeout                    // a session idle for idle_timeout
	outcomeCommandTooBig                  // an oversize command that could not be refused alone
	outcomeTLSHandshake                   // the client's TLS handshake failed
	outcomeBadCommands                    // max_bad_commands invalid commands
	outcomeAuthFailures                   // max_auth_failures failed logins
	outcomeKicked                         // an administrator's kick
	outcomeShutdown                       // the proxy shut down
)

// outcomeInfo is what telemetry says of an outcome.
type outcomeInfo struct {
	name string
	// errorType is the span's error.type and the refusal reason of an
	// outcome the proxy imposed; with it the span's status is Error.
	errorType string
	// failed sets the span's status to Error without an error.type.
	failed bool
	// endedBy says who ended a session: client, upstream, proxy or
	// unknown.
	endedBy string
}

var outcomes = [...]outcomeInfo{
	outcomeClosed:          {name: "closed", endedBy: "proxy"},
	outcomeLogout:          {name: "logout", endedBy: "client"},
	outcomeClientClosed:    {name: "client closed", endedBy: "client"},
	outcomeClientError:     {name: "client error", failed: true, endedBy: "client"},
	outcomeUpstreamClosed:  {name: "upstream closed", endedBy: "upstream"},
	outcomeConnectionError: {name: "connection error", failed: true, endedBy: "unknown"},
	outcomeRefused:         {name: "refused", endedBy: "proxy"},
	outcomePreauthTimeout:  {name: "preauth timeout", errorType: reasonPreauthTimeout, endedBy: "proxy"},
	outcomeIdleTimeout:     {name: "idle timeout", errorType: reasonIdleTimeout, endedBy: "proxy"},
	outcomeCommandTooBig:   {name: "command too big", errorType: reasonCommandTooBig, endedBy: "proxy"},
	outcomeTLSHandshake:    {name: "tls handshake failed", errorType: reasonTLSHandshake, endedBy: "proxy"},
	outcomeBadCommands:     {name: "too many invalid commands", errorType: reasonBadCommands, endedBy: "proxy"},
	outcomeAuthFailures:    {name: "too many authentication failures", errorType: reasonAuthFailures, endedBy: "proxy"},
	outcomeKicked:          {name: "kicked", endedBy: "proxy"},
	outcomeShutdown:        {name: "proxy shutdown", endedBy: "proxy"},
}

func (o outcome) String() string { return outcomes[o].name }

// label is the outcome as a metric label value.
func (o outcome) label() string { return strings.ReplaceAll(o.String(), " ", "_") }

func (o outcome) info() outcomeInfo { return outcomes[o] }

// Refusal reasons: the "reason" of imapguard.connections.refused, and
// imapguard.refused.reason on the connection span. The connection caps'
// reasons are their configuration keys (limits.Error.Limit).
const (
	reasonPreauthTimeout      = "preauth_timeout"
	reasonIdleTimeout         = "idle_timeout"
	reasonTLSHandshake        = "tls_handshake"
	reasonCommandTooBig       = "command_too_big"
	reasonUpstreamUnavailable = "upstream_unavailable"
	reasonBadCommands         = "too_many_bad_commands"
	reasonAuthFailures        = "too_many_auth_failures"
)
