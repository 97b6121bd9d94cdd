// Package config reads imapguard's TOML configuration file.
//
// Every key is optional: an absent key takes its default (see Default and
// default.toml). A key that is present must hold a valid value; zero is
// not a shorthand for the default. Unknown keys and tables are errors, so
// that a misspelt key is reported instead of silently ignored. Parse
// reports all problems of a file at once, one per line, each of the form
//
//	FILE:LINE: KEY: what is wrong (valid RANGE)
//
// or, for keys that depend on each other (tls.mode "files" requires
// tls.cert_file), "FILE:LINE: KEY: what is wrong".
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// DefaultTOML is a configuration file that sets every key to its default,
// with a comment for each. Parsing it yields Default().
//
//go:embed default.toml
var DefaultTOML []byte

// DemoTOML is the configuration imapguard runs with when it is given no
// file (make run): loopback, the bundled upstream, a self-signed
// certificate for imaps and STARTTLS.
//
//go:embed demo.toml
var DemoTOML []byte

// Config is the whole configuration file.
type Config struct {
	// Listen is the "listen" table: where clients connect.
	Listen Listen `toml:"listen"`
	// Upstream is the "upstream" table: the IMAP server behind the proxy.
	Upstream Upstream `toml:"upstream"`
	// TLS is the "tls" table: the certificate the proxy presents to clients.
	TLS TLS `toml:"tls"`
	// Limits is the "limits" table: caps on connections, commands and time.
	Limits Limits `toml:"limits"`
	// Log is the "log" table: what the proxy logs and how.
	Log Log `toml:"log"`
	// Telemetry is the "telemetry" table: traces and metrics.
	Telemetry Telemetry `toml:"telemetry"`
	// Admin is the "admin" table: the HTTP admin API.
	Admin Admin `toml:"admin"`
}

// Listen is the "listen" table.
type Listen struct {
	// IMAP is the address the proxy accepts IMAP client connections on,
	// as host:port. Clients connect in plaintext here and, when tls.mode is
	// not "off", may switch to TLS with STARTTLS. The host may be an IP
	// address or a name; an empty host (":1143") listens on all addresses
	// of the machine. IPv6 addresses go in brackets ("[::1]:1143"). Port 0
	// lets the system pick a free port, which is only useful in tests.
	// Empty ("") means no such listener, for a proxy that accepts only
	// implicit TLS on imaps; imap and imaps cannot both be empty.
	//
	// Default: 127.0.0.1:1143. Valid: host:port, host may be empty, port 0 .. 65535, or empty.
	IMAP string `toml:"imap"`

	// IMAPS is the address the proxy accepts implicit TLS connections on
	// (RFC 8314: TLS from the first byte, the usual port is 993), as
	// host:port, written like imap. It needs a certificate, so tls.mode
	// must not be "off". Empty ("") means no such listener.
	//
	// Default: "" (no implicit TLS listener). Valid: host:port, host may be empty, port 0 .. 65535, or empty.
	IMAPS string `toml:"imaps"`
}

