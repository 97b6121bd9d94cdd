// Package limits counts connections and sessions against the caps an
// operator configures: all connections, connections from one client
// address, new connections per second from one client address,
// authenticated sessions of one user, and sessions of one user from one
// client address. It is modelled on the IMAP4 connection limits of
// Exchange Server 2013 (MaxConnections, MaxConnectionFromSingleIP,
// MaxConnectionsPerUser) and Dovecot's mail_max_userip_connections.
// Overrides (Override) change the caps for some users or networks, and
// exempt networks (Options.ExemptNetworks) skip the per-address caps;
// see policy.go for the rule that picks among several overrides.
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
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
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
	// MaxConnectionsPerUserIP caps the authenticated sessions of one user
	// from one client address (IPv6 by IPv6PrefixLength), as Dovecot's
	// mail_max_userip_connections; 0 is off.
	MaxConnectionsPerUserIP int
	// MaxConnectionRatePerIP is the number of new connections per second
	// admitted from one client address (IPv6 by IPv6PrefixLength), with a
	// burst of twice as many; a fraction is allowed (0.5: one every two
	// seconds, burst 1). 0 is off.
	MaxConnectionRatePerIP float64
	// Overrides change the caps above for some users or networks; see
	// Override for how one is picked when several match.
	Overrides []Override
	// ExemptNetworks are client networks that skip the per-address caps
	// (MaxConnectionsPerIP, MaxConnectionsPerUserIP), the rate cap and
	// brute-force counting by address (see Exempt): webmail hosts,
	// monitoring.
	ExemptNetworks []netip.Prefix
	// RateTrackingEntries bounds the client addresses whose connection
	// rate is remembered (an LRU cache): an address pushed out starts
	// again with a full burst. 0 means DefaultRateTrackingEntries.
	RateTrackingEntries int
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
	if o.MaxConnectionsPerUserIP < 0 {
		o.MaxConnectionsPerUserIP = 0
	}
	if !(o.MaxConnectionRatePerIP > 0) { // negative or NaN: off
		o.MaxConnectionRatePerIP = 0
	}
	if o.RateTrackingEntries <= 0 {
		o.RateTrackingEntries = DefaultRateTrackingEntries
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
	// Rate is the rate in force, for max_connection_rate_per_ip, which
	// may be a fraction; Value and Count are then its burst and the
	// connections the burst holds, as in its Check.
	Rate float64
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
	case "max_connections_per_user_ip":
		what = "Too many connections for this user from your address"
	case "max_connection_rate_per_ip":
		return "Too many new connections from your address (max_connection_rate_per_ip=" + FormatRate(e.Rate) + ")"
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
	mu      sync.Mutex
	opts    Options
	policy  *policy
	conns   int
	perIP   map[netip.Prefix]int
	users   map[string]int
	userIPs map[userIP]int
	// rates holds a token bucket per address key, for
	// max_connection_rate_per_ip; bounded, so a flood of distinct
	// addresses costs bounded memory.
	rates *lru.Cache[netip.Prefix, *rate.Limiter]
	// shared, if set, also counts sessions fleet-wide (shared.go).
	shared  *SharedOptions
	slotSeq uint64
}

// userIP is the key of max_connections_per_user_ip.
type userIP struct {
	user string
	addr netip.Prefix
}

// New returns a Limiter enforcing opts.
func New(opts Options) *Limiter {
	opts = opts.withDefaults()
	rates, err := lru.New[netip.Prefix, *rate.Limiter](opts.RateTrackingEntries)
	if err != nil { // only for a size <= 0, which withDefaults rules out
		panic(err)
	}
	return &Limiter{
		opts:    opts,
		policy:  newPolicy(opts),
		perIP:   make(map[netip.Prefix]int),
		users:   make(map[string]int),
		userIPs: make(map[userIP]int),
		rates:   rates,
	}
}

// SetOptions changes the caps in force, overrides and exemptions
// included. Connections and sessions already counted stay; a lowered cap
// only refuses new acquires until the counts fall below it, and a raised
// one admits at once. The rate of an address already tracked changes at
// its next connection, keeping the tokens it has (up to the new burst).
func (l *Limiter) SetOptions(opts Options) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts = opts.withDefaults()
	l.policy = newPolicy(l.opts)
	l.rates.Resize(l.opts.RateTrackingEntries)
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

