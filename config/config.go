// Package config reads imapguard's TOML configuration file.
//
// Every key is optional: an absent key takes its default (Default). A
// key that is present must hold a valid value; zero is not a shorthand
// for the default. Unknown keys and tables are errors, so that a misspelt
// key is reported instead of silently ignored. Parse reports all problems
// of a file at once, each with its file, line and key.
//
// README.md, the configuration reference, and default.toml are generated
// from this package (see Config) by go generate; do not edit them.
package config

//go:generate go run gen.go

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// DefaultTOML is default.toml: a configuration file that sets every key
// to its default, with its documentation as comments. Parsing it yields
// Default().
//
//go:embed default.toml
var DefaultTOML []byte

// DemoTOML is the configuration imapguard runs with when it is given no
// file (make run): loopback, the bundled upstream, a self-signed
// certificate for imaps and STARTTLS.
//
//go:embed demo.toml
var DemoTOML []byte

// Config is the whole configuration file. Every fact about a key is
// written once, here or beside it:
//
//   - its name is the field's toml tag, its type the field's type;
//   - its documentation is the field's doc comment, which starts with the
//     field's name (the reference writes the key's name in its place);
//   - its valid values are its rule in rules (schema.go);
//   - its default is the field's value in Default;
//   - where the default value alone does not say what it does (0 for a
//     port, "" for a file), the field's means tag says it in words.
//
// config/internal/gen writes default.toml and README.md, the
// configuration reference, from these (go generate ./config), and a test
// fails when they are stale. The means tag is a struct tag rather than a
// map beside rules so that it sits on the field it describes and is read
// by reflection with the toml tag, from the compiled package.
type Config struct {
	// Listen is the [listen] table.
	Listen Listen `toml:"listen"`
	// Upstream is the [upstream] table.
	Upstream Upstream `toml:"upstream"`
	// TLS is the [tls] table.
	TLS TLS `toml:"tls"`
	// Limits is the [limits] table.
	Limits Limits `toml:"limits"`
	// Log is the [log] table.
	Log Log `toml:"log"`
	// Telemetry is the [telemetry] table.
	Telemetry Telemetry `toml:"telemetry"`
	// Admin is the [admin] table.
	Admin Admin `toml:"admin"`
	// Shutdown is the [shutdown] table.
	Shutdown Shutdown `toml:"shutdown"`
	// Cluster is the [cluster] table.
	Cluster Cluster `toml:"cluster"`
}

// Listen holds the addresses clients connect to, and whether a load
// balancer in front passes their addresses on (the PROXY protocol).
// Changes take effect after a restart, but for trusted_proxies, which
// SIGHUP applies to new connections.
type Listen struct {
	// IMAP is the address the proxy accepts IMAP client connections on,
	// as host:port. Clients connect in plaintext here and, when tls.mode is
	// not "off", may switch to TLS with STARTTLS. The host may be an IP
	// address or a name; an empty host (":1143") listens on all addresses
	// of the machine. IPv6 addresses go in brackets ("[::1]:1143"). Port 0
	// lets the system pick a free port, which is only useful in tests.
	// Empty ("") means no such listener, for a proxy that accepts only
	// implicit TLS on imaps; imap and imaps cannot both be empty.
	IMAP string `toml:"imap"`

	// IMAPS is the address the proxy accepts implicit TLS connections on
	// (RFC 8314: TLS from the first byte, the usual port is 993), as
	// host:port, written like imap. It needs a certificate, so tls.mode
	// must not be "off". Empty ("") means no such listener.
	IMAPS string `toml:"imaps" means:"no implicit TLS listener"`

	// ProxyProtocol, when true, makes both listeners take the PROXY
	// protocol (HAProxy's, version 1 or 2) from the load balancers in
	// trusted_proxies: such a peer must start each connection with a
	// PROXY header, read before the greeting (imap) or the TLS handshake
	// (imaps) and within limits.preauth_timeout, and the client address
	// it carries is then the client's for everything: the per-address
	// caps, the log lines, the spans and the admin API. A trusted peer
	// that sends no header or a malformed one is closed; a v2 LOCAL
	// header (the balancer's own health check) keeps the balancer's
	// address. A peer not in trusted_proxies is served as a direct client
	// under its own address, and closed if it sends a header. Requires
	// trusted_proxies. On the balancer: HAProxy "send-proxy" or
	// "send-proxy-v2" on the server line. Changing it needs a restart.
	ProxyProtocol bool `toml:"proxy_protocol"`

	// TrustedProxies are the peers whose PROXY headers are believed, as
	// networks in CIDR notation or bare IP addresses, such as
	// ["10.0.0.0/8", "192.0.2.7", "2001:db8::/64"]: the load balancers,
	// and nothing that clients can reach the proxy from. Required, and
	// only used, with proxy_protocol. It is re-read on SIGHUP (while
	// proxy_protocol stays as it is), for new connections.
	TrustedProxies []string `toml:"trusted_proxies" means:"none"`
}