// Upstream is the "upstream" table.
type Upstream struct {
	// Address is the IMAP server the proxy forwards clients to, as
	// host:port. The proxy logs in there with the credentials each client
	// presents. IPv6 addresses go in brackets ("[2001:db8::1]:143").
	//
	// Default: 127.0.0.1:2143. Valid: host:port, port 1 .. 65535.
	Address string `toml:"address"`

	// ConnectTimeout is how long the proxy waits for the TCP connection to
	// the upstream server to be established. If it is not, the client's
	// login fails.
	//
	// Default: 5s. Valid: 100ms .. 5m.
	ConnectTimeout Duration `toml:"connect_timeout"`

	// LoginTimeout is how long the upstream server may take from its
	// greeting to the tagged answer of the client's LOGIN or AUTHENTICATE
	// command. If it answers later, the client's login fails. Some servers
	// delay failed logins on purpose (Dovecot by 2 seconds), so keep this
	// well above such delays.
	//
	// Default: 30s. Valid: 1s .. 5m.
	LoginTimeout Duration `toml:"login_timeout"`

	// TLS is how the proxy protects its connection to the upstream
	// server: "none" (plaintext; only for an upstream on the same machine
	// or a trusted network), "starttls" (connect in plaintext, then
	// switch to TLS with STARTTLS before logging in; the login fails if
	// the server does not offer it) or "implicit" (TLS from the first
	// byte, as on port 993). With "starttls" and "implicit" the server's
	// certificate is verified.
	//
	// Default: none. Valid: none, starttls, implicit.
	TLS string `toml:"tls"`

	// ServerName is the name the upstream server's certificate is
	// verified against, and sent in the TLS handshake (SNI). Set it when
	// address holds an IP address or a name other than the one in the
	// certificate. Only allowed when tls is not "none".
	//
	// Default: "" (the host part of address). Valid: a DNS name or IP address, or empty.
	ServerName string `toml:"server_name"`

	// CAFile is a PEM file with the CA certificates that the upstream
	// server's certificate must chain to, instead of the system's trusted
	// roots; for an upstream with a private or self-signed certificate.
	// Only allowed when tls is not "none".
	//
	// Default: "" (the system's trusted roots). Valid: a path, or empty.
	CAFile string `toml:"ca_file"`

	// InsecureSkipVerify, when true, accepts any certificate from the
	// upstream server without verifying it. The connection is then
	// encrypted but not authenticated: anyone who can intercept it can
	// read the users' passwords. Prefer ca_file. Only allowed when tls is
	// not "none".
	//
	// Default: false. Valid: true, false.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`

	// CertFile is a PEM file with a client certificate (and its chain)
	// that the proxy presents to the upstream server, for servers that
	// require one. Set it together with key_file, or neither. Only allowed
	// when tls is not "none".
	//
	// Default: "" (no client certificate). Valid: a path, or empty.
	CertFile string `toml:"cert_file"`

	// KeyFile is a PEM file with the private key of cert_file. Set it
	// together with cert_file, or neither. Only allowed when tls is not
	// "none".
	//
	// Default: "" (no client certificate). Valid: a path, or empty.
	KeyFile string `toml:"key_file"`
}

