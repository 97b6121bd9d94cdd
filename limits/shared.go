package limits

import (
	"context"
	"errors"
	"net/netip"
	"time"
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
	// Adopt holds a slot admitted by the instance's own counts while
	// the store was unreachable, so that it is written to the store
	// when the store is back.
	Adopt(slot Slot)
	// Release uncounts slot; calling it for a slot not held does nothing.
	Release(slot Slot)
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
