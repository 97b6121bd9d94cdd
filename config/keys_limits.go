package config

// The [limits], [[limits.override]], [shutdown] and [cluster] tables:
// caps, timeouts, the brute-force defence, draining and the fleet store.

// Limits are the caps on connections, commands and time. The connection
// limits and timeouts are modelled on the IMAP4 settings of Exchange
// Server 2013 (Set-ImapSettings) and have the same defaults. SIGHUP
// applies changes: new connections use the new values, connections
// already open stay even when a lowered cap now counts them as too many,
// and a session already being relayed keeps the command size and idle
// timeout it started with.
type Limits struct {
	// MaxConnections is the maximum number of client connections open at
	// the same time, from all clients together, authenticated or not. At
	// the cap, a new connection closes the oldest one that has not logged
	// in, with evict_unauthenticated; when every connection is logged in,
	// or without it, further connections are refused until one closes.
	// Exchange: MaxConnections.
	MaxConnections int `toml:"max_connections" means:"no practical limit"`

	// EvictUnauthenticated, when true, makes room for a new connection at
	// max_connections by closing the oldest connection that has not
	// logged in (it gets "* BYE [UNAVAILABLE]"), as Dovecot's login
	// process does: a flood of connections that never log in cannot lock
	// real users out, since logged-in sessions are never closed for it.
	// When false, new connections are refused while the cap is reached.
	EvictUnauthenticated bool `toml:"evict_unauthenticated"`

	// MaxConnectionsPerIP is the maximum number of client connections open
	// at the same time from one client address, authenticated or not.
	// IPv6 clients are grouped by network prefix, see ipv6_prefix_length.
	// Further connections from that address are refused until one closes.
	// Exchange: MaxConnectionFromSingleIP.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip" means:"no practical limit"`

	// MaxConnectionsPerUser is the maximum number of authenticated
	// sessions of one user at the same time, from all addresses together.
	// User names are compared case-insensitively. A login beyond the limit
	// is refused. Exchange: MaxConnectionsPerUser.
	MaxConnectionsPerUser int `toml:"max_connections_per_user"`

	// IPv6PrefixLength is the length, in bits, of the network prefix by
	// which IPv6 clients are grouped for max_connections_per_ip. A single
	// IPv6 client usually holds a whole /64 network, so counting single
	// addresses would let it open unlimited connections. Use 128 to count
	// every IPv6 address separately. IPv4 clients, IPv4-mapped IPv6
	// addresses included, are always counted by their single address.
	IPv6PrefixLength int `toml:"ipv6_prefix_length"`

	// MaxCommandSize is the maximum size in bytes of one client command,
	// before and after authentication; the message literals of APPEND do
	// not count. Longer commands are rejected and not forwarded to the
	// upstream server. Exchange: MaxCommandSize.
	MaxCommandSize int `toml:"max_command_size"`

	// PreauthTimeout is how long a client connection may stay
	// unauthenticated. A connection that has not logged in by then gets
	// a BYE and is closed. Exchange: PreAuthenticatedConnectionTimeout.
	PreauthTimeout Duration `toml:"preauth_timeout"`

	// IdleTimeout is how long an authenticated session may stay idle,
	// with no traffic in either direction, before it is closed (with a
	// BYE at a response boundary). RFC 9051 asks servers to allow at
	// least 30 minutes, because clients waiting in IDLE renew it only
	// about every 29 minutes; lower values disconnect such clients.
	// Exchange: AuthenticatedConnectionTimeout.
	IdleTimeout Duration `toml:"idle_timeout"`

	// MaxBadCommands is the number of invalid commands a client may send
	// before authentication; at that many the connection is closed. This
	// stops cross-protocol attacks (such as ALPACA) that send other
	// protocols' traffic to the IMAP port, as Dovecot does and nginx's
	// max_errors.
	MaxBadCommands int `toml:"max_bad_commands"`

	// MaxAuthFailures is the number of failed authentications (LOGIN or
	// AUTHENTICATE) allowed on one connection; at that many the connection
	// is closed. This slows down password guessing.
	MaxAuthFailures int `toml:"max_auth_failures"`

	// MaxConnectionsPerUserIP is the maximum number of authenticated
	// sessions of one user from one client address at the same time (IPv6
	// clients grouped by ipv6_prefix_length), as Dovecot's
	// mail_max_userip_connections. It is checked with
	// max_connections_per_user, once the upstream server has accepted the
	// password; a login beyond it is refused with "NO [LIMIT]". 0 turns
	// it off.
	MaxConnectionsPerUserIP int `toml:"max_connections_per_user_ip" means:"off"`

	// MaxConnectionRatePerIP is the number of new connections per second
	// accepted from one client address (IPv6 clients grouped by
	// ipv6_prefix_length), with bursts of up to twice as many (at least
	// one): with 5, ten connections at once are accepted, then five per
	// second. A fraction is allowed: 0.2 is one connection every five
	// seconds. A connection over the rate gets "* BYE [UNAVAILABLE] Too
	// many new connections from your address" (on listen.imaps it is
	// closed without a word, as for the other connection caps). Only
	// connections that are accepted use up the rate. The rates of at most
	// auth_tracking_entries addresses are remembered, the least recently
	// seen forgotten first. 0 turns it off.
	MaxConnectionRatePerIP float64 `toml:"max_connection_rate_per_ip" means:"off"`

	// ExemptNetworks are client networks, such as a webmail host or a
	// monitoring probe, whose connections skip the caps by address:
	// max_connections_per_ip, max_connections_per_user_ip and
	// max_connection_rate_per_ip, and the counting of failed logins by
	// address. max_connections and the per-user caps still apply. Write
	// networks in CIDR notation or single addresses:
	//
	//	exempt_networks = ["192.0.2.10", "10.20.0.0/16"]
	ExemptNetworks []string `toml:"exempt_networks" means:"none"`

	// AuthFailureWindow is how long failed logins are remembered across
	// connections, for the brute-force defence: a login the upstream
	// rejected as a wrong password counts for the client's address (IPv6
	// grouped by ipv6_prefix_length) and for the user name (compared
	// case-insensitively), and a count is forgotten auth_failure_window
	// after its last failure (each failure starts the window again). "0s"
	// turns the whole defence off: no delay, no block. For example
	// auth_failure_window = "1h" remembers a slow guesser for an hour.
	AuthFailureWindow Duration `toml:"auth_failure_window"`

	// MaxAuthFailuresPerIP is the number of failed logins from one client
	// address, within auth_failure_window, at which that address is
	// blocked: every login from it, for any user, is answered "NO
	// [UNAVAILABLE] Too many failed logins, try again later
	// (max_auth_failures_per_ip=10)" without asking the upstream, until
	// auth_failure_block has passed since the last failure. A successful
	// login does not lower this count (it resets the delay). 0 means no
	// block by address (the delay still applies). For example, behind a
	// large NAT, max_auth_failures_per_ip = 50.
	MaxAuthFailuresPerIP int `toml:"max_auth_failures_per_ip"`

	// MaxAuthFailuresPerUser is the number of failed logins for one user
	// name, from all addresses together within auth_failure_window, at
	// which logins for that user are refused the same way
	// (max_auth_failures_per_user=30) until auth_failure_block has passed,
	// except from addresses the user has logged in from successfully
	// before (the last auth_tracking_entries such pairs are kept), so
	// that an attacker cannot lock a user out of the places it uses. A
	// successful login clears the user's count. 0 means no block by user.
	// For example max_auth_failures_per_user = 100 for users whose
	// clients retry old passwords often.
	MaxAuthFailuresPerUser int `toml:"max_auth_failures_per_user"`

	// AuthFailureBlock is how long a blocked address or user stays
	// blocked after its last failure. For example auth_failure_block =
	// "1h".
	AuthFailureBlock Duration `toml:"auth_failure_block"`

	// AuthFailureDelay is how long a login from an address with failed
	// logins in its window waits before the upstream is asked: this
	// delay after one failure, doubling with each further one, at most
	// 15 seconds, as Dovecot's auth penalty does (2s, 4s, 8s, 15s). The
	// delay goes by address only, and a successful login from the address
	// resets it. The connection keeps its slot while it waits; a client
	// that leaves, a kick or a shutdown ends the wait. "0s" means no
	// delay (the blocks still apply). For example auth_failure_delay =
	// "1s" gives 1s, 2s, 4s, 8s, 15s.
	AuthFailureDelay Duration `toml:"auth_failure_delay"`

	// AuthTrackingEntries bounds each of the brute-force defence's three
	// tables (addresses with failures, user names with failures, and
	// (user, address) pairs that logged in): at most this many keys each,
	// the least recently used going first, so an attacker cycling through
	// addresses or names costs bounded memory, about 400 bytes per key
	// (120 MB for three full tables of 1000000). User names longer than
	// 256 bytes are kept as their SHA-256. SIGHUP resizes the tables. For
	// example auth_tracking_entries = 1000000 on a large site.
	AuthTrackingEntries int `toml:"auth_tracking_entries"`

	// Override holds the [[limits.override]] entries, documented with
	// Override.
	Override []Override `toml:"override"`
}