// TLS is the "tls" table: the certificate the proxy presents to clients,
// on listen.imaps and after STARTTLS on listen.imap.
type TLS struct {
	// Mode is where the certificate comes from: "off" (no TLS: the proxy
	// offers no STARTTLS, listen.imaps cannot be used, and clients log in
	// over plaintext), "files" (read from cert_file and key_file),
	// "acme" (obtained and renewed automatically from an ACME certificate
	// authority such as Let's Encrypt, for the names in domains) or
	// "self_signed" (generated at start for self_signed_names; clients
	// will warn about it, so only for tests and private setups).
	//
	// Default: off. Valid: off, files, acme, self_signed.
	Mode string `toml:"mode"`

	// CertFile is a PEM file with the certificate followed by its
	// intermediate certificates. Required with mode "files", and only
	// allowed then. Whether the file exists and matches key_file is
	// checked when imapguard starts, not by -check.
	//
	// Default: "". Valid: a path, or empty.
	CertFile string `toml:"cert_file"`

	// KeyFile is a PEM file with the private key of cert_file. Required
	// with mode "files", and only allowed then. Keep it readable only by
	// the user imapguard runs as.
	//
	// Default: "". Valid: a path, or empty.
	KeyFile string `toml:"key_file"`

	// Domains are the names to obtain certificates for with mode "acme",
	// such as ["mail.example.com", "imap.example.com"]. Each must resolve
	// to this machine, which must be reachable from the internet on port
	// 80 or 443 (see http_challenge_port) for the certificate authority
	// to check it. Wildcard names are not supported. Required with mode
	// "acme" unless on_demand is true.
	//
	// Default: []. Valid: DNS names.
	Domains []string `toml:"domains"`

	// Email is the contact address given to the ACME certificate
	// authority when the account is created; Let's Encrypt no longer
	// sends expiry warnings, but other authorities may write to it.
	//
	// Default: "" (no contact address). Valid: an e-mail address, or empty.
	Email string `toml:"email"`

	// CA is the directory URL of the ACME certificate authority, such as
	// "https://acme-staging-v02.api.letsencrypt.org/directory" for Let's
	// Encrypt's staging environment, which has higher rate limits and is
	// meant for trying out a setup.
	//
	// Default: "" (Let's Encrypt's production environment). Valid: an https:// URL, or empty.
	CA string `toml:"ca"`

	// CARoot is a PEM file with the root certificate of the ACME
	// certificate authority's own HTTPS server, for a private authority
	// whose server certificate is not trusted by the system.
	//
	// Default: "" (the system's trusted roots). Valid: a path, or empty.
	CARoot string `toml:"ca_root"`

	// Storage is the directory where ACME accounts, certificates and keys
	// are kept, so that they survive restarts. It must be writable by
	// the user imapguard runs as; keep it private.
	//
	// Default: "" (certmagic's default, a "certmagic" directory under $XDG_DATA_HOME or ~/.local/share). Valid: a path, or empty.
	Storage string `toml:"storage"`

	// HTTPChallengePort is the port on which the proxy answers the ACME
	// HTTP-01 challenge. The certificate authority always connects to
	// port 80; set another port only when port 80 is forwarded there.
	//
	// Default: 0 (port 80). Valid: 0 .. 65535.
	HTTPChallengePort int `toml:"http_challenge_port"`

	// TLSALPNChallengePort is the port on which the proxy answers the
	// ACME TLS-ALPN-01 challenge. The certificate authority always
	// connects to port 443; set another port only when port 443 is
	// forwarded there.
	//
	// Default: 0 (port 443). Valid: 0 .. 65535.
	TLSALPNChallengePort int `toml:"tls_alpn_challenge_port"`

	// OnDemand, when true, obtains a certificate during the first TLS
	// handshake that asks for a name (SNI) not yet covered, instead of
	// only for domains at start. To stop clients from making the proxy
	// request certificates for arbitrary names, it requires
	// on_demand_domains or on_demand_permission_url (or both: a name
	// must then pass both). Only allowed with mode "acme".
	//
	// Default: false. Valid: true, false.
	OnDemand bool `toml:"on_demand"`

	// OnDemandDomains are the names for which on_demand may obtain
	// certificates. A name "*.example.com" allows every name one label
	// below example.com, such as "mail.example.com".
	//
	// Default: []. Valid: DNS names, or wildcards such as *.example.com.
	OnDemandDomains []string `toml:"on_demand_domains"`

	// OnDemandPermissionURL is asked before on_demand obtains a
	// certificate: the proxy sends a GET request with "?domain=NAME"
	// added, and goes ahead only if the answer has status 200.
	//
	// Default: "" (not asked). Valid: an http:// or https:// URL, or empty.
	OnDemandPermissionURL string `toml:"on_demand_permission_url"`

	// SelfSignedNames are the DNS names and IP addresses that the
	// certificate of mode "self_signed" is made for.
	//
	// Default: [] (localhost, 127.0.0.1 and ::1). Valid: DNS names, wildcards such as *.example.com, or IP addresses.
	SelfSignedNames []string `toml:"self_signed_names"`

	// AllowPlaintextAuth, when true, lets clients log in (LOGIN and
	// AUTHENTICATE) on listen.imap before they have switched to TLS with
	// STARTTLS, sending their password in plaintext. When false, they
	// must switch to TLS first. With mode
	// "off" there is no TLS, so plaintext login is always allowed whatever
	// this key says, and -check shows true; use PlaintextAuthAllowed for
	// the value in effect.
	//
	// Default: false (with mode "off": true regardless). Valid: true, false.
	AllowPlaintextAuth bool `toml:"allow_plaintext_auth"`
}

// PlaintextAuthAllowed reports whether clients may log in without TLS:
// always with mode "off", otherwise as allow_plaintext_auth says. -check
// prints this value for tls.allow_plaintext_auth.
func (t TLS) PlaintextAuthAllowed() bool {
	return t.Mode == "off" || t.AllowPlaintextAuth
}

