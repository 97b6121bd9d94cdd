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
	// Performance is the [performance] table.
	Performance Performance `toml:"performance"`
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
		Performance: Performance{
			Relay: "auto",
		},
	}
}
