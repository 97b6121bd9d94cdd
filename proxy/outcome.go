package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// outcome is how a connection ended. Its String is the value telemetry
// records: the connection span's imapguard.outcome, the summary log
// line's outcome and, with spaces as underscores, the outcome label of
// imapguard.connections.closed.
type outcome uint8

const (
	outcomeClosed          outcome = iota // nothing more specific is known
	outcomeLogout                         // the client sent LOGOUT
	outcomeClientClosed                   // the client closed its end (FIN)
	outcomeClientReset                    // the client reset its end (RST)
	outcomeClientError                    // reading from the client failed otherwise
	outcomeUpstreamClosed                 // the upstream closed its end
	outcomeUpstreamReset                  // the upstream reset its end
	outcomeWriteTimeout                   // the client stopped reading what it was sent
	outcomeConnectionError                // a relayed connection failed otherwise
	outcomeRefused                        // a connection cap refused it
	outcomeEvicted                        // closed to make room under max_connections
	outcomePreauthTimeout                 // not authenticated within preauth_timeout
	outcomeIdleTimeout                    // a session idle for idle_timeout
	outcomeCommandTooBig                  // an oversize command that could not be refused alone
	outcomeInvalidCommand                 // an invalid line in a command partly relayed
	outcomeTLSHandshake                   // the client's TLS handshake failed
	outcomeBadCommands                    // max_bad_commands invalid commands
	outcomeAuthFailures                   // max_auth_failures failed logins
	outcomeKicked                         // an administrator's kick
	outcomeShutdown                       // the proxy shut down
	outcomeProxyHeader                    // a PROXY header missing, malformed, or from an untrusted peer
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
	outcomeClientReset:     {name: "client reset", endedBy: "client"},
	outcomeClientError:     {name: "client error", failed: true, endedBy: "client"},
	outcomeUpstreamClosed:  {name: "upstream closed", endedBy: "upstream"},
	outcomeUpstreamReset:   {name: "upstream reset", failed: true, endedBy: "upstream"},
	outcomeWriteTimeout:    {name: "write timeout", errorType: reasonWriteTimeout, endedBy: "proxy"},
	outcomeConnectionError: {name: "connection error", failed: true, endedBy: "unknown"},
	outcomeRefused:         {name: "refused", endedBy: "proxy"},
	outcomeEvicted:         {name: "evicted", errorType: reasonEvicted, endedBy: "proxy"},
	outcomePreauthTimeout:  {name: "preauth timeout", errorType: reasonPreauthTimeout, endedBy: "proxy"},
	outcomeIdleTimeout:     {name: "idle timeout", errorType: reasonIdleTimeout, endedBy: "proxy"},
	outcomeCommandTooBig:   {name: "command too big", errorType: reasonCommandTooBig, endedBy: "proxy"},
	outcomeInvalidCommand:  {name: "invalid command", errorType: reasonInvalidCommand, endedBy: "proxy"},
	outcomeTLSHandshake:    {name: "tls handshake failed", errorType: reasonTLSHandshake, endedBy: "proxy"},
	outcomeBadCommands:     {name: "too many invalid commands", errorType: reasonBadCommands, endedBy: "proxy"},
	outcomeAuthFailures:    {name: "too many authentication failures", errorType: reasonAuthFailures, endedBy: "proxy"},
	outcomeKicked:          {name: "kicked", endedBy: "proxy"},
	outcomeShutdown:        {name: "proxy shutdown", endedBy: "proxy"},
	outcomeProxyHeader:     {name: "bad proxy header", errorType: reasonProxyHeader, endedBy: "proxy"},
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
	reasonInvalidCommand      = "invalid_command"
	reasonWriteTimeout        = "write_timeout"
	reasonEvicted             = "evicted"
	reasonUpstreamUnavailable = "upstream_unavailable"
	reasonClusterUnavailable  = "cluster_unavailable"
	reasonBadCommands         = "too_many_bad_commands"
	reasonAuthFailures        = "too_many_auth_failures"
	reasonProxyHeader         = "proxy_header"
)

// writeError is an error writing to one side of a relay, as opposed to
// reading from the other: it says who stopped taking bytes.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// endOf returns what the error that ended a relay direction says of how
// the session ended: the client's or the upstream's close or reset, a
// client that stopped reading, or outcomeClosed for an end the proxy
// caused (a closed connection: the proxy's own outcome is recorded
// already). A read error comes from the direction's source; a writeError
// from its destination.
func endOf(err error, source, dest side) outcome {
	s := source
	var we *writeError
	if errors.As(err, &we) {
		s, err = dest, we.err
	}
	switch {
	case errors.Is(err, net.ErrClosed), errors.Is(err, errClientClosed):
		return outcomeClosed
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return s.closed
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return s.reset
	case errors.Is(err, os.ErrDeadlineExceeded) && s == clientSide:
		return outcomeWriteTimeout
	}
	return outcomeConnectionError
}

// side is one end of a relay, with the outcomes its end means.
type side struct{ closed, reset outcome }

var (
	clientSide   = side{outcomeClientClosed, outcomeClientReset}
	upstreamSide = side{outcomeUpstreamClosed, outcomeUpstreamReset}
)