// AdmitConn is AdmitConnAt at the current time.
func (l *Limiter) AdmitConn(addr netip.Addr) (release func(), checks []Check, err error) {
	return l.AdmitConnAt(addr, time.Now())
}

// AdmitConnAt counts one connection from addr, arriving at now, against
// max_connection_rate_per_ip, max_connections and max_connections_per_ip,
// all or none. The release function returned on success may be called
// any number of times; it uncounts once. It also returns the checks it
// made, in order; on refusal the last one is the limit that refused.
//
// The rate is checked first, so that an address over it does not make
// room under max_connections by evicting someone else, and a connection
// uses up one of its address's tokens only when it is admitted: one
// refused by any cap costs nothing. An exempt address (ExemptNetworks)
// skips the rate and max_connections_per_ip, though its connections are
// still counted. The caps of addr are those of the overrides that match
// it by network (the user is not known yet; see policy).
//
// With a shared store (SetShared), max_connections_per_ip is counted for
// the fleet (admitConnShared); the rate and max_connections stay this
// instance's.
func (l *Limiter) AdmitConnAt(addr netip.Addr, now time.Time) (release func(), checks []Check, err error) {
	l.mu.Lock()
	if sh := l.shared; sh != nil {
		return l.admitConnShared(sh, addr, now) // unlocks l.mu
	}
	defer l.mu.Unlock()
	key := AddrKey(addr, l.opts.IPv6PrefixLength)
	p := l.policy
	exempt := p.exempt(addr)
	checks = make([]Check, 0, 3)
	var bucket *rate.Limiter
	if r := p.rate(addr); r > 0 && !exempt {
		bucket = l.bucket(key, r, now)
		tokens := bucket.TokensAt(now)
		burst := bucket.Burst()
		used := burst - int(max(tokens, 0)) // connections the burst holds now
		checks = append(checks, Check{"max_connection_rate_per_ip", used, burst})
		if tokens < 1 {
			return nil, checks, &Error{Limit: "max_connection_rate_per_ip", Value: burst, Count: used, Rate: r}
		}
	}
	checks = append(checks, Check{"max_connections", l.conns, l.opts.MaxConnections})
	if l.conns >= l.opts.MaxConnections {
		return nil, checks, &Error{Limit: "max_connections", Value: l.opts.MaxConnections, Count: l.conns}
	}
	if !exempt {
		perIP := p.perIP(addr)
		checks = append(checks, Check{"max_connections_per_ip", l.perIP[key], perIP})
		if l.perIP[key] >= perIP {
			return nil, checks, &Error{Limit: "max_connections_per_ip", Value: perIP, Count: l.perIP[key]}
		}
	}
	if bucket != nil {
		bucket.AllowN(now, 1) // checked above, under l.mu
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

// bucket returns the token bucket of an address key, made or brought to
// rate r (burst twice r, at least 1). l.mu is held.
func (l *Limiter) bucket(key netip.Prefix, r float64, now time.Time) *rate.Limiter {
	burst := rateBurst(r)
	b, ok := l.rates.Get(key)
	if !ok {
		b = rate.NewLimiter(rate.Limit(r), burst)
		l.rates.Add(key, b)
		return b
	}
	if b.Limit() != rate.Limit(r) || b.Burst() != burst {
		// Reloaded, or another override: keep the tokens it has.
		b.SetLimitAt(now, rate.Limit(r))
		b.SetBurstAt(now, burst)
	}
	return b
}

// rateBurst is the burst of rate r: twice the rate, at least one
// connection.
func rateBurst(r float64) int {
	return max(1, int(2*r))
}

// FormatRate writes a connection rate as the configuration takes it:
// "10", "0.5".
func FormatRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// AdmitUser counts one authenticated session of user, logged in from
// addr, against max_connections_per_user and max_connections_per_user_ip
// (unless addr is exempt), both or neither, with the caps the overrides
// give user at addr. It returns the checks it made, in order; on refusal
// the last one is the limit that refused. The release function works as
// AdmitConn's.
//
// With a shared store (SetShared), the store decides, atomically across
// the fleet, with the same caps; the session is then counted here too
// without a local check. If the store cannot be reached, the local
// counts decide (FailureLocal) or the session is refused with
// ErrUnavailable (FailureDeny).
func (l *Limiter) AdmitUser(user string, addr netip.Addr) (release func(), checks []Check, err error) {
	l.mu.Lock()
	if sh := l.shared; sh != nil {
		return l.admitShared(sh, user, addr) // unlocks l.mu
	}
	defer l.mu.Unlock()
	return l.admitUserLocked(user, addr, nil)
}

// admitShared is AdmitUser with a shared store; l.mu is held on entry and
// released while the store is asked.
func (l *Limiter) admitShared(sh *SharedOptions, user string, addr netip.Addr) (release func(), checks []Check, err error) {
	key := UserKey(user)
	p := l.policy
	perUser := p.perUser(key, addr)
	perUserIP := p.perUserIP(key, addr)
	if p.exempt(addr) {
		perUserIP = 0
	}
	l.slotSeq++
	slot := Slot{User: key, Addr: AddrKey(addr, l.opts.IPv6PrefixLength), Start: time.Now()}
	if sh.NewID != nil {
		slot.ID = sh.NewID()
	} else {
		slot.ID = strconv.FormatUint(l.slotSeq, 10)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), sh.Timeout)
	ok, checks, serr := sh.Store.AdmitUser(ctx, slot, perUser, perUserIP)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if serr != nil {
		if sh.OnFailure == FailureDeny {
			return nil, nil, fmt.Errorf("%w: %w", ErrUnavailable, serr)
		}
		release, checks, err = l.admitUserLocked(user, addr, nil)
		if err != nil {
			return nil, checks, err
		}
		sh.Store.Adopt(slot)
		return l.sharedRelease(sh.Store, slot, release), checks, nil
	}
	if !ok {
		last := checks[len(checks)-1]
		return nil, checks, &Error{Limit: last.Limit, Value: last.Max, Count: last.Count}
	}
	release, _, _ = l.admitUserLocked(user, addr, &slot)
	return l.sharedRelease(sh.Store, slot, release), checks, nil
}

// sharedRelease wraps a local release to release the slot in the store
// too, once.
func (l *Limiter) sharedRelease(s Shared, slot Slot, local func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			local()
			s.Release(slot)
		})
	}
}

