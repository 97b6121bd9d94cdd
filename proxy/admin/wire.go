package admin

import (
	"strings"
	"time"

	"github.com/imapguard/imapguard/proxy"
)

// The JSON bodies of the API, one definition shared by the server and its
// clients (cmd/imapguard's who, kick and settings).

// Health is the body of GET /healthz: {"status":"ok"}.
type Health struct {
	Status string `json:"status"`
}

// Readiness is the body of GET /readyz. Status is "ready" or "not
// ready"; Upstream is "ok" or "unreachable" (the reason is logged, not
// shown: the endpoint needs no token).
//
// While the proxy drains or shuts down, Status is "not ready", Draining
// true and Upstream "not checked".
type Readiness struct {
	Status    string   `json:"status"`
	Listeners []string `json:"listeners"`
	Upstream  string   `json:"upstream"`
	Draining  bool     `json:"draining,omitempty"`
}

// Backend is one of several upstreams ([[upstream.backend]], with
// upstream.route "hash" or "map"), as its health checks see it: State is
// "up" or "down"; Failures the failed probes in a row; LastProbe the
// time of the last probe (RFC 3339, UTC), absent before the first;
// LastError its error when it failed; Sessions the sessions relaying
// through it.
type Backend struct {
	Name      string     `json:"name"`
	Address   string     `json:"address"`
	Weight    float64    `json:"weight"`
	State     string     `json:"state"`
	Failures  int        `json:"failures"`
	LastProbe *time.Time `json:"last_probe,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	Sessions  int        `json:"sessions"`
}

// BackendList is the body of GET /backends: Route is upstream.route
// ("single", with no backends, when there is one upstream).
type BackendList struct {
	Route    string    `json:"route"`
	Backends []Backend `json:"backends"`
}

func backends(infos []proxy.BackendInfo) []Backend {
	out := make([]Backend, 0, len(infos))
	for _, i := range infos {
		b := Backend{Name: i.Name, Address: i.Address, Weight: i.Weight, State: i.State(),
			Failures: i.Failures, LastError: i.LastError, Sessions: i.Sessions}
		if !i.LastProbe.IsZero() {
			t := i.LastProbe.UTC()
			b.LastProbe = &t
		}
		out = append(out, b)
	}
	return out
}

// DrainRequest is the body of POST /drain: an empty JSON object, {}.
type DrainRequest struct{}

// DrainResult is the answer to POST /drain: Started is false when a
// drain was under way already; Connections is how many connections were
// open when it was asked.
type DrainResult struct {
	Status      string `json:"status"` // "draining"
	Started     bool   `json:"started"`
	Connections int    `json:"connections"`
}

// Setting is one effective configuration value: Name is the dotted key,
// such as "limits.max_connections", and Value the value as -check prints
// it, "(redacted)" for a secret that is set.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// SettingList is the body of GET /settings.
type SettingList struct {
	Settings []Setting `json:"settings"`
}

// Session is one live client connection.
type Session struct {
	// ID is the connection id on its instance; 0 for another instance's
	// session in a fleet-wide listing (Redis keeps no connection id).
	ID uint64 `json:"id"`
	// Instance is the imapguard instance (cluster.instance_id) holding
	// the session, in a fleet-wide answer; absent otherwise. Another
	// instance's session has only its user, client (the address key: an
	// IPv4 address, an IPv6 /64), state and since.
	Instance string `json:"instance,omitempty"`
	Client   string `json:"client"` // host:port
	// Via is the load balancer whose PROXY header gave Client, host:port;
	// absent without one.
	Via      string `json:"via,omitempty"`
	Listener string `json:"listener"` // the local address it came in on
	User     string `json:"user"`     // "" before authentication
	State    string `json:"state"`    // "preauth" or "authenticated"
	// Backend is the upstream backend the session relays to, with
	// upstream.route "hash" or "map"; absent otherwise.
	Backend string `json:"backend,omitempty"`
	TLS     bool   `json:"tls"`
	// Since is when the connection was accepted, in UTC.
	Since           time.Time `json:"since"`
	DurationSeconds float64   `json:"duration_seconds"`
	// Bytes relayed since login, each way; zero before authentication.
	BytesToUpstream int64 `json:"bytes_to_upstream"`
	BytesToClient   int64 `json:"bytes_to_client"`
}

// SessionList is the body of GET /sessions.
type SessionList struct {
	Count    int       `json:"count"`
	Sessions []Session `json:"sessions"`
	// Fleet is true when the list is the fleet's ([cluster] store =
	// "redis"); Note then says what it misses, if anything (Redis
	// unreachable: this instance's sessions only; a list cut at
	// fleet.MaxSessions).
	Fleet bool   `json:"fleet,omitempty"`
	Note  string `json:"note,omitempty"`
}

// KickRequest is the JSON body of POST /sessions/kick. User, Address or
// both must be set (see proxy.Match); Reason is the text after
// "* BYE [UNAVAILABLE] " ("" for the proxy's default).
type KickRequest struct {
	User    string `json:"user,omitempty"`
	Address string `json:"address,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// KickResult is the body of a successful POST /sessions/kick.
type KickResult struct {
	Count  int       `json:"count"`
	Kicked []Session `json:"kicked"`
	// Fleet is true when the kick went to every instance ([cluster]
	// store = "redis"); Note then says what it may have missed (Redis
	// unreachable: kicked on this instance only; instances that did
	// not answer in time).
	Fleet bool   `json:"fleet,omitempty"`
	Note  string `json:"note,omitempty"`
}

// Penalty is one key the brute-force defence tracks: a client address
// (Key a prefix such as "192.0.2.7/32" or "2001:db8::/64") or a user
// name (canonical: lower case).
type Penalty struct {
	Kind        string    `json:"kind"` // "address" or "user"
	Key         string    `json:"key"`
	Failures    int       `json:"failures"` // within auth_failure_window
	LastFailure time.Time `json:"last_failure"`
	Blocked     bool      `json:"blocked"`
	// BlockedUntil is when the block ends, in UTC; absent when not
	// blocked.
	BlockedUntil *time.Time `json:"blocked_until,omitempty"`
	// DelaySeconds is what the next login from this address waits
	// (auth_failure_delay, doubled); 0 for users.
	DelaySeconds float64 `json:"delay_seconds"`
}

// PenaltyList is the body of GET /penalties: addresses first, then
// users, each sorted by key.
type PenaltyList struct {
	Count     int       `json:"count"`
	Penalties []Penalty `json:"penalties"`
}

// ClearRequest is the JSON body of POST /penalties/clear: All alone, or
// Address (an IP address or a prefix), User, or both.
type ClearRequest struct {
	All     bool   `json:"all,omitempty"`
	Address string `json:"address,omitempty"`
	User    string `json:"user,omitempty"`
}

// ClearResult is the body of a successful POST /penalties/clear: how
// many tracked keys were forgotten.
type ClearResult struct {
	Cleared int `json:"cleared"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	// Problems lists, one a line, what is wrong with the configuration
	// file when POST /reload answers 422; absent otherwise.
	Problems []string `json:"problems,omitempty"`
}

// ReloadResult is the body of POST /reload's 200 answer: the file read
// ("" when running on the embedded demo configuration, which has nothing
// to re-read), the keys whose change was applied, and the changed keys
// that take effect only after a restart. Names only, never values.
type ReloadResult struct {
	File          string   `json:"file"`
	Changed       []string `json:"changed"`
	RestartNeeded []string `json:"restart_needed"`
}

// ReloadError is what Options.Reload returns for a configuration that
// was not applied (nothing changed): POST /reload answers 422 with the
// Problems, one a line.
type ReloadError struct {
	Problems []string
}

func (e *ReloadError) Error() string { return strings.Join(e.Problems, "\n") }

// sessions converts the proxy's view of connections at now; never nil, so
// that an empty list is [] and not null.
func sessions(infos []proxy.ConnInfo, now time.Time) []Session {
	out := make([]Session, 0, len(infos))
	for _, i := range infos {
		out = append(out, Session{
			ID: i.ID, Instance: i.Instance, Client: i.Client, Via: i.Via, Listener: i.Listener, User: i.User,
			State: i.State(), Backend: i.Backend, TLS: i.TLS,
			Since:           i.Since.UTC(),
			DurationSeconds: max(now.Sub(i.Since), 0).Seconds(),
			BytesToUpstream: i.BytesToUpstream, BytesToClient: i.BytesToClient,
		})
	}
	return out
}