// Upstream is the IMAP server behind the proxy, and how the proxy
// connects and logs in to it. SIGHUP applies changes to new connections.
type Upstream struct {
	// Address is the IMAP server the proxy forwards clients to, as
	// host:port. The proxy logs in there with the credentials each client
	// presents. IPv6 addresses go in brackets ("[2001:db8::1]:143").
	Address string `toml:"address"`

	// ConnectTimeout is how long the proxy waits for the TCP connection to
	// the upstream server to be established. If it is not, the client's
	// login fails.
	ConnectTimeout Duration `toml:"connect_timeout"`

	// LoginTimeout is how long the upstream server may take from its
	// greeting (and the TLS handshake) to the tagged answer of the
	// client's LOGIN or AUTHENTICATE command. If it answers later, the
	// client's login fails. Some servers delay failed logins on purpose
	// (Dovecot by 2 seconds), so keep this well above such delays.
	LoginTimeout Duration `toml:"login_timeout"`

	// TLS is how the proxy protects its connection to the upstream
	// server: "none" (plaintext; only for an upstream on the same machine
	// or a trusted network), "starttls" (connect in plaintext, then
	// switch to TLS with STARTTLS before logging in) or "implicit" (TLS
	// from the first byte, as on port 993). With "starttls" and
	// "implicit" the server's certificate is verified. With "starttls" an
	// upstream that does not offer STARTTLS is refused (no silent
	// downgrade), and one that sends anything between its answer to
	// STARTTLS and the handshake is dropped (an injection). A TLS failure
	// reaches the client as NO [UNAVAILABLE].
	TLS string `toml:"tls"`

	// ServerName is the name the upstream server's certificate is
	// verified against, and sent in the TLS handshake (SNI). Set it when
	// address holds an IP address or a name other than the one in the
	// certificate. Only allowed when tls is not "none".
	ServerName string `toml:"server_name" means:"the host part of address"`

	// CAFile is a PEM file with the CA certificates that the upstream
	// server's certificate must chain to, instead of the system's trusted
	// roots; for an upstream with a private or self-signed certificate.
	// Only allowed when tls is not "none".
	CAFile string `toml:"ca_file" means:"the system's trusted roots"`

	// InsecureSkipVerify, when true, accepts any certificate from the
	// upstream server without verifying it. The connection is then
	// encrypted but not authenticated: anyone who can intercept it can
	// read the users' passwords, and the start-up log warns so. Prefer
	// ca_file. Only allowed when tls is not "none".
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`

	// CertFile is a PEM file with a client certificate (and its chain)
	// that the proxy presents to the upstream server, for servers that
	// require one. Set it together with key_file, or neither. Only allowed
	// when tls is not "none".
	CertFile string `toml:"cert_file" means:"no client certificate"`

	// KeyFile is a PEM file with the private key of cert_file. Set it
	// together with cert_file, or neither. Only allowed when tls is not
	// "none".
	KeyFile string `toml:"key_file" means:"no client certificate"`

	// ForwardClient is how the upstream server learns each client's
	// address, so that its logs, its per-address limits and its penalty
	// for failed logins apply to the client and not to the proxy. "id":
	// before logging in, when the server advertises ID, the proxy sends
	// ID ("x-originating-ip" "..." "x-originating-port" "..."
	// "x-connected-ip" "..." "x-connected-port" "..." "x-session-id"
	// "..."), as Dovecot's own proxy does; Dovecot believes it from its
	// login_trusted_networks (set them to the proxy's address), and
	// counts such a connection as secured. The session id is also on the
	// proxy's login log lines ("session"). "proxy_v1" or "proxy_v2": a
	// PROXY protocol header (text or binary) opens the upstream
	// connection, before TLS; Dovecot reads it on an inet_listener with
	// haproxy = yes, from haproxy_trusted_networks, and closes connections
	// without one. There Dovecot counts a plaintext connection as secured
	// only when the header says the client used TLS, which only proxy_v2
	// can say: with proxy_v1, or clients allowed to log in without TLS,
	// Dovecot's disable_plaintext_auth = yes refuses them unless tls is
	// "starttls" or "implicit". "none": the server sees the proxy's
	// address. In every mode the client's own ID fields sent before login
	// (name, version, os, ...) reach a server that advertises ID, less
	// any field that could pass for the client's address
	// (x-originating-*, x-connected-*, x-session-*, x-proxy-*,
	// x-forward-*, ...). Example: forward_client = "proxy_v2".
	ForwardClient string `toml:"forward_client"`

	// Route is how a user's backend is chosen, when several
	// [[upstream.backend]] entries serve the users. "single": no
	// backends, address is the upstream, as in a one-server setup.
	// "hash": each user goes to one of the backends by rendezvous
	// (highest random weight) hashing of the user name, case-folded as
	// the per-user caps count it, weighted by weight; the same user
	// lands on the same backend while it is up, and a backend that goes
	// down (or is removed) moves only its own users, each to their next
	// choice, which they leave when it is back. For backends that share
	// the mail storage (a director's setup). "map": the backend of each
	// user is the one map_file names; a user's mailbox is on that backend
	// only, so there is no next choice. With "hash" and "map", address is
	// not used and [[upstream.backend]] entries are required; with
	// "single" none are allowed. SIGHUP applies changes to new logins;
	// sessions stay where they are.
	Route string `toml:"route"`

	// MapFile is the file of route = "map": one user and one backend (its
	// name, or its address) per line, separated by white space; blank
	// lines and lines starting with # are ignored. A line whose user is
	// "*" names the backend of the users the file does not list; without
	// one they get NO [UNAVAILABLE]. User names compare
	// case-insensitively. A line naming no configured backend is an
	// error. The file is read again on SIGHUP and when its modification
	// time changes, checked every health_interval; a file that has become
	// unreadable or wrong leaves the previous map in force, and the
	// log says why. Only allowed with route = "map", which requires it.
	// Example:
	//
	//	# user            backend
	//	alice@example.com mail1
	//	bob@example.com   mail2
	//	*                 mail1
	MapFile string `toml:"map_file" means:"none"`

	// HealthInterval is how often the proxy probes each backend of
	// [[upstream.backend]] as a login would reach it (TCP connection,
	// its TLS, the PROXY header with forward_client "proxy_v1" or
	// "proxy_v2", the greeting) and logs out, bounded by connect_timeout
	// and login_timeout. Only with route "hash" or "map".
	HealthInterval Duration `toml:"health_interval"`

	// UnhealthyAfter is how many probes in a row must fail for a
	// backend to be taken out: route "hash" then sends its users to their
	// next choice, and /readyz fails when no backend is left. A backend
	// is up when the proxy starts, until its probes say otherwise.
	UnhealthyAfter int `toml:"unhealthy_after"`

	// HealthyAfter is how many probes in a row must succeed for a
	// backend that was taken out to be back in.
	HealthyAfter int `toml:"healthy_after"`

	// Backend holds the [[upstream.backend]] entries, documented with
	// Backend.
	Backend []Backend `toml:"backend"`
}

// Backend is one of several upstream servers, each under its own
// [[upstream.backend]] header after the [upstream] keys, with route =
// "hash" or "map". Its TLS keys default to [upstream]'s (tls,
// server_name, ca_file, cert_file, key_file; insecure_skip_verify is true
// when either says so). Three backends sharing the users by hash, one of
// them with twice the share:
//
//	[upstream]
//	route = "hash"
//	tls = "starttls"
//	ca_file = "/etc/imapguard/mail-ca.pem"
//
//	[[upstream.backend]]
//	name = "mail1"
//	address = "mail1.example.com:143"
//
//	[[upstream.backend]]
//	name = "mail2"
//	address = "mail2.example.com:143"
//
//	[[upstream.backend]]
//	name = "mail3"
//	address = "mail3.example.com:143"
//	weight = 2
//
// Changing a backend's name or address makes it another backend (to
// the health checks and to hash: its users move); changing its weight
// moves some users to or from it.
type Backend struct {
	// Name identifies the backend in map_file, the admin API (GET
	// /backends, imapguard backends) and the metrics: letters, digits
	// and . _ - :, at most 64 characters, unique among the backends.
	Name string `toml:"name" means:"the address"`

	// Address is the backend's host:port. Required.
	Address string `toml:"address"`

	// Weight is the backend's share of the users under route "hash",
	// relative to the others'.
	Weight int `toml:"weight" means:"1"`

	// TLS is upstream.tls for this backend.
	TLS string `toml:"tls" means:"upstream.tls"`

	// ServerName is upstream.server_name for this backend.
	ServerName string `toml:"server_name" means:"upstream.server_name, else the host part of address"`

	// CAFile is upstream.ca_file for this backend.
	CAFile string `toml:"ca_file" means:"upstream.ca_file"`

	// InsecureSkipVerify is upstream.insecure_skip_verify for this
	// backend (either one true accepts any certificate).
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`

	// CertFile is upstream.cert_file for this backend, with key_file.
	CertFile string `toml:"cert_file" means:"upstream.cert_file"`

	// KeyFile is upstream.key_file for this backend, with cert_file.
	KeyFile string `toml:"key_file" means:"upstream.key_file"`
}

