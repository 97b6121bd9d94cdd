package limits

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// This file is the seam to fleet-wide state (issue 13): a Limiter given a
// Shared store (SetShared) counts authenticated sessions, per user and per
// (user, address), in that store as well as in its own maps, so that
// several proxies behind one balancer enforce one cap between them. The
// store that implements it over Redis is limits/redisstore; limits itself
// stays free of it.
//
// The Limiter's own counts are kept in every mode: they are what it
// falls back to when the store is unreachable (FailureLocal), and the
// store's re-synchronisation re-adds the slots it holds.

// ErrUnavailable is returned by AdmitUser when the shared store cannot be
// reached and the failure mode is FailureDeny: the proxy answers NO
// [UNAVAILABLE].
var ErrUnavailable = errors.New("limits: shared store unavailable")

// FailureMode says what AdmitUser does when the shared store is
// unreachable ([cluster] redis_failure).
type FailureMode int

const (
	// FailureLocal counts against the instance's own counts.
	FailureLocal FailureMode = iota
	// FailureDeny refuses the session with ErrUnavailable.
	FailureDeny
)

// Slot is one authenticated session as a shared store records it. The
// fields besides ID are for listing sessions across the fleet (who).
type Slot struct {
	ID    string       // unique within the instance
	User  string       // canonical user (UserKey)
	Addr  netip.Prefix // address key (AddrKey)
	Start time.Time
}

// Shared is a fleet-wide session store.
type Shared interface {
	// AdmitUser counts slot against perUser sessions of slot.User and,
	// when perUserIP > 0, perUserIP sessions of (slot.User, slot.Addr),
	// atomically across the fleet. It returns the checks made, with the
	// fleet's counts; on refusal the last one is the limit that refused
	// and err is nil with admitted false. err is an error reaching the
	// store. An admitted slot is held until Release.
	AdmitUser(ctx context.Context, slot Slot, perUser, perUserIP int) (admitted bool, checks []Check, err error)
	// AdmitAddr counts slot, a connection from slot.Addr (User empty),
	// against perIP connections from that address across the fleet,
	// as AdmitUser does.
	AdmitAddr(ctx context.Context, slot Slot, perIP int) (admitted bool, checks []Check, err error)
	// Adopt holds a slot admitted by the instance's own counts while
	// the store was unreachable, so that it is written to the store
	// when the store is back.
	Adopt(slot Slot)
	// Release uncounts slot; calling it for a slot not held does nothing.
	Release(slot Slot)
}

// admitConnShared is AdmitConnAt with a shared store: the rate and
// max_connections are checked here, under l.mu, and the connection is
// counted provisionally; then, l.mu released, the store checks
// max_connections_per_ip for the fleet. A refusal by the store undoes
// the count and gives the rate token back. If the store cannot be
// reached the local per-address count decides, whatever redis_failure
// says: only logins are refused under "deny".
func (l *Limiter) admitConnShared(sh *SharedOptions, addr netip.Addr, now time.Time) (release func(), checks []Check, err error) {
	key := AddrKey(addr, l.opts.IPv6PrefixLength)
	p := l.policy
	exempt := p.exempt(addr)
	checks = make([]Check, 0, 3)
	var bucket *rate.Limiter
	var r float64
	if r = p.rate(addr); r > 0 && !exempt {
		bucket = l.bucket(key, r, now)
		tokens := bucket.TokensAt(now)
		burst := bucket.Burst()
		used := burst - int(max(tokens, 0))
		checks = append(checks, Check{"max_connection_rate_per_ip", used, burst})
		if tokens < 1 {
			l.mu.Unlock()
			return nil, checks, &Error{Limit: "max_connection_rate_per_ip", Value: burst, Count: used, Rate: r}
		}
	}
	checks = append(checks, Check{"max_connections", l.conns, l.opts.MaxConnections})
	if l.conns >= l.opts.MaxConnections {
		l.mu.Unlock()
		return nil, checks, &Error{Limit: "max_connections", Value: l.opts.MaxConnections, Count: l.conns}
	}
	perIP := p.perIP(addr)
	l.conns++
	l.perIP[key]++
	local := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.conns--
		if l.perIP[key]--; l.perIP[key] <= 0 {
			delete(l.perIP, key)
		}
	}
	if exempt { // no rate either
		l.mu.Unlock()
		var once sync.Once
		return func() { once.Do(local) }, checks, nil
	}
	localCount := l.perIP[key] - 1
	l.slotSeq++
	slot := Slot{Addr: key, Start: now}
	if sh.NewID != nil {
		slot.ID = "c" + sh.NewID()
	} else {
		slot.ID = "c" + strconv.FormatUint(l.slotSeq, 10)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), sh.Timeout)
	ok, sc, serr := sh.Store.AdmitAddr(ctx, slot, perIP)
	cancel()
	if serr != nil {
		checks = append(checks, Check{"max_connections_per_ip", localCount, perIP})
		if localCount >= perIP {
			local()
			return nil, checks, &Error{Limit: "max_connections_per_ip", Value: perIP, Count: localCount}
		}
		if err := l.takeToken(bucket, r, now); err != nil {
			local()
			return nil, checks, err
		}
		sh.Store.Adopt(slot)
		return l.sharedRelease(sh.Store, slot, local), checks, nil
	}
	checks = append(checks, sc...)
	if !ok {
		local()
		last := sc[len(sc)-1]
		return nil, checks, &Error{Limit: last.Limit, Value: last.Max, Count: last.Count}
	}
	release = l.sharedRelease(sh.Store, slot, local)
	if err := l.takeToken(bucket, r, now); err != nil {
		// Another connection from the address took the last token
		// while the store was asked.
		release()
		return nil, checks, err
	}
	return release, checks, nil
}

// takeToken uses one of bucket's tokens (nil: no rate cap), only once a
// connection is admitted, so that one refused costs nothing.
func (l *Limiter) takeToken(bucket *rate.Limiter, r float64, now time.Time) error {
	if bucket == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !bucket.AllowN(now, 1) {
		return &Error{Limit: "max_connection_rate_per_ip", Value: bucket.Burst(), Count: bucket.Burst(), Rate: r}
	}
	return nil
}

// SharedOptions attach a Shared store to a Limiter.
type SharedOptions struct {
	Store     Shared
	OnFailure FailureMode
	// Timeout bounds one call to the store; 0 means one second.
	Timeout time.Duration
	// NewID makes slot ids; nil: a counter.
	NewID func() string
}

// SetShared attaches a shared store to l (nil store: none). Sessions
// already counted stay local only; call it before serving.
func (l *Limiter) SetShared(o SharedOptions) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Store == nil {
		l.shared = nil
		return
	}
	l.shared = &o
}
