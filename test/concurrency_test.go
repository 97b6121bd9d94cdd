package test

import (
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestLimitConcurrency runs 200 clients from 8 addresses against every
// cap at once: first in lock step, where the outcome is exact, then free
// running. Throughout, neither the clients nor the limiter ever see more
// connections or sessions held than the caps allow.
func TestLimitConcurrency(t *testing.T) {
	const (
		clients    = 200
		maxConns   = 50
		maxPerIP   = 10
		maxPerUser = 5
		nIPs       = 8
	)
	users := []string{"u0", "u1", "u2", "u3"}
	var su []server.User
	for _, u := range users {
		su = append(su, server.User{Username: u, Password: "pw-" + u, Messages: 1})
	}
	// Refusals, not evictions, at max_connections: the exact accounting
	// below counts who is refused. Evictions under load are
	// TestFloodConcurrent's.
	p := startCounted(t, proxy.Options{KeepUnauthenticated: true}, limits.Options{
		MaxConnections: maxConns, MaxConnectionsPerIP: maxPerIP, MaxConnectionsPerUser: maxPerUser,
	}, su...)
	// run runs client(i) on a goroutine for each client, with a fresh
	// tracker and sampler, and reports what went wrong.
	run := func(t *testing.T, client func(r *concurrent, i int) error, start chan struct{}) *concurrent {
		r := &concurrent{addr: p.Addr, k: newCapTracker(maxConns, maxPerIP, maxPerUser)}
		stopSampler := sampleCounts(p.Limiter, maxConns, nIPs, maxPerUser, maxPerUser*len(users))
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				if start != nil {
					<-start
				}
				if err := client(r, i); err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
				}
			})
		}
		if start != nil {
			close(start)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, v := range append(stopSampler(), r.k.violations...) {
			t.Error(v)
		}
		t.Logf("%s; peaks: %d connections, %d per address, %d per user", &r.tally, r.k.peakConns, r.k.peakPerIP, r.k.peakPerUser)
		proxytest.WaitZero(t, p.Limiter)
		p.dials.WaitOpen(t, 0)
		return r
	}

	// Round 1, in lock step, so that the outcome is exact. Wave A: 20
	// clients from 127.0.0.2 connect at once: 10 are accepted, 10 refused
	// by max_connections_per_ip. Wave B: the other 180, from 127.0.0.3 to
	// 127.0.0.9, connect at once while wave A holds on: 40 more are
	// accepted (7 addresses could take 70), the rest refused. Then the
	// 50 log in at once, as 4 users: 5 sessions each. Nobody leaves
	// before everyone got the answer.
	t.Run("lock step", func(t *testing.T) {
		const waveA = 20
		waveB, greet, login := newBarrier(waveA), newBarrier(clients), newBarrier(clients)
		r := run(t, func(r *concurrent, i int) error {
			wave, ip := "A", "127.0.0.2"
			pt := &party{pending: []*barrier{greet, login}}
			if i < waveA {
				pt.pending = append(pt.pending, waveB)
			} else {
				wave, ip = "B", fmt.Sprintf("127.0.0.%d", 3+(i-waveA)%(nIPs-1))
			}
			defer pt.leave()
			if wave == "B" {
				if err := waveB.wait(); err != nil {
					return err
				}
			}
			c, refusal, err := r.connect(ip)
			pt.arrive(waveB)
			if err != nil || refusal != "" {
				r.add("wave "+wave+" "+refusal, err)
				return err
			}
			defer c.Close()
			r.add("wave "+wave+" accepted", nil)
			user := users[(r.add("accepted", nil)-1)%len(users)]
			if err := pt.pass(greet); err != nil {
				return err
			}
			session, err := r.login(c, user)
			if err != nil {
				return err
			}
			if err := pt.pass(login); err != nil {
				return err
			}
			return r.end(c, ip, user, session, []string{"logout", "close", "reset"}[i%3])
		}, nil)
		for _, w := range []struct {
			wave                            string
			accepted, refusedConns, refused int
		}{
			{"A", maxPerIP, 0, waveA - maxPerIP},
			{"B", maxConns - maxPerIP, -1, clients - waveA - (maxConns - maxPerIP)},
		} {
			a, g := r.get("wave "+w.wave+" accepted"), r.get("wave "+w.wave+" "+refusedConns)
			ref := g + r.get("wave "+w.wave+" "+refusedPerIP)
			if a != w.accepted || ref != w.refused || w.refusedConns >= 0 && g != w.refusedConns {
				t.Errorf("wave %s: got %d accepted, %d refused (%d by max_connections); want %d, %d (%d by max_connections, -1: any)",
					w.wave, a, ref, g, w.accepted, w.refused, w.refusedConns)
			}
		}
		if got, want := r.get(loggedIn), maxPerUser*len(users); got != want {
			t.Errorf("logged in: got %d; want %d", got, want)
		}
		if got, want := r.get(refusedPerUser), maxConns-maxPerUser*len(users); got != want {
			t.Errorf("refused at login: got %d; want %d", got, want)
		}
	})

	// Round 2, free running: every client connects several times and ends
	// each connection its own way.
	t.Run("free running", func(t *testing.T) {
		r := run(t, func(r *concurrent, i int) error {
			// Half of the clients from 127.0.0.2, so that its cap is hit too.
			ip := "127.0.0.2"
			if i%2 == 1 {
				ip = fmt.Sprintf("127.0.0.%d", 3+(i/2)%(nIPs-1))
			}
			for iter := range 3 {
				action, user := (i+iter)%5, users[(i+iter)%len(users)]
				if err := r.once(ip, user, action >= 2, []string{"close", "logout", "close", "logout", "reset"}[action]); err != nil {
					return err
				}
			}
			return nil
		}, make(chan struct{}))
		if got := r.get("greeted") + r.get(refusedConns) + r.get(refusedPerIP); got != 3*clients {
			t.Errorf("connections answered: got %d; want %d", got, 3*clients)
		}
	})
}

