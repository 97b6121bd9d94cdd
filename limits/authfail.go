package limits

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// This file is the brute-force defence across connections (issue 11):
// failed logins are counted per client address and per user name, in
// bounded LRU caches, and a Tracker tells the proxy, before it asks the
// upstream, whether a login must wait (the delay) or is refused (the
// block).
//
// The rules, which the configuration reference and proxy/README.md
// repeat:
//
//   - A failure is a login the upstream rejected as a wrong password. It
//     counts for the client's address (IPv6 by IPv6PrefixLength) and for
//     the user name (as UserKey canonicalises it). Counts expire Window
//     after the last failure of that key: each failure restarts the
//     window, and a key with no failure for Window starts again from 0.
//   - The delay: a login from an address with failures waits
//     Delay × 2^(n-1) (n its failures since its last successful login),
//     at most MaxAuthFailureDelay, before the upstream is asked. The delay
//     goes by address only: a per-user delay would let an attacker slow a
//     user's own logins from anywhere.
//   - The block: an address with MaxPerIP failures in its window is
//     refused, for every user, until Block after its last failure; a user
//     with MaxPerUser failures is refused the same way, except from
//     addresses it has logged in from before (a bounded LRU of (user,
//     address) pairs), so an attacker cannot lock a user out of the
//     places it uses. Refused attempts never reach the upstream and are
//     not counted as failures (they would extend the block for ever).
//   - A successful login deletes the user's record, remembers the (user,
//     address) pair, and resets the address's delay, but not its count
//     towards MaxPerIP: an attacker with one account of its own cannot
//     wash its address's count by logging in to it between guesses.
//   - An address the caller does not track (Attempt.TrackAddr false, for
//     exempt networks) is neither counted, delayed nor blocked by
//     address; its user is.
//
// Each of the three caches holds at most Entries keys, the least recently
// used going first, so an attacker cycling through addresses or names
// costs bounded memory (TestAuthTrackerMillionKeys measures it).

// MaxAuthFailureDelay caps the growing delay, as Dovecot caps its auth
// penalty (AUTH_PENALTY_MAX_PENALTY, 15 s).
const MaxAuthFailureDelay = 15 * time.Second

// maxUserKeyLen bounds the user names kept as they are: a longer name
// (RFC 5321 §4.5.3.1.3 allows 254 octets in an address) is kept as its
// SHA-256, so a cache entry never holds a 10 KiB name of an attacker's.
const maxUserKeyLen = 256

// AuthOptions configure a Tracker. Unlike Options, a zero field means
// off, not a default: config.Default fills in the defaults below.
type AuthOptions struct {
	// Window is how long failures are remembered after the last one;
	// 0 turns the whole defence off.
	Window time.Duration
	// MaxPerIP and MaxPerUser are the failures that block an address or
	// a user; 0: no block of that kind.
	MaxPerIP   int
	MaxPerUser int
	// Block is how long a block lasts after the last failure.
	Block time.Duration
	// Delay is the first delay; 0: no delay.
	Delay time.Duration
	// Entries bounds each cache (addresses, users, known pairs);
	// 0 means DefaultAuthTrackingEntries.
	Entries int
	// IPv6PrefixLength groups IPv6 addresses, as for
	// max_connections_per_ip; 0 means DefaultIPv6PrefixLength.
	IPv6PrefixLength int
}

func (o AuthOptions) withDefaults() AuthOptions {
	if o.Entries <= 0 {
		o.Entries = DefaultAuthTrackingEntries
	}
	if o.IPv6PrefixLength <= 0 || o.IPv6PrefixLength > 128 {
		o.IPv6PrefixLength = DefaultIPv6PrefixLength
	}
	return o
}

// Enabled reports whether the defence is on.
func (o AuthOptions) Enabled() bool { return o.Window > 0 }

// Attempt is one login attempt as the tracker sees it.
type Attempt struct {
	Addr netip.Addr
	User string
	// TrackAddr counts, delays and blocks by Addr; false for an address
	// exempt from per-address rules (its user is still tracked).
	TrackAddr bool
}

// failures is what a cache holds per key. Whether it blocks is worked
// out at each look from the maximum in force, so that a reload applies
// new maxima and a new block at once.
type failures struct {
	count   int       // failures within the window
	penalty int       // failures since the last success: the delay's exponent
	last    time.Time // the last failure
}

// pair is a (user, address) that has logged in.
type pair struct {
	user string
	addr netip.Prefix
}

// Tracker counts failed logins across connections. Its methods take the
// current time as an argument and never block. The zero value is not
// usable; call NewTracker.
type Tracker struct {
	mu    sync.Mutex
	opts  AuthOptions
	addrs *simplelru.LRU[netip.Prefix, failures]
	users *simplelru.LRU[string, failures]
	known *simplelru.LRU[pair, struct{}]
	// shared, if set, holds the state for a fleet (sharedauth.go).
	shared        SharedAuth
	sharedTimeout time.Duration
}

