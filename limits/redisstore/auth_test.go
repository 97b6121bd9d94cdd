package redisstore_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/test/redistest"
)

// TestAuthSharedAcrossTrackers: failures counted through one Tracker
// block on another sharing the Redis; a known pair still logs in; a
// success through either resets the address's delay everywhere; with
// Redis down each falls back to its own caches.
func TestAuthSharedAcrossTrackers(t *testing.T) {
	srv := redistest.Start(t)
	opts := limits.AuthOptions{Window: time.Minute, MaxPerIP: 3, MaxPerUser: 5, Block: 10 * time.Minute, Delay: time.Second}
	newTracker := func() *limits.Tracker {
		tr := limits.NewTracker(opts)
		tr.SetShared(&redisstore.Auth{Client: srv.Client()}, 500*time.Millisecond)
		return tr
	}
	a, b := newTracker(), newTracker()
	now := time.Now()
	attacker := limits.Attempt{Addr: netip.MustParseAddr("127.0.0.2"), User: "henry", TrackAddr: true}
	home := limits.Attempt{Addr: netip.MustParseAddr("127.0.0.3"), User: "henry", TrackAddr: true}
	// henry logs in from home through a: a known pair.
	a.Succeeded(home, now)
	for i := range 3 {
		d, err := []*limits.Tracker{a, b}[i%2].Check(attacker, now)
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if want := []time.Duration{0, time.Second, 2 * time.Second}[i]; d != want {
			t.Fatalf("attempt %d: delay %v; want %v (the fleet's count)", i, d, want)
		}
		[]*limits.Tracker{a, b}[i%2].Failed(attacker, now)
	}
	var le *limits.Error
	if _, err := b.Check(attacker, now); !errors.As(err, &le) || le.Limit != "max_auth_failures_per_ip" {
		t.Fatalf("after 3 failures across both: %v; want the address blocked", err)
	}
	// Two more failures of henry from elsewhere: the user is blocked,
	// except from home.
	other := limits.Attempt{Addr: netip.MustParseAddr("127.0.0.4"), User: "HENRY", TrackAddr: true}
	a.Failed(other, now)
	b.Failed(other, now)
	if _, err := a.Check(limits.Attempt{Addr: netip.MustParseAddr("127.0.0.5"), User: "henry", TrackAddr: true}, now); !errors.As(err, &le) || le.Limit != "max_auth_failures_per_user" {
		t.Fatalf("user after 5 failures: %v; want blocked", err)
	}
	if _, err := b.Check(home, now); err != nil {
		t.Fatalf("known pair: %v; want admitted", err)
	}
	// The block ends Block after the last failure, on either.
	if _, err := b.Check(attacker, now.Add(11*time.Minute)); err != nil {
		t.Fatalf("after the block: %v", err)
	}
	// Redis down: each Tracker's own caches (a saw 2 of the attacker's
	// failures, below MaxPerIP).
	srv.Stop()
	if _, err := a.Check(attacker, now); err != nil {
		t.Fatalf("redis down, a's own count (2 < 3): %v", err)
	}
}