// admitUserLocked counts a session locally; l.mu is held. With admitted
// non-nil the shared store has admitted it: it is counted without a check.
func (l *Limiter) admitUserLocked(user string, addr netip.Addr, admitted *Slot) (release func(), checks []Check, err error) {
	key := UserKey(user)
	p := l.policy
	perUser := p.perUser(key, addr)
	if admitted != nil {
		perUser = int(^uint(0) >> 1)
	}
	checks = append(make([]Check, 0, 2), Check{"max_connections_per_user", l.users[key], perUser})
	if l.users[key] >= perUser {
		return nil, checks, &Error{Limit: "max_connections_per_user", Value: perUser, Count: l.users[key]}
	}
	uk := userIP{key, AddrKey(addr, l.opts.IPv6PrefixLength)}
	if n := p.perUserIP(key, addr); n > 0 && !p.exempt(addr) && admitted == nil {
		checks = append(checks, Check{"max_connections_per_user_ip", l.userIPs[uk], n})
		if l.userIPs[uk] >= n {
			return nil, checks, &Error{Limit: "max_connections_per_user_ip", Value: n, Count: l.userIPs[uk]}
		}
	}
	// Counted even when off or exempt, so that a reload that turns the
	// cap on finds the sessions already open.
	l.users[key]++
	l.userIPs[uk]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.users[key]--; l.users[key] <= 0 {
				delete(l.users, key)
			}
			if l.userIPs[uk]--; l.userIPs[uk] <= 0 {
				delete(l.userIPs, uk)
			}
		})
	}, checks, nil
}

// Exempt reports whether addr is in one of the exempt networks in force
// (Options.ExemptNetworks): its clients skip the per-address caps, the
// rate cap and, in the proxy, brute-force counting by address.
func (l *Limiter) Exempt(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy.exempt(addr)
}

// Counts is a snapshot of what a Limiter holds.
type Counts struct {
	Connections int // connections counted
	Addresses   int // distinct address keys with a connection
	Users       int // distinct users with a session
	Sessions    int // authenticated sessions, all users
	// UserAddresses is the distinct (user, address key) pairs with a
	// session, counted for max_connections_per_user_ip.
	UserAddresses int
	// RateTracked is the address keys whose connection rate is
	// remembered (at most Options.RateTrackingEntries).
	RateTracked int
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
	c := Counts{Connections: l.conns, Addresses: len(l.perIP), Users: len(l.users), PerUser: make(map[string]int, len(l.users)),
		UserAddresses: len(l.userIPs), RateTracked: l.rates.Len()}
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