// problems returns what is wrong with the entry as a whole, its keys
// each being valid.
func (b Backend) problems() []string {
	var out []string
	if b.Address == "" {
		out = append(out, "has no address")
	}
	if (b.CertFile == "") != (b.KeyFile == "") {
		out = append(out, "sets one of cert_file and key_file; set both, or neither")
	}
	if b.TLS == "none" && (b.ServerName != "" || b.CAFile != "" || b.InsecureSkipVerify || b.CertFile != "") {
		out = append(out, `has tls = "none" and TLS keys (server_name, ca_file, insecure_skip_verify, cert_file)`)
	}
	return out
}

// TLS is the certificate the proxy presents to clients, on listen.imaps
// and after STARTTLS on listen.imap. Every TLS listener uses TLS 1.2 or
// later, Go's default cipher suites and session tickets, and offers the
// ALPN protocol "imap". A connection in its handshake counts toward the
// connection limits, and the handshake toward limits.preauth_timeout.
// Changes take effect after a restart, except that SIGHUP reads the files
// of cert_file and key_file again.
type TLS struct {
	// Mode is where the certificate comes from: "off" (no TLS: the proxy
	// offers no STARTTLS, listen.imaps cannot be used, clients log in
	// over plaintext, and the start-up log says so), "files" (read from
	// cert_file and key_file), "acme" (obtained and renewed automatically
	// from an ACME certificate authority such as Let's Encrypt, for the
	// names in domains) or "self_signed" (generated at start for
	// self_signed_names; clients will warn about it, so only for tests
	// and private setups).
	Mode string `toml:"mode"`

	// CertFile is a PEM file with the certificate followed by its
	// intermediate certificates. Required with mode "files", and only
	// allowed then. Whether the file exists and matches key_file is
	// checked when imapguard starts, not by -check. It is read again on
	// SIGHUP and when it changes on disk (checked at handshakes); a bad
	// pair keeps the certificate in use and is logged.
	CertFile string `toml:"cert_file"`

	// KeyFile is a PEM file with the private key of cert_file. Required
	// with mode "files", and only allowed then. Keep it readable only by
	// the user imapguard runs as. It is read again with cert_file.
	KeyFile string `toml:"key_file"`

	// Domains are the names to obtain certificates for with mode "acme",
	// at start, such as ["mail.example.com", "imap.example.com"]. Each
	// must resolve to this machine, which must be reachable from the
	// internet on port 80 or 443 (see http_challenge_port) for the
	// certificate authority to check it. Wildcard names are not
	// supported. Required with mode "acme" unless on_demand is true.
	Domains []string `toml:"domains"`

	// Email is the contact address given to the ACME certificate
	// authority when the account is created; Let's Encrypt no longer
	// sends expiry warnings, but other authorities may write to it.
	Email string `toml:"email" means:"no contact address"`

	// CA is the directory URL of the ACME certificate authority, such as
	// "https://acme-staging-v02.api.letsencrypt.org/directory" for Let's
	// Encrypt's staging environment, which has higher rate limits and is
	// meant for trying out a setup, or that of a private authority.
	CA string `toml:"ca" means:"Let's Encrypt's production environment"`

	// CARoot is a PEM file with the root certificate of the ACME
	// certificate authority's own HTTPS server, for a private authority
	// whose server certificate is not trusted by the system.
	CARoot string `toml:"ca_root" means:"the system's trusted roots"`

	// Storage is the directory where ACME accounts, certificates and keys
	// are kept, so that they survive restarts. It must be writable by
	// the user imapguard runs as; keep it private. When it is empty and
	// $STATE_DIRECTORY is set, as systemd sets it for a unit's
	// StateDirectory= (the shipped unit's is /var/lib/imapguard, see
	// cmd/imapguard/systemd), that directory is used. Example: storage =
	// "/var/lib/imapguard".
	Storage string `toml:"storage" means:"$STATE_DIRECTORY when set (systemd), else a certmagic directory under $XDG_DATA_HOME or ~/.local/share"`

	// HTTPChallengePort is the port on which the proxy answers the ACME
	// HTTP-01 challenge, only while one is being solved. The certificate
	// authority always connects to port 80; set another port only when
	// port 80 is forwarded there.
	HTTPChallengePort int `toml:"http_challenge_port" means:"port 80"`

	// TLSALPNChallengePort is the port on which the proxy answers the
	// ACME TLS-ALPN-01 challenge. The certificate authority always
	// connects to port 443; set another port only when port 443 is
	// forwarded there.
	TLSALPNChallengePort int `toml:"tls_alpn_challenge_port" means:"port 443"`

	// OnDemand, when true, obtains a certificate during the first TLS
	// handshake that asks for a name (SNI) not yet covered, instead of
	// only for domains at start: for a host serving many mail domains. To
	// stop clients from making the proxy request certificates for
	// arbitrary names, it requires on_demand_domains or
	// on_demand_permission_url, or both. Only allowed with mode "acme".
	OnDemand bool `toml:"on_demand"`

	// OnDemandDomains are the names for which on_demand may obtain
	// certificates, besides domains. A name "*.example.com" allows every
	// name one label below example.com, such as "mail.example.com".
	OnDemandDomains []string `toml:"on_demand_domains"`

	// OnDemandPermissionURL is asked before on_demand obtains a
	// certificate for a name that is in neither domains nor
	// on_demand_domains: the proxy sends a GET request with
	// "?domain=NAME" added, and goes ahead only if the answer has status
	// 200.
	OnDemandPermissionURL string `toml:"on_demand_permission_url" means:"not asked"`

	// SelfSignedNames are the DNS names and IP addresses that the
	// certificate of mode "self_signed" is made for. The certificate is
	// kept in memory only; its SHA-256 fingerprint is logged at start.
	SelfSignedNames []string `toml:"self_signed_names" means:"localhost, 127.0.0.1 and ::1"`

	// AllowPlaintextAuth, when true, lets clients log in (LOGIN and
	// AUTHENTICATE) on listen.imap before they have switched to TLS with
	// STARTTLS, sending their password in plaintext; for trusted
	// networks. When false, they must switch to TLS first. With mode
	// "off" there is no TLS, so plaintext login is always allowed
	// whatever this key says, and -check shows true.
	AllowPlaintextAuth bool `toml:"allow_plaintext_auth" means:"with mode \"off\": true regardless"`
}

