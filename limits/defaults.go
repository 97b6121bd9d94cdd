package limits

import (
	"strconv"
	"time"
)

// The default of every cap and timeout imapguard enforces, in one place:
// the configuration's defaults (config.Default) and the zero values of
// limits.Options and proxy.Options all come from here. Where Exchange
// Server 2013 has the same setting (Set-ImapSettings), the default is
// Exchange's.
const (
	// DefaultMaxConnections is Exchange's MaxConnections: no practical
	// limit.
	DefaultMaxConnections = 2147483647
	// DefaultMaxConnectionsPerIP is Exchange's MaxConnectionFromSingleIP.
	DefaultMaxConnectionsPerIP = 2147483647
	// DefaultMaxConnectionsPerUser is Exchange's MaxConnectionsPerUser.
	DefaultMaxConnectionsPerUser = 16
	// DefaultIPv6PrefixLength groups IPv6 clients by /64, the usual
	// allocation to one site (RFC 6177).
	DefaultIPv6PrefixLength = 64

	// DefaultMaxCommandSize is Exchange's MaxCommandSize, in bytes.
	DefaultMaxCommandSize = 10240
	// DefaultMaxBadCommands closes a pre-authentication connection after
	// this many invalid commands, as Dovecot and nginx (max_errors) do
	// against cross-protocol attacks (ALPACA).
	DefaultMaxBadCommands = 3
	// DefaultMaxAuthFailures closes a connection after this many failed
	// authentications.
	DefaultMaxAuthFailures = 3

	// The brute-force defence across connections (AuthOptions), after
	// Dovecot's auth penalty (auth_failure_delay = 2s, doubling to 15 s)
	// and fail2ban's usual jail (a ban after some failures in a window).
	DefaultAuthFailureWindow   = 10 * time.Minute
	DefaultMaxAuthFailuresIP   = 10
	DefaultMaxAuthFailuresUser = 30
	DefaultAuthFailureBlock    = 15 * time.Minute
	DefaultAuthFailureDelay    = 2 * time.Second
	// DefaultAuthTrackingEntries bounds each of the tracker's caches.
	DefaultAuthTrackingEntries = 100000

	// DefaultPreauthTimeout is Exchange's PreAuthenticatedConnectionTimeout;
	// RFC 9051 §5.4 leaves the pre-authentication timer to the server.
	DefaultPreauthTimeout = 60 * time.Second
	// DefaultIdleTimeout is Exchange's AuthenticatedConnectionTimeout;
	// RFC 9051 §5.4 asks for at least 30 minutes after authentication.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultConnectTimeout bounds the TCP dial to the upstream.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultLoginTimeout bounds the upstream exchange from greeting to the
	// tagged answer of LOGIN/AUTHENTICATE (an upstream may delay failed
	// logins on purpose, Dovecot by 2 s and more).
	DefaultLoginTimeout = 30 * time.Second
	// DefaultHealthInterval is how often each of several upstreams
	// (upstream.backend) is probed: connect, greeting, LOGOUT.
	DefaultHealthInterval = 5 * time.Second
	// DefaultUnhealthyAfter failed probes in a row take a backend out;
	// DefaultHealthyAfter good ones bring it back.
	DefaultUnhealthyAfter = 3
	DefaultHealthyAfter   = 2
)

// FormatDuration writes d as the configuration takes it, in its largest
// exact unit: "1h", "30m", "90s"; a duration that is not a whole number
// of seconds as time.Duration does ("1.5s", "100ms"). The refusals that
// name a timeout (preauth_timeout=1m) and the configuration's own
// listing use it, so the two always agree.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return d.String()
	}
}

// DefaultRateTrackingEntries bounds the client addresses whose
// connection rate (max_connection_rate_per_ip) is remembered: a few MB at
// most. The auth failure tracking of issue 11 has a key of its own,
// auth_tracking_entries, with the same default, which may be wired here.
const DefaultRateTrackingEntries = 100000