// NewTracker returns a Tracker with opts.
func NewTracker(opts AuthOptions) *Tracker {
	opts = opts.withDefaults()
	t := &Tracker{opts: opts}
	t.addrs, _ = simplelru.NewLRU[netip.Prefix, failures](opts.Entries, nil)
	t.users, _ = simplelru.NewLRU[string, failures](opts.Entries, nil)
	t.known, _ = simplelru.NewLRU[pair, struct{}](opts.Entries, nil)
	return t
}

// SetOptions changes the options in force (SIGHUP). The new window,
// maxima, block and delay apply at once to what is tracked; a smaller
// Entries drops the least recently used keys. Turning the defence off
// forgets everything.
func (t *Tracker) SetOptions(opts AuthOptions) {
	opts = opts.withDefaults()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opts = opts
	t.addrs.Resize(opts.Entries)
	t.users.Resize(opts.Entries)
	t.known.Resize(opts.Entries)
	if !opts.Enabled() {
		t.addrs.Purge()
		t.users.Purge()
		t.known.Purge()
	}
}

// Options returns the options in force, defaults filled in.
func (t *Tracker) Options() AuthOptions {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.opts
}

// authUserKey is the key a user name is counted under.
func authUserKey(user string) string {
	k := UserKey(user)
	if len(k) > maxUserKeyLen {
		sum := sha256.Sum256([]byte(k))
		k = "sha256:" + hex.EncodeToString(sum[:])
	}
	return k
}

// blockedUntil returns when f's block ends, or zero when f (of a kind
// whose maximum is max) does not block.
func (t *Tracker) blockedUntil(f failures, max int, now time.Time) time.Time {
	if max <= 0 || f.count < max {
		return time.Time{}
	}
	if until := f.last.Add(t.opts.Block); now.Before(until) {
		return until
	}
	return time.Time{}
}

// current returns f as it stands at now: forgotten once the window has
// passed since the last failure, unless it still blocks.
func (t *Tracker) current(f failures, max int, now time.Time) failures {
	if now.Sub(f.last) >= t.opts.Window && t.blockedUntil(f, max, now).IsZero() {
		return failures{}
	}
	return f
}