// Override is one entry of an array of tables, each under its own
// header, after the [limits] keys: other caps for some users, some client
// networks, or some users from some networks. A shared mailbox:
//
//	[[limits.override]]
//	users = ["archive@example.com"]
//	max_connections_per_user = 50
//
// A webmail host, whose users all come from one address:
//
//	[[limits.override]]
//	networks = ["192.0.2.10/32"]
//	max_connections_per_ip = 500
//	max_connection_rate_per_ip = 50
//
// An entry needs users or networks, or both (then both must match), and
// at least one of the four caps; a cap it does not set (0) is left to
// the other entries and to [limits]. When several entries set the same
// cap and match, the one that applies is, for each cap on its own: an
// entry with users and networks, else one with users only, else one with
// networks only; among entries with networks, the one whose matching
// network is the longest prefix (the most specific); then the first in
// the file. max_connections_per_ip and max_connection_rate_per_ip are
// checked when a connection arrives, before the user is known, so only
// entries with networks and no users can set them; the per-user caps are
// checked at login, with the address the user logs in from. Clients in
// exempt_networks skip the caps by address whatever the overrides say.
// SIGHUP applies changes.
type Override struct {
	// Users are the user names the entry applies to, as clients log in
	// with them, compared case-insensitively.
	Users []string `toml:"users" means:"any user"`

	// Networks are the client networks the entry applies to, written as
	// limits.exempt_networks.
	Networks []string `toml:"networks" means:"any address"`

	// MaxConnectionsPerIP replaces limits.max_connections_per_ip for
	// clients in networks; an entry with users cannot set it.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip" means:"not overridden"`

	// MaxConnectionsPerUser replaces limits.max_connections_per_user.
	MaxConnectionsPerUser int `toml:"max_connections_per_user" means:"not overridden"`

	// MaxConnectionsPerUserIP replaces
	// limits.max_connections_per_user_ip.
	MaxConnectionsPerUserIP int `toml:"max_connections_per_user_ip" means:"not overridden"`

	// MaxConnectionRatePerIP replaces limits.max_connection_rate_per_ip
	// for clients in networks; an entry with users cannot set it.
	MaxConnectionRatePerIP float64 `toml:"max_connection_rate_per_ip" means:"not overridden"`
}

