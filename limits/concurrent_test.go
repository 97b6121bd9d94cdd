package limits

import (
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentAcquireRelease hammers one Limiter from 64 goroutines;
// run it with -race.
func TestConcurrentAcquireRelease(t *testing.T) {
	const goroutines, cycles = 64, 1000
	l := New(Options{MaxConnections: 40, MaxConnectionsPerIP: 6, MaxConnectionsPerUser: 5})
	users := []string{"alice", "Alice", "BOB", "bob", "carol"}
	addrs := []netip.Addr{ip2, ip3, netip.MustParseAddr("::ffff:127.0.0.2"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), ipN(7)}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range cycles {
				addr := addrs[(g+i)%len(addrs)]
				relC, err := admitConn(l, addr)
				if err != nil {
					if !errors.Is(err, ErrLimit) {
						t.Errorf("AdmitConn: got %v; want nil or ErrLimit", err)
						return
					}
					refused.Add(1)
					continue
				}
				ok.Add(1)
				relU, err := admitUser(l, users[(g*7+i)%len(users)])
				if err == nil {
					if i%3 == 0 {
						_ = l.Counts()
					}
					relU()
					relU()
				} else if !errors.Is(err, ErrLimit) {
					t.Errorf("AdmitUser: got %v; want nil or ErrLimit", err)
				}
				relC()
				if i%5 == 0 {
					relC()
				}
			}
		})
	}
	wg.Wait()
	wantCounts(t, l, 0, 0, 0, 0)
	if ok.Load() == 0 {
		t.Errorf("got no successful acquire; want some")
	}
	t.Logf("%d acquired, %d refused", ok.Load(), refused.Load())
}

// TestConcurrentCapNeverExceeded tracks how many slots the test holds at
// once: it counts after a successful acquire and uncounts before the
// release, so its count never exceeds the Limiter's.
func TestConcurrentCapNeverExceeded(t *testing.T) {
	const goroutines, cycles = 64, 500
	tests := []struct {
		name    string
		opts    Options
		cap     int
		acquire func(l *Limiter, g, i int) (func(), error)
	}{
		{"max_connections", Options{MaxConnections: 8}, 8, func(l *Limiter, g, i int) (func(), error) {
			return admitConn(l, ipN(g))
		}},
		{"max_connections_per_ip", Options{MaxConnectionsPerIP: 5}, 5, func(l *Limiter, g, i int) (func(), error) {
			if i%2 == 0 {
				return admitConn(l, netip.MustParseAddr("::ffff:127.0.0.2"))
			}
			return admitConn(l, ip2)
		}},
		{"max_connections_per_user_ip", Options{MaxConnectionsPerUserIP: 3}, 3, func(l *Limiter, g, i int) (func(), error) {
			rel, _, err := l.AdmitUser("Alice", netip.MustParseAddr("::ffff:127.0.0.2"))
			return rel, err
		}},
		{"max_connections_per_user", Options{MaxConnectionsPerUser: 4}, 4, func(l *Limiter, g, i int) (func(), error) {
			if i%2 == 0 {
				return admitUser(l, "ALICE")
			}
			return admitUser(l, "alice")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.opts)
			var live, maxLive, refused atomic.Int64
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range cycles {
						rel, err := tt.acquire(l, g, i)
						if err != nil {
							var le *Error
							if !errors.As(err, &le) || le.Limit != tt.name || le.Value != tt.cap {
								t.Errorf("got %v; want %s=%d refusal", err, tt.name, tt.cap)
								return
							}
							refused.Add(1)
							continue
						}
						n := live.Add(1)
						for {
							m := maxLive.Load()
							if n <= m || maxLive.CompareAndSwap(m, n) {
								break
							}
						}
						runtime.Gosched() // hold the slot a moment
						live.Add(-1)
						rel()
					}
				})
			}
			wg.Wait()
			if m := maxLive.Load(); m > int64(tt.cap) {
				t.Errorf("got %d slots held at once; want at most %d", m, tt.cap)
			}
			if refused.Load() == 0 {
				t.Logf("no refusals (scheduling); cap was not contended")
			}
			wantCounts(t, l, 0, 0, 0, 0)
			t.Logf("max held %d (cap %d), %d refused", maxLive.Load(), tt.cap, refused.Load())
		})
	}
}

// TestConcurrentReload admits and releases connections and sessions
// with the rate, the user+address cap, overrides and exemptions on,
// while another goroutine changes them; run it with -race. Every count
// returns to zero.
func TestConcurrentReload(t *testing.T) {
	const goroutines, cycles = 32, 300
	optionSets := []Options{
		{MaxConnectionRatePerIP: 1000, MaxConnectionsPerUserIP: 2, MaxConnectionsPerIP: 4},
		{MaxConnectionRatePerIP: 0.5, MaxConnectionsPerUserIP: 1, RateTrackingEntries: 2,
			Overrides:      []Override{{Users: []string{"alice"}, MaxConnectionsPerUserIP: 3}, {Networks: pfx("127.0.0.0/8"), MaxConnectionsPerIP: 8}},
			ExemptNetworks: pfx("2001:db8::/32")},
		{IPv6PrefixLength: 128},
	}
	l := New(optionSets[0])
	addrs := []netip.Addr{ip2, ip3, netip.MustParseAddr("2001:db8::1"), ipN(9)}
	users := []string{"alice", "BOB"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l.SetOptions(optionSets[i%len(optionSets)])
			runtime.Gosched()
		}
	})
	var workers sync.WaitGroup
	for g := range goroutines {
		workers.Go(func() {
			now := t0
			for i := range cycles {
				now = now.Add(time.Millisecond)
				addr := addrs[(g+i)%len(addrs)]
				relC, _, err := l.AdmitConnAt(addr, now)
				if err != nil {
					if !errors.Is(err, ErrLimit) {
						t.Errorf("AdmitConnAt: got %v; want nil or ErrLimit", err)
					}
					continue
				}
				if relU, _, err := l.AdmitUser(users[i%len(users)], addr); err == nil {
					_ = l.Exempt(addr)
					relU()
				} else if !errors.Is(err, ErrLimit) {
					t.Errorf("AdmitUser: got %v; want nil or ErrLimit", err)
				}
				relC()
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	wantCounts(t, l, 0, 0, 0, 0)
	if c := l.Counts(); c.UserAddresses != 0 {
		t.Errorf("got %d user addresses; want 0", c.UserAddresses)
	}
}