// Limits is the "limits" table. The connection limits and timeouts are
// modelled on the IMAP4 settings of Exchange Server 2013
// (Set-ImapSettings) and have the same defaults.
type Limits struct {
	// MaxConnections is the maximum number of client connections open at
	// the same time, from all clients together, authenticated or not.
	// Further connections are refused until one closes. Exchange:
	// MaxConnections.
	//
	// Default: 2147483647 (no practical limit). Valid: 1 .. 2147483647.
	MaxConnections int `toml:"max_connections"`

	// MaxConnectionsPerIP is the maximum number of client connections open
	// at the same time from one client address, authenticated or not.
	// IPv6 clients are grouped by network prefix, see IPv6PrefixLength.
	// Further connections from that address are refused until one closes.
	// Exchange: MaxConnectionFromSingleIP.
	//
	// Default: 2147483647 (no practical limit). Valid: 1 .. 2147483647.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`

	// MaxConnectionsPerUser is the maximum number of authenticated
	// sessions of one user at the same time, from all addresses together.
	// User names are compared case-insensitively. A login beyond the limit
	// is refused. Exchange: MaxConnectionsPerUser.
	//
	// Default: 16. Valid: 1 .. 2147483647.
	MaxConnectionsPerUser int `toml:"max_connections_per_user"`

	// IPv6PrefixLength is the length, in bits, of the network prefix by
	// which IPv6 clients are grouped for max_connections_per_ip. A single
	// IPv6 client usually holds a whole /64 network, so counting single
	// addresses would let it open unlimited connections. Use 128 to count
	// every IPv6 address separately. IPv4 clients are always counted by
	// their single address.
	//
	// Default: 64. Valid: 32 .. 128.
	IPv6PrefixLength int `toml:"ipv6_prefix_length"`

	// MaxCommandSize is the maximum size in bytes of one client command,
	// before and after authentication. Longer commands are rejected and
	// not forwarded to the upstream server. Exchange: MaxCommandSize.
	//
	// Default: 10240. Valid: 1024 .. 1048576.
	MaxCommandSize int `toml:"max_command_size"`

	// PreauthTimeout is how long a client connection may stay
	// unauthenticated. A connection that has not logged in by then is
	// closed. Exchange: PreAuthenticatedConnectionTimeout.
	//
	// Default: 1m. Valid: 30s .. 1h.
	PreauthTimeout Duration `toml:"preauth_timeout"`

	// IdleTimeout is how long an authenticated session may stay idle,
	// with no traffic in either direction, before it is closed (with a
	// BYE at a response boundary). RFC 9051 asks
	// servers to allow at least 30 minutes, because clients waiting in
	// IDLE renew it only about every 29 minutes; lower values disconnect
	// such clients. Exchange: AuthenticatedConnectionTimeout.
	//
	// Default: 30m. Valid: 30s .. 24h.
	IdleTimeout Duration `toml:"idle_timeout"`

	// MaxBadCommands is the number of invalid commands a client may send
	// before authentication; at that many the connection is closed. This
	// stops cross-protocol attacks (such as ALPACA) that send other
	// protocols' traffic to the IMAP port.
	//
	// Default: 3. Valid: 1 .. 100.
	MaxBadCommands int `toml:"max_bad_commands"`

	// MaxAuthFailures is the number of failed authentications (LOGIN or
	// AUTHENTICATE) allowed on one connection; at that many the connection
	// is closed. This slows down password guessing.
	//
	// Default: 3. Valid: 1 .. 100.
	MaxAuthFailures int `toml:"max_auth_failures"`
}

// Log is the "log" table.
type Log struct {
	// Level is the least severe level of log messages that are written,
	// from most to least verbose: "debug", "info", "warn" or "error".
	//
	// Default: info. Valid: debug, info, warn, error.
	Level string `toml:"level"`

	// Format is the format of log lines: "text" for people to read, or
	// "json", one JSON object per line, for log collectors.
	//
	// Default: text. Valid: text, json.
	Format string `toml:"format"`
}

// Telemetry is the "telemetry" table: OpenTelemetry traces and metrics,
// and a Prometheus endpoint. Its keys take effect at start, except
// record_user, which SIGHUP also applies.
type Telemetry struct {
	// Traces is where spans go: "none" (nowhere), "stdout" (as JSON
	// lines on standard output) or "otlp" (to an OTLP collector, see
	// otlp_endpoint).
	//
	// Default: none. Valid: none, stdout, otlp.
	Traces string `toml:"traces"`

	// Metrics is whether metrics are also pushed to an OTLP collector
	// ("otlp") every metrics_interval, or not ("none"). The Prometheus
	// endpoint of metrics_listen does not depend on it.
	//
	// Default: none. Valid: none, otlp.
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
	//
	// Default: "" (the OTEL_EXPORTER_OTLP_* environment variables, else localhost). Valid: host:port, port 1 .. 65535, an http:// or https:// URL, or empty.
	OTLPEndpoint string `toml:"otlp_endpoint"`

	// OTLPProtocol is how traces and metrics are sent to the collector:
	// "grpc" or "http/protobuf". Empty means the environment variables
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL,
	// else "http/protobuf", the OpenTelemetry specification's default.
	//
	// Default: "" (the OTEL_EXPORTER_OTLP_*PROTOCOL environment variables, else http/protobuf). Valid: grpc, http/protobuf, or empty.
	OTLPProtocol string `toml:"otlp_protocol"`

	// OTLPInsecure, when true, talks to the collector in plaintext,
	// without TLS, when otlp_endpoint is host:port. An
	// http:// URL is plaintext anyway, and an https:// URL always uses
	// TLS.
	//
	// Default: false. Valid: true, false.
	OTLPInsecure bool `toml:"otlp_insecure"`

	// SampleRatio is the fraction of client connections that are traced:
	// 0 traces none, 1 traces all. The sampler is parent-based with a
	// trace ID ratio. The environment variable OTEL_TRACES_SAMPLER, when
	// set, wins over this key. An integer (0 or 1) is accepted as well as
	// a float.
	//
	// Default: 1.0. Valid: 0.0 .. 1.0.
	SampleRatio float64 `toml:"sample_ratio"`

	// MetricsInterval is how often metrics are pushed to the collector
	// with metrics "otlp".
	//
	// Default: 1m. Valid: 1s .. 1h.
	MetricsInterval Duration `toml:"metrics_interval"`

	// MetricsListen is the address that serves the metrics in the
	// Prometheus text format, at /metrics, as host:port written like
	// listen.imap. The endpoint has no authentication: keep it on a
	// loopback address or behind a firewall. Empty ("") means no such
	// endpoint.
	//
	// Default: "" (no Prometheus endpoint). Valid: host:port, host may be empty, port 0 .. 65535, or empty.
	MetricsListen string `toml:"metrics_listen"`

	// RecordUser, when true, puts the user name on spans as the attribute
	// enduser.id. When false no span carries the user name (logs still
	// name users). SIGHUP applies a change.
	//
	// Default: false. Valid: true, false.
	RecordUser bool `toml:"record_user"`
}

