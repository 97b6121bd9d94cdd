// Package limits counts connections and sessions against the caps an
// operator configures: all connections, connections from one client
// address, and authenticated sessions of one user. It is modelled on the
// IMAP4 connection limits of Exchange Server 2013 (MaxConnections,
// MaxConnectionFromSingleIP, MaxConnectionsPerUser).
//
// A Limiter never blocks: an acquire either succeeds at once and returns an
// idempotent release function, or fails with an *Error naming the limit and
// its value. Map entries are deleted as soon as their count reaches zero, so
// the Limiter's memory follows the live connections, not their history.
//
// A Tracker (authfail.go) is the other kind of state: the history of
// failed logins across connections, for the brute-force defence, kept in
// bounded LRU caches (github.com/hashicorp/golang-lru/v2) because it
// outlives the connections.
package limits

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// Options are the caps. A zero field means its default.
type Options struct {
	MaxConnections        int // all connections, authenticated or not
	MaxConnectionsPerIP   int // all connections from one client address
	MaxConnectionsPerUser int // authenticated sessions of one user
	// IPv6PrefixLength groups IPv6 client addresses for the per-address cap:
	// clients usually hold a whole /64, so counting single addresses would
	// let one client open unlimited connections.
	IPv6PrefixLength int
}

func (o Options) withDefaults() Options {
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if o.MaxConnectionsPerUser <= 0 {
		o.MaxConnectionsPerUser = DefaultMaxConnectionsPerUser
	}
	if o.IPv6PrefixLength <= 0 || o.IPv6PrefixLength > 128 {
		o.IPv6PrefixLength = DefaultIPv6PrefixLength
	}
	return o
}

// ErrLimit is matched by every *Error with errors.Is.
var ErrLimit = errors.New("limits: limit reached")

// Error says which limit refused an acquire. Its text names the limit's
// configuration key and value, as Dovecot does, because mail clients tend
// to show a bare refusal as "wrong password".
type Error struct {
	Limit string // configuration key: "max_connections", ...
	Value int    // the cap in force
	Count int    // the count the refused acquire found (at least Value)
}

func (e *Error) Error() string {
	var what string
	switch e.Limit {
	case "max_connections":
		what = "Too many connections"
	case "max_connections_per_ip":
		what = "Too many connections from your address"
	case "max_connections_per_user":
		what = "Too many connections for this user"
	case "max_auth_failures_per_ip", "max_auth_failures_per_user":
		what = "Too many failed logins, try again later"
	default:
		what = "Limit reached"
	}
	return fmt.Sprintf("%s (%s=%d)", what, e.Limit, e.Value)
}

func (e *Error) Is(target error) bool { return target == ErrLimit }

// Limiter counts live connections and sessions. The zero value is not
// usable; call New.
type Limiter struct {
	mu    sync.Mutex
	opts  Options
	conns int
	perIP map[netip.Prefix]int
	users map[string]int
}

// New returns a Limiter enforcing opts.
func New(opts Options) *Limiter {
	return &Limiter{
		opts:  opts.withDefaults(),
		perIP: make(map[netip.Prefix]int),
		users: make(map[string]int),
	}
}

// SetOptions changes the caps in force. Connections already counted stay;
// a lowered cap only refuses new acquires until the counts fall below it.
func (l *Limiter) SetOptions(opts Options) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts = opts.withDefaults()
}

// Options returns the caps in force, defaults filled in.
func (l *Limiter) Options() Options {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts
}

// AddrKey returns the key an address is counted under: IPv4-mapped IPv6
// addresses are unmapped, IPv6 addresses are grouped by prefix, zones are
// dropped.
func AddrKey(addr netip.Addr, ipv6PrefixLength int) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = ipv6PrefixLength
	}
	p, err := addr.Prefix(bits)
	if err != nil { // invalid address: count all such together
		return netip.Prefix{}
	}
	return p
}

// UserKey canonicalises a username for counting: compared
// case-insensitively, surrounding white space ignored.
func UserKey(user string) string {
	return strings.ToLower(strings.TrimSpace(user))
}

// Check is one limit consulted by an acquire: the limit's configuration
// key, the count it found (before adding the new connection) and the cap.
// Tracing records them as span events.
type Check struct {
	Limit string
	Count int
	Max   int
}

// AdmitConn counts one connection from addr against max_connections and
// max_connections_per_ip, both or neither. The release function returned
// on success may be called any number of times; it uncounts once. It also
// returns the checks it made, in order; on refusal the last one is the
// limit that refused.
func (l *Limiter) AdmitConn(addr netip.Addr) (release func(), checks []Check, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := AddrKey(addr, l.opts.IPv6PrefixLength)
	checks = append(make([]Check, 0, 2), Check{"max_connections", l.conns, l.opts.MaxConnections})
	if l.conns >= l.opts.MaxConnections {
		return nil, checks, &Error{Limit: "max_connections", Value: l.opts.MaxConnections, Count: l.conns}
	}
	checks = append(checks, Check{"max_connections_per_ip", l.perIP[key], l.opts.MaxConnectionsPerIP})
	if l.perIP[key] >= l.opts.MaxConnectionsPerIP {
		return nil, checks, &Error{Limit: "max_connections_per_ip", Value: l.opts.MaxConnectionsPerIP, Count: l.perIP[key]}
	}
	l.conns++
	l.perIP[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.conns--
			if l.perIP[key]--; l.perIP[key] <= 0 {
				delete(l.perIP, key)
			}
		})
	}, checks, nil
}

// AdmitUser counts one authenticated session of user against
// max_connections_per_user, and returns the check it made. The release
// function works as AdmitConn's.
func (l *Limiter) AdmitUser(user string) (release func(), check Check, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := UserKey(user)
	check = Check{"max_connections_per_user", l.users[key], l.opts.MaxConnectionsPerUser}
	if l.users[key] >= l.opts.MaxConnectionsPerUser {
		return nil, check, &Error{Limit: "max_connections_per_user", Value: l.opts.MaxConnectionsPerUser, Count: l.users[key]}
	}
	l.users[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.users[key]--; l.users[key] <= 0 {
				delete(l.users, key)
			}
		})
	}, check, nil
}

// Counts is a snapshot of what a Limiter holds.
type Counts struct {
	Connections int            // connections counted
	Addresses   int            // distinct address keys with a connection
	Users       int            // distinct users with a session
	Sessions    int            // authenticated sessions, all users
	PerUser     map[string]int // sessions by canonical user
	// The largest per-address and per-user counts: how close anyone is
	// to max_connections_per_ip and max_connections_per_user.
	MaxPerAddress int
	MaxPerUser    int
}

// Counts returns a snapshot of the counts.
func (l *Limiter) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Counts{Connections: l.conns, Addresses: len(l.perIP), Users: len(l.users), PerUser: make(map[string]int, len(l.users))}
	for u, n := range l.users {
		c.Sessions += n
		c.PerUser[u] = n
		c.MaxPerUser = max(c.MaxPerUser, n)
	}
	for _, n := range l.perIP {
		c.MaxPerAddress = max(c.MaxPerAddress, n)
	}
	return c
}
