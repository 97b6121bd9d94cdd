package limits

import (
	"context"
	"net/netip"
	"time"
)

// SharedAuth is the brute-force state (authfail.go) kept for a fleet
// (limits/redisstore implements it): a Tracker given one (SetShared)
// reads and writes the per-address and per-user failure records and the
// known (user, address) pairs there, so that a penalty earned through one
// proxy holds on the others. The Tracker keeps its own caches as well,
// and uses them when the store cannot be reached. The times are the
// instances' (the Tracker's now): their clocks should agree to within a
// fraction of auth_failure_delay, as NTP keeps them.
type SharedAuth interface {
	// Load returns the records of the address key (when trackAddr) and
	// of the user key, and whether (user, address) has logged in before.
	Load(ctx context.Context, addr netip.Prefix, trackAddr bool, user string) (a, u AuthRecord, known bool, err error)
	// Failed counts one failure for the address key (when trackAddr)
	// and the user key, applying the window and block as Tracker.Failed.
	Failed(ctx context.Context, addr netip.Prefix, trackAddr bool, user string, now time.Time, o AuthOptions) error
	// Succeeded does what Tracker.Succeeded does.
	Succeeded(ctx context.Context, addr netip.Prefix, trackAddr bool, user string, now time.Time, o AuthOptions) error
}

// AuthRecord is a failure record as a SharedAuth holds it.
type AuthRecord struct {
	Count   int       // failures within the window
	Penalty int       // failures since the last success
	Last    time.Time // the last failure; zero for no record
}

// SetShared attaches a fleet-wide store of the brute-force state to t
// (nil: none). timeout bounds each call; 0 means one second.
func (t *Tracker) SetShared(s SharedAuth, timeout time.Duration) {
	if timeout <= 0 {
		timeout = time.Second
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shared, t.sharedTimeout = s, timeout
}

// checkShared is Check against the shared store; ok false means the store
// could not be reached (the caller falls back to its caches).
func (t *Tracker) checkShared(s SharedAuth, opts AuthOptions, a Attempt, now time.Time) (delay time.Duration, err error, ok bool) {
	key := AddrKey(a.Addr, opts.IPv6PrefixLength)
	user := authUserKey(a.User)
	ctx, cancel := context.WithTimeout(context.Background(), t.sharedTimeout)
	defer cancel()
	ar, ur, known, lerr := s.Load(ctx, key, a.TrackAddr, user)
	if lerr != nil {
		return 0, nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var af failures
	if a.TrackAddr {
		af = t.current(failures{ar.Count, ar.Penalty, ar.Last}, opts.MaxPerIP, now)
		if !t.blockedUntil(af, opts.MaxPerIP, now).IsZero() {
			return 0, &Error{Limit: "max_auth_failures_per_ip", Value: opts.MaxPerIP, Count: af.count}, true
		}
	}
	uf := failures{ur.Count, ur.Penalty, ur.Last}
	if !t.blockedUntil(uf, opts.MaxPerUser, now).IsZero() && !known {
		return 0, &Error{Limit: "max_auth_failures_per_user", Value: opts.MaxPerUser, Count: uf.count}, true
	}
	return t.delay(af.penalty), nil, true
}
