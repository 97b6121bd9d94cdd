// Package config reads imapguard's TOML configuration file.
//
// Every key is optional: an absent key takes its default (see Default and
// default.toml). A key that is present must hold a valid value; zero is
// not a shorthand for the default. Unknown keys and tables are errors, so
// that a misspelt key is reported instead of silently ignored. Parse
// reports all problems of a file at once, one per line, each of the form
//
//	FILE:LINE: KEY: what is wrong (valid RANGE)
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// DefaultTOML is a configuration file that sets every key to its default,
// with a comment for each. Parsing it yields Default().
//
//go:embed default.toml
var DefaultTOML []byte

// Config is the whole configuration file.
type Config struct {
	// Listen is the "listen" table: where clients connect.
	Listen Listen `toml:"listen"`
	// Upstream is the "upstream" table: the IMAP server behind the proxy.
	Upstream Upstream `toml:"upstream"`
	// Limits is the "limits" table: caps on connections, commands and time.
	Limits Limits `toml:"limits"`
	// Log is the "log" table: what the proxy logs and how.
	Log Log `toml:"log"`
}

// Listen is the "listen" table.
type Listen struct {
	// IMAP is the address the proxy accepts IMAP client connections on,
	// as host:port. The host may be an IP address or a name; an empty host
	// (":1143") listens on all addresses of the machine. IPv6 addresses go
	// in brackets ("[::1]:1143"). Port 0 lets the system pick a free port,
	// which is only useful in tests.
	//
	// Default: 127.0.0.1:1143. Valid: host:port, host may be empty, port 0 .. 65535.
	IMAP string `toml:"imap"`
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

// Default returns a Config with every key set to its default. It is the one
// place defaults are defined.
func Default() *Config {
	return &Config{
		Listen: Listen{
			IMAP: "127.0.0.1:1143",
		},
		Upstream: Upstream{
			Address:        "127.0.0.1:2143",
			ConnectTimeout: Duration(5 * time.Second),
			LoginTimeout:   Duration(30 * time.Second),
		},
		Limits: Limits{
			MaxConnections:        2147483647,
			MaxConnectionsPerIP:   2147483647,
			MaxConnectionsPerUser: 16,
			IPv6PrefixLength:      64,
			MaxCommandSize:        10240,
			PreauthTimeout:        Duration(60 * time.Second),
			IdleTimeout:           Duration(30 * time.Minute),
			MaxBadCommands:        3,
			MaxAuthFailures:       3,
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
	}
}

// Setting is one effective configuration value.
type Setting struct {
	// Name is the dotted key, such as "limits.max_connections".
	Name string
	// Value is the value as it would be written in the file, without
	// quotes: "2147483647", "60s", "127.0.0.1:2143".
	Value string
}

// Settings returns every key with its effective value, in the order of the
// Config struct (which is also the order of default.toml).
func (c *Config) Settings() []Setting {
	v := reflect.ValueOf(c).Elem()
	out := make([]Setting, 0, len(schema.leaves))
	for _, l := range schema.leaves {
		out = append(out, Setting{Name: l.key, Value: formatValue(v.FieldByIndex(l.index))})
	}
	return out
}

// formatValue formats one leaf field as it would be written in TOML, without
// quotes.
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case int:
		return strconv.Itoa(x)
	case string:
		return x
	default:
		panic(fmt.Sprintf("config: no format for %T", x))
	}
}

// WriteSettings writes Settings as one "name : value" line each, the names
// padded to a common width:
//
//	limits.max_connections   : 2147483647
//	limits.preauth_timeout   : 60s
func (c *Config) WriteSettings(w io.Writer) error {
	settings := c.Settings()
	width := 0
	for _, s := range settings {
		width = max(width, len(s.Name))
	}
	var b strings.Builder
	for _, s := range settings {
		b.WriteString(s.Name)
		b.WriteString(strings.Repeat(" ", width-len(s.Name)))
		b.WriteString(" : ")
		b.WriteString(s.Value)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Validate checks every value of c against its valid range and returns all
// problems, joined, each of the form "KEY: what is wrong (valid RANGE)". A
// Config returned by Parse or Load is valid; Validate is for a Config
// changed or built in code, which should start from Default().
func (c *Config) Validate() error {
	v := reflect.ValueOf(c).Elem()
	var errs []error
	for _, l := range schema.leaves {
		if msg := l.rule.check(v.FieldByIndex(l.index).Interface()); msg != "" {
			errs = append(errs, &problem{key: l.key, msg: msg + " (valid " + l.rule.valid() + ")"})
		}
	}
	return errors.Join(errs...)
}
