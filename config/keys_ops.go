package config

import (
	"fmt"
	"os"
	"strings"
)

// The [log], [telemetry] and [admin] tables: how the proxy is watched
// and operated.

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

// Performance chooses how authenticated sessions are relayed, and what
// the proxy spends on each connection's sockets. Changes take effect
// after a restart. proxy/README.md ("The event-loop relay") describes
// both relays and what each costs.
type Performance struct {
	// Relay is how an authenticated session's bytes are relayed. "loop":
	// plaintext sessions (client and upstream both without TLS) are taken
	// over by a few event loops, each one goroutine locked to a thread
	// running edge-triggered epoll over the raw sockets of its sessions,
	// with one timer heap per loop for idle_timeout; an idle session then
	// holds no goroutine, no buffer and no timer of its own. Sessions with
	// TLS on either side keep the goroutine relay. "goroutines": every
	// session is relayed by one goroutine per direction, parked while
	// idle, as before the event loop existed. "auto" (the default) is
	// "loop" on Linux and "goroutines" elsewhere; the environment
	// variable IMAPGUARD_RELAY ("loop" or "goroutines") overrides "auto"
	// only, which is how the test suite runs under both.
	Relay string `toml:"relay"`

	// EventLoops is the number of event loops for relay = "loop". 0 (the
	// default) means one per four CPUs the process may use, at least one:
	// one loop on a machine of up to 4 cores, where the loop's thread
	// shares the cores with the upstream and the system's network work,
	// and a second loop would add thread hand-offs more than capacity;
	// more on larger machines. One loop relays tens of thousands of
	// NOOPs a second (test/bench/README.md).
	EventLoops int `toml:"event_loops" means:"one per four CPUs, at least one"`

	// UpstreamKeepAlive turns TCP keep-alive on for the connections to the
	// upstream: after this long without traffic the kernel probes the
	// upstream, again at this interval, and drops the connection after 9
	// unanswered probes. "0s" (the default) leaves it off: the upstream is
	// a server on a network the operator runs, idle_timeout ends every
	// session that goes quiet, and a dead upstream is found by the next
	// command relayed to it; keep-alive would cost four system calls
	// (setsockopt) on every login's upstream connection. Turn it on (such
	// as "60s") when a firewall or NAT between the proxy and the upstream
	// drops connections that stay idle, such as IDLE sessions waiting for
	// mail. Keep-alive towards clients is always on (probes after 15 s,
	// every 15 s, 9 of them), set once on the listening sockets, which the
	// accepted connections inherit on Linux.
	UpstreamKeepAlive Duration `toml:"upstream_keepalive" means:"off"`
}