// The outcomes concurrent counts.
const (
	refusedConns   = "refused max_connections"
	refusedPerIP   = "refused max_connections_per_ip"
	loggedIn       = "logged in"
	refusedPerUser = "refused max_connections_per_user"
)

// concurrent is one round of TestLimitConcurrency: what its clients do
// and what they saw.
type concurrent struct {
	addr string
	k    *capTracker
	tally
}

// connect dials from ip and reads the greeting. A refusal must be one of
// the caps' BYEs, followed by the close; connect returns its outcome.
func (r *concurrent) connect(ip string) (c *proxytest.Client, refusal string, err error) {
	c, err = proxytest.DialClient(ip, r.addr)
	if err != nil {
		return nil, "", err
	}
	c.Timeout = 15 * time.Second // 200 clients at once, with the race detector
	g, err := c.Line()
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("greeting: %w", err)
	}
	switch byes := []string{byeMaxConns(r.k.maxConns), byeMaxPerIP(r.k.maxPerIP)}; {
	case g == byes[0]:
		refusal = refusedConns
	case g == byes[1]:
		refusal = refusedPerIP
	case !strings.HasPrefix(g, "* OK "):
		c.Close()
		return nil, "", fmt.Errorf("greeting: got %q; want * OK or one of %q", g, byes)
	}
	if refusal != "" {
		defer c.Close()
		return nil, refusal, c.ExpectClosed()
	}
	r.k.connUp(ip)
	return c, "", nil
}

// login logs in as user; a refusal by max_connections_per_user is no
// error: session is then false.
func (r *concurrent) login(c *proxytest.Client, user string) (session bool, err error) {
	_, st, err := c.Cmd("l", "LOGIN "+user+" pw-"+user)
	switch {
	case err != nil:
		return false, err
	case strings.HasPrefix(st, "l OK "):
		r.k.userUp(user)
		r.add(loggedIn, nil)
		return true, nil
	case st == noMaxPerUser("l", r.k.maxPerUser):
		r.add(refusedPerUser, nil)
		return false, nil
	}
	return false, fmt.Errorf("LOGIN %s: got %q; want OK or %q", user, st, noMaxPerUser("l", r.k.maxPerUser))
}

// end runs NOOP in a session, then lets go of the connection as how says
// (logout, close or reset). The tracker counts the session and the
// connection down before the client lets go: the proxy's own counts are
// never below the tracker's.
func (r *concurrent) end(c *proxytest.Client, ip, user string, session bool, how string) error {
	if session {
		if _, st, err := c.Cmd("n", "NOOP"); err != nil || !strings.HasPrefix(st, "n OK") {
			return fmt.Errorf("NOOP: %q %v", st, err)
		}
		r.k.userDown(user)
	}
	r.k.connDown(ip)
	r.add(how, nil)
	switch how {
	case "logout":
		return c.Logout("z")
	case "reset":
		return c.Reset()
	}
	return c.Close()
}

// once makes one connection from ip, logs in as user if login, and ends
// it as how says.
func (r *concurrent) once(ip, user string, login bool, how string) error {
	c, refusal, err := r.connect(ip)
	if err != nil || refusal != "" {
		r.add(refusal, err)
		return err
	}
	defer c.Close()
	r.add("greeted", nil)
	session := false
	if login {
		if session, err = r.login(c, user); err != nil {
			return err
		}
	}
	return r.end(c, ip, user, session, how)
}