// PlaintextAuthAllowed reports whether clients may log in without TLS:
// always with mode "off", otherwise as allow_plaintext_auth says. -check
// prints this value for tls.allow_plaintext_auth.
func (t TLS) PlaintextAuthAllowed() bool {
	return t.Mode == "off" || t.AllowPlaintextAuth
}

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

// Log is what the proxy logs and how. Logs go to standard error: a line
// when a session logs in, one for each refusal, and a summary when a
// connection ends (client address, user, duration, bytes each way,
// outcome). Passwords and message contents are never logged. A reload
// (SIGHUP) applies changes, from the line after the reload's own.
type Log struct {
	// Level is the least severe level of log messages that are written,
	// from most to least verbose: "debug", "info", "warn" or "error".
	Level string `toml:"level"`

	// Format is the format of log lines: "text" for people to read, or
	// "json", one JSON object per line, for log collectors.
	Format string `toml:"format"`
}

// Telemetry is OpenTelemetry traces and metrics, and a Prometheus
// endpoint. Its keys take effect at start, except record_user, which
// SIGHUP also applies.
type Telemetry struct {
	// Traces is where spans go: "none" (nowhere), "stdout" (as JSON
	// lines on standard output) or "otlp" (to an OTLP collector, see
	// otlp_endpoint).
	Traces string `toml:"traces"`

	// Metrics is whether metrics are also pushed to an OTLP collector
	// ("otlp") every metrics_interval, or not ("none"). The Prometheus
	// endpoint of metrics_listen does not depend on it.
	Metrics string `toml:"metrics"`

	// OTLPEndpoint is the OTLP collector that traces and metrics "otlp"
	// are sent to: host:port, or an http:// or https:// URL. A URL's
	// path, if any, is the base the signal paths /v1/traces and
	// /v1/metrics are appended to (with otlp_protocol "http/protobuf").
	// Empty means the standard environment variables
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
	// or OTEL_EXPORTER_OTLP_ENDPOINT, else OpenTelemetry's default:
	// localhost:4317 for "grpc", http://localhost:4318 for
	// "http/protobuf".
	OTLPEndpoint string `toml:"otlp_endpoint" means:"the OTEL_EXPORTER_OTLP_* environment variables, else localhost"`

	// OTLPProtocol is how traces and metrics are sent to the collector:
	// "grpc" or "http/protobuf". Empty means the environment variables
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL,
	// else "http/protobuf", the OpenTelemetry specification's default.
	OTLPProtocol string `toml:"otlp_protocol" means:"the OTEL_EXPORTER_OTLP_*PROTOCOL environment variables, else http/protobuf"`

	// OTLPInsecure, when true, talks to the collector in plaintext,
	// without TLS, when otlp_endpoint is host:port. An
	// http:// URL is plaintext anyway, and an https:// URL always uses
	// TLS.
	OTLPInsecure bool `toml:"otlp_insecure"`

	// SampleRatio is the fraction of client connections that are traced:
	// 0 traces none, 1 traces all. The sampler is parent-based with a
	// trace ID ratio. The environment variable OTEL_TRACES_SAMPLER, when
	// set, wins over this key. An integer (0 or 1) is accepted as well as
	// a float.
	SampleRatio float64 `toml:"sample_ratio"`

	// MetricsInterval is how often metrics are pushed to the collector
	// with metrics "otlp".
	MetricsInterval Duration `toml:"metrics_interval"`

	// MetricsListen is the address that serves the metrics in the
	// Prometheus text format, at /metrics, as host:port written like
	// listen.imap. The endpoint has no authentication: keep it on a
	// loopback address or behind a firewall. Empty ("") means no such
	// endpoint.
	MetricsListen string `toml:"metrics_listen" means:"no Prometheus endpoint"`

	// RecordUser, when true, puts the user name on spans as the attribute
	// enduser.id. When false no span carries the user name (logs still
	// name users). SIGHUP applies a change.
	RecordUser bool `toml:"record_user"`
}