// Admin is the "admin" table: the HTTP admin API, which answers in JSON on
// /healthz, /readyz, /settings, /sessions, /sessions/kick and /metrics,
// and which `imapguard who`, `imapguard kick` and `imapguard settings`
// talk to. Its keys take effect at start.
type Admin struct {
	// Listen is the address the admin API listens on, as host:port
	// written like listen.imap. A host other than a loopback address
	// (127.0.0.0/8, ::1 or "localhost"; an empty host means all
	// addresses, so it is not loopback) requires token. Empty ("") means
	// no admin API.
	//
	// Default: "" (no admin API). Valid: host:port, host may be empty, port 0 .. 65535, or empty.
	Listen string `toml:"listen"`

	// Token is the bearer token the admin API requires on every endpoint
	// except /healthz and /readyz, sent as "Authorization: Bearer TOKEN".
	// Empty means none is required, which is only allowed when listen is
	// a loopback address. Generate one with, for example,
	// "openssl rand -hex 32". It is a secret: -check and /settings show
	// it as "(redacted)", and messages about it do not quote it.
	//
	// Default: "" (no token). Valid: 16 .. 256 printable ASCII characters without spaces, or empty.
	Token string `toml:"token"`
}

// Default returns a Config with every key set to its default. It is the one
// place defaults are defined.
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
		},
		TLS: TLS{
			Mode: "off",
		},
		Limits: Limits{
			MaxConnections:        limits.DefaultMaxConnections,
			MaxConnectionsPerIP:   limits.DefaultMaxConnectionsPerIP,
			MaxConnectionsPerUser: limits.DefaultMaxConnectionsPerUser,
			IPv6PrefixLength:      limits.DefaultIPv6PrefixLength,
			MaxCommandSize:        limits.DefaultMaxCommandSize,
			PreauthTimeout:        Duration(limits.DefaultPreauthTimeout),
			IdleTimeout:           Duration(limits.DefaultIdleTimeout),
			MaxBadCommands:        limits.DefaultMaxBadCommands,
			MaxAuthFailures:       limits.DefaultMaxAuthFailures,
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
	"admin.token": true,
}

// settings returns every key with the value of its field or, with
// effective, its effective value. Secrets are Redacted either way, so
// that no path prints them.
func (c *Config) settings(effective bool) []Setting {
	v := reflect.ValueOf(c).Elem()
	out := make([]Setting, 0, len(schema.leaves))
	for _, l := range schema.leaves {
		value := formatValue(v.FieldByIndex(l.index))
		if f := effectiveValues[l.key]; effective && f != nil {
			value = f(c)
		}
		if secretKeys[l.key] && value != "" {
			value = Redacted
		}
		out = append(out, Setting{Name: l.key, Value: value})
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
	for _, r := range relations(c) {
		if !r.dependsOnAny(failed) {
			errs = append(errs, &problem{key: r.key, msg: r.msg})
		}
	}
	return errors.Join(errs...)
}