// tally counts outcomes by name.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

// add counts one more of outcome, unless err is set or outcome is "",
// and returns the new count.
func (t *tally) add(outcome string, err error) int {
	if err != nil || outcome == "" {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = make(map[string]int)
	}
	t.n[outcome]++
	return t.n[outcome]
}

func (t *tally) get(outcome string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[outcome]
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.n)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, t.n[k]))
	}
	return strings.Join(parts, " ")
}

// capTracker counts, from the clients' side, the connections and
// sessions they hold: up after the proxy said so (greeting, LOGIN OK),
// down before the client lets go (sends LOGOUT, closes). The proxy's own
// counts are therefore never below these, and these must stay within the
// caps.
type capTracker struct {
	maxConns, maxPerIP, maxPerUser int

	mu                                sync.Mutex
	conns                             int
	perIP, perUser                    map[string]int
	peakConns, peakPerIP, peakPerUser int
	violations                        []string
}

func newCapTracker(maxConns, maxPerIP, maxPerUser int) *capTracker {
	return &capTracker{maxConns: maxConns, maxPerIP: maxPerIP, maxPerUser: maxPerUser,
		perIP: make(map[string]int), perUser: make(map[string]int)}
}

func (k *capTracker) connUp(ip string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conns++
	k.perIP[ip]++
	k.peakConns = max(k.peakConns, k.conns)
	k.peakPerIP = max(k.peakPerIP, k.perIP[ip])
	if k.conns > k.maxConns {
		k.violations = append(k.violations, fmt.Sprintf("%d connections held at once; cap %d", k.conns, k.maxConns))
	}
	if k.perIP[ip] > k.maxPerIP {
		k.violations = append(k.violations, fmt.Sprintf("%d connections from %s at once; cap %d", k.perIP[ip], ip, k.maxPerIP))
	}
}

func (k *capTracker) connDown(ip string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conns--
	k.perIP[ip]--
}

func (k *capTracker) userUp(user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.perUser[user]++
	k.peakPerUser = max(k.peakPerUser, k.perUser[user])
	if k.perUser[user] > k.maxPerUser {
		k.violations = append(k.violations, fmt.Sprintf("%d sessions of %s at once; cap %d", k.perUser[user], user, k.maxPerUser))
	}
}

func (k *capTracker) userDown(user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.perUser[user]--
}

// sampleCounts checks the limiter's own counts against the caps until
// stopped, and returns what it found over them (ten at most).
func sampleCounts(lim *limits.Limiter, maxConns, maxAddrs, maxPerUser, maxSessions int) (stop func() []string) {
	done := make(chan struct{})
	res := make(chan []string, 1)
	go func() {
		var bad []string
		for {
			select {
			case <-done:
				res <- bad
				return
			default:
			}
			c := lim.Counts()
			if c.Connections > maxConns || c.Addresses > maxAddrs || c.Sessions > maxSessions {
				bad = append(bad, fmt.Sprintf("limiter counts %+v over the caps", c))
			}
			for u, n := range c.PerUser {
				if n > maxPerUser {
					bad = append(bad, fmt.Sprintf("limiter holds %d sessions of %s; cap %d", n, u, maxPerUser))
				}
			}
			bad = bad[:min(len(bad), 10)]
			runtime.Gosched()
		}
	}()
	return func() []string { close(done); return <-res }
}

// barrier lets n goroutines wait for each other.
type barrier struct {
	wg   sync.WaitGroup
	done chan struct{}
}

func newBarrier(n int) *barrier {
	b := &barrier{done: make(chan struct{})}
	b.wg.Add(n)
	go func() { b.wg.Wait(); close(b.done) }()
	return b
}

// wait waits for the n goroutines to arrive, for 20 s at most.
func (b *barrier) wait() error {
	select {
	case <-b.done:
		return nil
	case <-time.After(2 * proxytest.Timeout):
		return errors.New("barrier timed out")
	}
}

// party is one goroutine's place at the barriers it must arrive at,
// each exactly once whatever happens: leave, deferred, arrives at those
// it has not reached.
type party struct{ pending []*barrier }

// arrive arrives at b, if b is pending.
func (p *party) arrive(b *barrier) {
	if i := slices.Index(p.pending, b); i >= 0 {
		p.pending = slices.Delete(p.pending, i, i+1)
		b.wg.Done()
	}
}

// pass arrives at b and waits for the others.
func (p *party) pass(b *barrier) error {
	p.arrive(b)
	return b.wait()
}

func (p *party) leave() {
	for _, b := range p.pending {
		b.wg.Done()
	}
	p.pending = nil
}