// Admin is the HTTP admin API, which answers in JSON on /healthz,
// /readyz, /settings, /sessions, /sessions/kick and /metrics, and which
// `imapguard who`, `imapguard kick` and `imapguard settings` talk to.
// listen takes effect at start; a reload (SIGHUP, POST /reload, imapguard
// reload) applies token and token_file.
type Admin struct {
	// Listen is the address the admin API listens on, as host:port
	// written like listen.imap. A host other than a loopback address
	// (127.0.0.0/8, ::1 or "localhost"; an empty host means all
	// addresses, so it is not loopback) requires token. Empty ("") means
	// no admin API.
	Listen string `toml:"listen" means:"no admin API"`

	// Token is the bearer token the admin API requires on every endpoint
	// except /healthz and /readyz, sent as "Authorization: Bearer TOKEN".
	// Empty means none is required, which is only allowed when listen is
	// a loopback address. Generate one with, for example,
	// "openssl rand -hex 32". It is a secret: -check and /settings show
	// it as "(redacted)", and messages about it do not quote it.
	Token string `toml:"token" means:"no token"`

	// TokenFile is a file holding the admin token, instead of token: the
	// whole file, a trailing newline removed, with the same rules as
	// token. It is how systemd credentials (LoadCredential=, then
	// "$CREDENTIALS_DIRECTORY/admin-token"), Kubernetes secrets and
	// Docker secrets provide a secret, and it keeps the token out of a
	// file that may be shared or versioned. It is read by -check, at
	// start and again on each reload, so replacing the file and sending
	// SIGHUP rotates the token. Setting both token and token_file is an
	// error. Example: token_file = "/etc/imapguard/admin-token".
	TokenFile string `toml:"token_file" means:"no token file: admin.token, if any"`
}