// problems returns what is wrong with the entry as a whole, its keys
// each being valid.
func (o Override) problems() []string {
	var out []string
	if len(o.Users) == 0 && len(o.Networks) == 0 {
		out = append(out, "has neither users nor networks, so it would apply to no one")
	}
	if o.MaxConnectionsPerIP == 0 && o.MaxConnectionsPerUser == 0 && o.MaxConnectionsPerUserIP == 0 && o.MaxConnectionRatePerIP == 0 {
		out = append(out, "sets none of max_connections_per_ip, max_connections_per_user, max_connections_per_user_ip, max_connection_rate_per_ip")
	}
	if len(o.Users) > 0 && (o.MaxConnectionsPerIP != 0 || o.MaxConnectionRatePerIP != 0) {
		out = append(out, "has users, but max_connections_per_ip and max_connection_rate_per_ip are checked before the user is known; set them in an entry with networks only")
	}
	return out
}

// Shutdown is how the proxy drains: on SIGTERM or SIGINT, on POST /drain
// of the admin API and on `imapguard drain`, it stops accepting (closes
// its listeners), /readyz answers 503, connections that have not logged
// in are told "* BYE [UNAVAILABLE] Server shutting down" at once, and
// authenticated sessions get the same BYE at a response boundary, one
// after another over disconnect_spread, so that their clients do not all
// reconnect (to another proxy) in the same second. Whatever is still open
// after drain_timeout is closed. SIGHUP applies changes to the next
// drain.
type Shutdown struct {
	// DrainTimeout is how long a drain may take: the connections still
	// open when it ends (a client that does not read its BYE, a session
	// whose slot came late) are closed without more waiting. A second
	// SIGTERM or SIGINT during a drain closes everything at once.
	DrainTimeout Duration `toml:"drain_timeout"`

	// DisconnectSpread is the time over which authenticated sessions get
	// their BYE: of n sessions, the i-th oldest (counting from 0) gets it
	// i*disconnect_spread/n after the drain starts, as Dovecot's
	// login_proxy_max_disconnect_delay spreads its disconnects. "0s"
	// sends every BYE at once. At most drain_timeout. For example
	// disconnect_spread = "60s" with drain_timeout = "75s" (below
	// systemd's default TimeoutStopSec of 90s) for a host whose tens of
	// thousands of IDLE clients would all log in again to the same mail
	// servers.
	DisconnectSpread Duration `toml:"disconnect_spread"`
}

