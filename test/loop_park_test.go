package test

import (
	"flag"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// parkSessions is how many sessions TestLoopPark parks under each relay.
// Issue 14 asks for 10,000. Each session takes four descriptors in this
// one process (the client's socket, the proxy's two, the upstream's),
// and the hard RLIMIT_NOFILE of the machines this runs on is 20,000: at
// most 4,750 fit (fdsPerSession each, fdReserve kept for everything
// else), and the test takes no more than fit, saying so in its log. The
// default is smaller again for time: make test runs it under both relays
// with the race detector, while other packages' tests share the 2 cores.
// Measured for both relays together: 3,000 sessions 12 s with the machine
// otherwise quiet; 4,000 29 s and 4,750 47 s with other test runs
// sharing it. Run -loop.sessions=10000 for as many as the limit allows.
var parkSessions = flag.Int("loop.sessions", 3000, "sessions TestLoopPark parks and resumes under each relay (at most what RLIMIT_NOFILE fits)")

const (
	fdsPerSession = 4
	fdReserve     = 1000
	parkUsers     = 100 // users the sessions are spread over
)

// TestLoopPark (issue 14, "10,000 sessions parked and resumed"): many
// sessions log in from 127.0.0.2 to 127.0.0.254 as parkUsers users and
// go quiet. Once parked, a session holds no goroutine (see
// waitGoroutines): the process's goroutines fall to the upstream's, one
// per connection, and the test's own. Then each session is resumed with a
// NOOP, which is answered, and logged out; the proxy's counts (sessions,
// connections, per user, per address) and its registry of connections
// are back at zero.
func TestLoopPark(t *testing.T) {
	limit := raiseFileLimit(t)
	n := *parkSessions
	if fits := (limit - fdReserve) / fdsPerSession; n > fits {
		t.Logf("RLIMIT_NOFILE %d fits %d sessions of %d descriptors (keeping %d): %d sessions, not %d", limit, fits, fdsPerSession, fdReserve, fits, n)
		n = fits
	}
	n -= n % parkUsers
	if n <= 0 {
		t.Fatalf("RLIMIT_NOFILE %d: no room for sessions", limit)
	}
	forEachRelay(t, func(t *testing.T, relay string) {
		start := time.Now()
		up := loopUpstream(t)
		p := proxytest.Start(t, proxytest.Config{
			Upstream: up.Addr,
			Options:  proxy.Options{Relay: relay},
			Limits:   limits.Options{MaxConnectionsPerUser: n},
		})
		base := runtime.NumGoroutine()

		clients := make([]*proxytest.Client, n)
		t.Cleanup(func() {
			for _, c := range clients {
				if c != nil {
					c.Close()
				}
			}
		})
		user := func(i int) string { return fmt.Sprintf("user%03d", i%parkUsers) }
		parallel(t, n, func(i int) error {
			c, err := proxytest.DialClient(fmt.Sprintf("127.0.0.%d", 2+i%253), p.Addr)
			if err != nil {
				return err
			}
			clients[i] = c
			if g, err := c.Line(); err != nil || !strings.HasPrefix(g, "* OK ") {
				return fmt.Errorf("greeting %q, %v", g, err)
			}
			if _, st, err := c.Cmd("l", "LOGIN "+user(i)+" secret"); err != nil || !strings.HasPrefix(st, "l OK ") {
				return fmt.Errorf("LOGIN: %q, %v", st, err)
			}
			return nil
		})
		logins := time.Since(start)

		counts := p.Limiter.Counts()
		if counts.Sessions != n || counts.Connections != n || counts.Users != parkUsers || counts.Addresses != min(n, 253) {
			t.Fatalf("counts with %d sessions logged in: %+v", n, counts)
		}
		for i := range parkUsers {
			if got := counts.PerUser[user(i)]; got != n/parkUsers {
				t.Fatalf("%s has %d sessions; want %d", user(i), got, n/parkUsers)
			}
		}
		if got := len(p.Server.Conns()); got != n {
			t.Fatalf("the proxy's registry holds %d connections; want %d", got, n)
		}

		// Parked: no goroutine of the proxy's per session. The upstream
		// holds one per connection; a relay that kept even one goroutine
		// per session would be at 2n and more.
		max := base + n + n/10 + 50
		got, ok := waitGoroutines(max, 3*proxytest.Timeout)
		if !ok {
			t.Fatalf("%d sessions did not park: %d goroutines; want at most %d (%d before the logins, and the upstream's %d)", n, got, max, base, n)
		}
		parked := time.Since(start)

		// Resumed: each answers a NOOP.
		parallel(t, n, func(i int) error {
			if _, st, err := clients[i].Cmd("n", "NOOP"); err != nil || st != "n OK NOOP completed" {
				return fmt.Errorf("NOOP: %q, %v", st, err)
			}
			return nil
		})
		resumed := time.Since(start)

		parallel(t, n, func(i int) error { return clients[i].Logout("z") })
		proxytest.WaitZero(t, p.Limiter)
		if c := p.Limiter.Counts(); len(c.PerUser) != 0 || c.UserAddresses != 0 {
			t.Fatalf("counts after every LOGOUT: %+v", c)
		}
		proxytest.WaitFor(t, "the proxy's registry empty", func() bool { return len(p.Server.Conns()) == 0 })
		t.Logf("relay %s: %d sessions logged in after %v, parked (%d goroutines) after %v, resumed after %v, logged out after %v",
			relay, n, logins.Round(time.Millisecond), got, parked.Round(time.Millisecond), resumed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})
}

// parallel runs f(0) to f(n-1) on a few goroutines and fails the test
// with the first error (and how many there were).
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	const workers = 8
	var (
		next   atomic.Int64
		failed atomic.Int64
		first  error
		once   sync.Once
		wg     sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() > 10 {
					return
				}
				if err := f(i); err != nil {
					failed.Add(1)
					once.Do(func() { first = fmt.Errorf("session %d: %w", i, err) })
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatalf("%v (%d sessions failed)", first, failed.Load())
	}
}