// ReadToken returns the admin token: Token, or the contents of TokenFile
// with one trailing newline ("\n" or "\r\n") removed. An error names
// admin.token_file and the file, never the token.
func (a Admin) ReadToken() (string, error) {
	if a.TokenFile == "" {
		return a.Token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("admin.token_file: %s is empty", a.TokenFile)
	}
	r := rules["admin.token"]
	if msg := r.check(s); msg != "" {
		return "", fmt.Errorf("admin.token_file: the token in %s: %s (valid %s)", a.TokenFile, msg, r.valid())
	}
	return s, nil
}

// Default returns a Config with every key set to its default. It is the one
// place the configuration's defaults are defined; those of the caps and
// timeouts are package limits' (limits/defaults.go), which the proxy
// also falls back to.
func Default() *Config {
	return &Config{
		Listen: Listen{
			IMAP: "127.0.0.1:1143",
		},
		Upstream: Upstream{
			Address:        "127.0.0.1:2143",
			ConnectTimeout: Duration(limits.DefaultConnectTimeout),
			LoginTimeout:   Duration(limits.DefaultLoginTimeout),
			TLS:            "none",
			ForwardClient:  "id",
			Route:          "single",
			HealthInterval: Duration(limits.DefaultHealthInterval),
			UnhealthyAfter: limits.DefaultUnhealthyAfter,
			HealthyAfter:   limits.DefaultHealthyAfter,
		},
		TLS: TLS{
			Mode: "off",
		},
		Cluster: Cluster{
			Store:        "local",
			LeaseTTL:     Duration(30 * time.Second),
			RedisFailure: "local",
		},
		Limits: Limits{
			MaxConnections:         limits.DefaultMaxConnections,
			EvictUnauthenticated:   true,
			MaxConnectionsPerIP:    limits.DefaultMaxConnectionsPerIP,
			MaxConnectionsPerUser:  limits.DefaultMaxConnectionsPerUser,
			IPv6PrefixLength:       limits.DefaultIPv6PrefixLength,
			MaxCommandSize:         limits.DefaultMaxCommandSize,
			PreauthTimeout:         Duration(limits.DefaultPreauthTimeout),
			IdleTimeout:            Duration(limits.DefaultIdleTimeout),
			MaxBadCommands:         limits.DefaultMaxBadCommands,
			MaxAuthFailures:        limits.DefaultMaxAuthFailures,
			AuthFailureWindow:      Duration(limits.DefaultAuthFailureWindow),
			MaxAuthFailuresPerIP:   limits.DefaultMaxAuthFailuresIP,
			MaxAuthFailuresPerUser: limits.DefaultMaxAuthFailuresUser,
			AuthFailureBlock:       Duration(limits.DefaultAuthFailureBlock),
			AuthFailureDelay:       Duration(limits.DefaultAuthFailureDelay),
			AuthTrackingEntries:    limits.DefaultAuthTrackingEntries,
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
		Telemetry: Telemetry{
			Traces:          "none",
			Metrics:         "none",
			SampleRatio:     1,
			MetricsInterval: Duration(60 * time.Second),
		},
		Shutdown: Shutdown{
			DrainTimeout:     Duration(30 * time.Second),
			DisconnectSpread: Duration(10 * time.Second),
		},
	}
}

// Setting is one effective configuration value.
type Setting struct {
	// Name is the dotted key, such as "limits.max_connections".
	Name string
	// Value is the value as it would be written in the file, without
	// quotes: "2147483647", "60s", "127.0.0.1:2143"; for a secret such as
	// admin.token, Redacted when it is set.
	Value string
}

// Redacted is the Value of a Setting whose key holds a secret (see
// secretKeys) and is set. An empty secret is shown as "".
const Redacted = "(redacted)"

// Settings returns every key with its effective value, in the order of the
// Config struct (which is also the order of default.toml). The effective
// value is the field's, except for tls.allow_plaintext_auth, which is
// TLS.PlaintextAuthAllowed: true with tls.mode "off" whatever the field
// says, and for secrets (admin.token), which are Redacted when set.
// Settings is what -check and the admin API's /settings show, so it never
// holds a secret.
func (c *Config) Settings() []Setting { return c.settings(true) }

// effectiveValues holds the keys whose value in effect depends on other
// keys, and how to compute it.
var effectiveValues = map[string]func(*Config) string{
	"tls.allow_plaintext_auth": func(c *Config) string { return strconv.FormatBool(c.TLS.PlaintextAuthAllowed()) },
}

// secretKeys holds the keys whose values are secrets: settings shows them
// as Redacted when set, and their rules quote no value in messages.
var secretKeys = map[string]bool{
	"admin.token":       true,
	"cluster.redis_url": true,
}

// settings returns every key with the value of its field or, with
// effective, its effective value. Secrets are Redacted either way, so
// that no path prints them.
func (c *Config) settings(effective bool) []Setting { return c.settingValues(effective, true) }

// settingValues is settings, with the secrets' values when not redact.
func (c *Config) settingValues(effective, redact bool) []Setting {
	v := reflect.ValueOf(c).Elem()
	out := make([]Setting, 0, len(schema.leaves))
	arrays := schema.arrays
	for j, l := range schema.leaves {
		for len(arrays) > 0 && arrays[0].after == j {
			out = appendEntries(out, &arrays[0], v)
			arrays = arrays[1:]
		}
		value := formatValue(v.FieldByIndex(l.index))
		if f := effectiveValues[l.key]; effective && f != nil {
			value = f(c)
		}
		if redact && secretKeys[l.key] && value != "" {
			value = Redacted
		}
		out = append(out, Setting{Name: l.key, Value: value})
	}
	for i := range arrays {
		out = appendEntries(out, &arrays[i], v)
	}
	return out
}

// ChangedKeys returns the names of the keys whose values differ between
// old and new, in the order of Settings. The entries of an array of
// tables are named by the array ("limits.override"), once. A secret is
// compared by its value but, like every key, only named: the result can
// be logged.
func ChangedKeys(old, new *Config) []string {
	values := func(c *Config) map[string]string {
		m := map[string]string{}
		for _, s := range c.settingValues(false, false) {
			m[s.Name] += s.Value + "\x00"
		}
		return m
	}
	a, b := values(old), values(new)
	changed := map[string]bool{}
	for _, m := range []map[string]string{a, b} {
		for k := range m {
			if a[k] != b[k] { // an entry only one has: "" and "value\x00"
				name, _, _ := strings.Cut(k, "[")
				changed[name] = true
			}
		}
	}
	// In the order of Settings: each array where its entries go.
	var out []string
	arrays := schema.arrays
	for j, l := range schema.leaves {
		for len(arrays) > 0 && arrays[0].after == j {
			if changed[arrays[0].key] {
				out = append(out, arrays[0].key)
			}
			arrays = arrays[1:]
		}
		if changed[l.key] {
			out = append(out, l.key)
		}
	}
	for _, a := range arrays {
		if changed[a.key] {
			out = append(out, a.key)
		}
	}
	return out
}

// appendEntries appends every key of every entry of the array of tables
// a, such as "limits.override[1].users".
func appendEntries(out []Setting, a *arrayTable, v reflect.Value) []Setting {
	entries := v.FieldByIndex(a.index)
	for i := range entries.Len() {
		for _, l := range a.leaves {
			out = append(out, Setting{Name: a.entryLeafKey(i, l), Value: formatValue(entries.Index(i).FieldByIndex(l.index))})
		}
	}
	return out
}

// formatValue formats one leaf field as it would be written in TOML, without
// quotes; an array as its elements separated by ", ".
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case int:
		return strconv.Itoa(x)
	case float64:
		return formatFloat(x)
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	case []string:
		return strings.Join(x, ", ")
	default:
		panic(fmt.Sprintf("config: no format for %T", x))
	}
}