// Cluster is the state several imapguard instances behind one load
// balancer share, so that the caps hold for the whole fleet. With store =
// "local" (the default) every instance counts on its own, and N
// instances admit N times max_connections_per_user. With store = "redis"
// the sessions of each user and of each (user, client address), the
// connections of each client address and the brute-force defence's
// failure records are kept in Redis, changed through atomic scripts by
// every instance alike; max_connections and the connection rate stay per
// instance (they protect the instance itself). See
// limits/redisstore/README.md for the key layout and the leases. Changes
// take effect after a restart. Example:
//
//	[cluster]
//	store = "redis"
//	redis_url = "redis://:secret@10.0.0.5:6379/0"
//	instance_id = "imap1"
type Cluster struct {
	// Store is where the fleet-wide counts live: "local" (this
	// instance's memory only) or "redis" (redis_url or
	// redis_sentinel).
	Store string `toml:"store"`

	// RedisURL is the Redis server, as redis://[[user]:password@]host:port[/db]
	// or rediss:// for TLS. With redis_sentinel it gives only the
	// password, database and TLS. It may hold a password: -check and
	// /settings show it as "(redacted)".
	RedisURL string `toml:"redis_url" means:"no URL"`

	// RedisSentinel is the addresses (host:port) of Redis Sentinels to
	// ask for the master named redis_master, instead of redis_url's host.
	RedisSentinel []string `toml:"redis_sentinel" means:"no Sentinel"`

	// RedisMaster is the master name the Sentinels know, with
	// redis_sentinel.
	RedisMaster string `toml:"redis_master" means:"no master name"`

	// InstanceID names this instance in Redis: its sessions are
	// recorded under it, and a restart with the same id clears the
	// sessions its previous run left at once. Each instance needs its
	// own. Empty means the host name.
	InstanceID string `toml:"instance_id" means:"the host name"`

	// LeaseTTL is how long an instance's sessions count in Redis after
	// its last refresh; an instance refreshes all of its sessions every
	// lease_ttl/3 in one call, so the sessions of an instance that dies
	// stop counting within lease_ttl.
	LeaseTTL Duration `toml:"lease_ttl"`

	// RedisFailure is what happens to a login while Redis cannot be
	// reached: "local" counts against this instance's own sessions (and
	// writes them to Redis again when it is back), "deny" refuses the
	// login with NO [UNAVAILABLE]. Sessions already open continue
	// either way.
	RedisFailure string `toml:"redis_failure"`
}