// Check says what to do with an attempt before the upstream is asked: a
// refusal (an *Error for max_auth_failures_per_ip or
// max_auth_failures_per_user, matched by ErrLimit), or the delay to wait
// first (0: none).
//
// With a shared store (SetShared) the records are the fleet's; the
// Tracker's own caches decide only while the store cannot be reached.
func (t *Tracker) Check(a Attempt, now time.Time) (delay time.Duration, err error) {
	t.mu.Lock()
	if s, opts := t.shared, t.opts; s != nil && opts.Enabled() {
		t.mu.Unlock()
		if delay, err, ok := t.checkShared(s, opts, a, now); ok {
			return delay, err
		}
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	if !t.opts.Enabled() {
		return 0, nil
	}
	key := AddrKey(a.Addr, t.opts.IPv6PrefixLength)
	var af failures
	if a.TrackAddr {
		if f, ok := t.addrs.Peek(key); ok {
			af = t.current(f, t.opts.MaxPerIP, now)
		}
		if !t.blockedUntil(af, t.opts.MaxPerIP, now).IsZero() {
			return 0, &Error{Limit: "max_auth_failures_per_ip", Value: t.opts.MaxPerIP, Count: af.count}
		}
	}
	user := authUserKey(a.User)
	if f, ok := t.users.Peek(user); ok {
		if !t.blockedUntil(f, t.opts.MaxPerUser, now).IsZero() && !t.known.Contains(pair{user, key}) {
			return 0, &Error{Limit: "max_auth_failures_per_user", Value: t.opts.MaxPerUser, Count: f.count}
		}
	}
	return t.delay(af.penalty), nil
}

// delay is the wait after n failures: Delay doubled n-1 times, at most
// MaxAuthFailureDelay; 0 for none.
func (t *Tracker) delay(n int) time.Duration {
	d := t.opts.Delay
	if n <= 0 || d <= 0 {
		return 0
	}
	for i := 1; i < n && d < MaxAuthFailureDelay; i++ {
		d *= 2
	}
	return min(d, MaxAuthFailureDelay)
}

// Failed records a login the upstream rejected as a wrong password.
func (t *Tracker) Failed(a Attempt, now time.Time) {
	t.tellShared(a, now, SharedAuth.Failed)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.opts.Enabled() {
		return
	}
	bump := func(f failures, max int) failures {
		f = t.current(f, max, now)
		f.count++
		f.penalty++
		f.last = now
		return f
	}
	if a.TrackAddr {
		key := AddrKey(a.Addr, t.opts.IPv6PrefixLength)
		f, _ := t.addrs.Peek(key)
		t.addrs.Add(key, bump(f, t.opts.MaxPerIP))
	}
	user := authUserKey(a.User)
	f, _ := t.users.Peek(user)
	t.users.Add(user, bump(f, t.opts.MaxPerUser))
}

// Succeeded records a successful login: the user's record goes, the
// (user, address) pair is remembered, and the address's delay is reset
// (not its count).
func (t *Tracker) Succeeded(a Attempt, now time.Time) {
	t.tellShared(a, now, SharedAuth.Succeeded)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.opts.Enabled() {
		return
	}
	key := AddrKey(a.Addr, t.opts.IPv6PrefixLength)
	user := authUserKey(a.User)
	t.users.Remove(user)
	t.known.Add(pair{user, key}, struct{}{})
	if !a.TrackAddr {
		return
	}
	if f, ok := t.addrs.Peek(key); ok {
		f = t.current(f, t.opts.MaxPerIP, now)
		f.penalty = 0
		if f.count == 0 {
			t.addrs.Remove(key)
		} else {
			t.addrs.Add(key, f)
		}
	}
}

// tellShared records a failure or success in the shared store, if any;
// an error reaching it leaves only the Tracker's own caches changed.
func (t *Tracker) tellShared(a Attempt, now time.Time, f func(SharedAuth, context.Context, netip.Prefix, bool, string, time.Time, AuthOptions) error) {
	t.mu.Lock()
	s, opts, timeout := t.shared, t.opts, t.sharedTimeout
	t.mu.Unlock()
	if s == nil || !opts.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	f(s, ctx, AddrKey(a.Addr, opts.IPv6PrefixLength), a.TrackAddr, authUserKey(a.User), now, opts)
}

// Penalty is one tracked key, for the admin API.
type Penalty struct {
	Kind         string    // "address" or "user"
	Key          string    // the address prefix ("192.0.2.7/32", "2001:db8::/64") or the canonical user
	Failures     int       // failures within the window
	LastFailure  time.Time // the last one
	BlockedUntil time.Time // zero when not blocked
	// Delay is what the next login from this address waits (addresses
	// only).
	Delay time.Duration
}

// Penalties lists what is tracked at now, addresses then users, each
// sorted by key; keys whose failures have expired are left out.
func (t *Tracker) Penalties(now time.Time) []Penalty {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Penalty
	for _, k := range t.addrs.Keys() {
		f, _ := t.addrs.Peek(k)
		if f = t.current(f, t.opts.MaxPerIP, now); f.count > 0 {
			out = append(out, Penalty{Kind: "address", Key: k.String(), Failures: f.count, LastFailure: f.last,
				BlockedUntil: t.blockedUntil(f, t.opts.MaxPerIP, now), Delay: t.delay(f.penalty)})
		}
	}
	n := len(out)
	for _, k := range t.users.Keys() {
		f, _ := t.users.Peek(k)
		if f = t.current(f, t.opts.MaxPerUser, now); f.count > 0 {
			out = append(out, Penalty{Kind: "user", Key: k, Failures: f.count, LastFailure: f.last,
				BlockedUntil: t.blockedUntil(f, t.opts.MaxPerUser, now)})
		}
	}
	sort.Slice(out[:n], func(i, j int) bool { return out[i].Key < out[j].Key })
	sort.Slice(out[n:], func(i, j int) bool { return out[n+i].Key < out[n+j].Key })
	return out
}

// ClearAll forgets every failure (not the known pairs) and returns how
// many keys it cleared.
func (t *Tracker) ClearAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.addrs.Len() + t.users.Len()
	t.addrs.Purge()
	t.users.Purge()
	return n
}

// ClearAddr forgets the failures of the tracked addresses within p (an
// address is a prefix of its full length) and of the IPv6 groups that
// contain p, and returns how many it cleared.
func (t *Tracker) ClearAddr(p netip.Prefix) int {
	p = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), p.Addr().Unmap().BitLen())).Masked()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, k := range t.addrs.Keys() {
		if k.Overlaps(p) {
			t.addrs.Remove(k)
			n++
		}
	}
	return n
}

// ClearUser forgets the failures of user and reports how many keys it
// cleared (0 or 1).
func (t *Tracker) ClearUser(user string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.users.Remove(authUserKey(user)) {
		return 1
	}
	return 0
}

// TrackerCounts is how many keys each cache holds.
type TrackerCounts struct {
	Addresses, Users, Known int
}

// Counts returns how many keys each cache holds (expired ones included,
// until evicted or overwritten).
func (t *Tracker) Counts() TrackerCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TrackerCounts{t.addrs.Len(), t.users.Len(), t.known.Len()}
}