// formatFloat formats x as a TOML float: with a decimal point ("1.0",
// "0.25"), never an exponent, and nan, inf and -inf as TOML spells them.
func formatFloat(x float64) string {
	switch {
	case math.IsNaN(x):
		return "nan"
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// WriteSettings writes Settings as one "name : value" line each, the names
// padded to a common width, arrays as their elements separated by ", ",
// and an empty value as nothing after the colon:
//
//	limits.max_connections   : 2147483647
//	limits.preauth_timeout   : 60s
//	tls.domains              : mail.example.com, imap.example.com
//	tls.email                :
func (c *Config) WriteSettings(w io.Writer) error { return WriteSettingList(w, c.Settings()) }

// WriteSettingList writes settings as WriteSettings does; imapguard
// settings writes those the admin API returns with it.
func WriteSettingList(w io.Writer, settings []Setting) error {
	width := 0
	for _, s := range settings {
		width = max(width, len(s.Name))
	}
	var b strings.Builder
	for _, s := range settings {
		b.WriteString(s.Name)
		b.WriteString(strings.Repeat(" ", width-len(s.Name)))
		b.WriteString(" :")
		if s.Value != "" {
			b.WriteString(" " + s.Value)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Validate checks every value of c against its valid range, and the keys
// that depend on each other (such as tls.mode "files" and tls.cert_file),
// and returns all problems, joined, each of the form "KEY: what is wrong
// (valid RANGE)" or, for keys that depend on each other, "KEY: what is
// wrong". A Config returned by Parse or Load is valid; Validate is for a
// Config changed or built in code, which should start from Default().
func (c *Config) Validate() error {
	v := reflect.ValueOf(c).Elem()
	var errs []error
	failed := map[string]bool{}
	for _, l := range schema.leaves {
		if msg := l.rule.check(v.FieldByIndex(l.index).Interface()); msg != "" {
			errs = append(errs, &problem{key: l.key, msg: msg + " (valid " + l.rule.valid() + ")"})
			failed[l.key] = true
		}
	}
	for _, a := range schema.arrays {
		entries := v.FieldByIndex(a.index)
		for i := range entries.Len() {
			bad := false
			for _, l := range a.leaves {
				if msg := l.rule.check(entries.Index(i).FieldByIndex(l.index).Interface()); msg != "" {
					errs = append(errs, &problem{key: a.entryLeafKey(i, l), msg: msg + " (valid " + l.rule.valid() + ")"})
					bad = true
				}
			}
			if !bad {
				for _, msg := range entryProblems(entries.Index(i)) {
					errs = append(errs, &problem{key: a.entryKey(i), msg: msg})
				}
			}
		}
	}
	for _, r := range relations(c) {
		if !r.dependsOnAny(failed) {
			errs = append(errs, &problem{key: r.key, msg: r.msg})
		}
	}
	return errors.Join(errs...)
}
