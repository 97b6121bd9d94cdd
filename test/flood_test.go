package test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestFloodEvictsUnauthenticated: at max_connections, a new connection
// closes the oldest one that has not logged in (as Dovecot's login
// process does), so that a flood of idle connections from many addresses
// cannot lock real users out; logged-in sessions are never closed for
// it, and when every connection is logged in the new one is refused.
func TestFloodEvictsUnauthenticated(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnections: 5})

	// A flood of 50 idle connections from 50 addresses: each new one
	// takes the place of the oldest.
	var flood []*proxytest.Conn
	for i := range 50 {
		flood = append(flood, greeted(t, fmt.Sprintf("127.0.0.%d", 10+i), p.Addr))
		if i >= 5 {
			flood[i-5].Expect(byeEvicted(5))
			flood[i-5].ExpectClosed()
		}
	}
	proxytest.WaitCounts(t, p.Limiter, "5 connections", func(c limits.Counts) bool { return c.Connections == 5 })

	// A real user still gets in, and logs in.
	user := greeted(t, "127.0.0.2", p.Addr)
	flood[45].Expect(byeEvicted(5))
	user.LogIn("l", "LOGIN alice secret")

	// Four more sessions: now every connection is logged in.
	var sessions []*proxytest.Conn
	for i, c := range flood[46:] {
		flood[46+i] = nil
		c.LogIn("l", "LOGIN alice secret")
		sessions = append(sessions, c)
	}
	refused := proxytest.DialFrom(t, "127.0.0.3", p.Addr)
	refused.Expect(byeMaxConns(5))
	refused.ExpectClosed()
	for _, c := range append(sessions, user) {
		c.OK("n", "NOOP")
	}
}

// TestFloodConcurrent: a flood of idle connections from many addresses,
// at full speed from several goroutines, while real users log in: the
// limiter never holds more than max_connections, every user gets in
// (one whose connection is closed before its login retries, as a client
// does), and no logged-in session is closed for the flood.
func TestFloodConcurrent(t *testing.T) {
	const (
		maxConns = 20
		flooders = 8
		perFlood = 200
		users    = 10
	)
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnections: maxConns})
	stopSampler := sampleCounts(p.Limiter, maxConns, 1<<20, 1<<20, 1<<20)

	// The flood holds its connections until every user is done: without
	// evictions the users would find every slot taken.
	usersDone := make(chan struct{})
	var flood, wg sync.WaitGroup
	errs := make(chan error, flooders+users)
	for f := range flooders {
		flood.Go(func() {
			var open []*proxytest.Client
			defer func() {
				<-usersDone
				for _, c := range open {
					c.Close()
				}
			}()
			for i := range perFlood {
				c, err := proxytest.DialClient(fmt.Sprintf("127.0.%d.%d", 1+f, 1+i), p.Addr)
				if err != nil {
					errs <- err
					return
				}
				open = append(open, c)
				// A greeting, or at once the BYE of a refusal or of an
				// eviction that came before it was read.
				if _, err := c.Line(); err != nil {
					errs <- fmt.Errorf("flood: %w", err)
					return
				}
			}
		})
	}
	// The flood has taken every slot before the users come; it goes on
	// while they log in.
	proxytest.WaitCounts(t, p.Limiter, "the flood holding every slot", func(c limits.Counts) bool { return c.Connections == maxConns })
	sessions := make(chan *proxytest.Client, users)
	for u := range users {
		wg.Go(func() {
			// A user may be closed again and again while the flood is
			// faster than its login; once the flood is over it gets in.
			for deadline := time.Now().Add(proxytest.Timeout); time.Now().Before(deadline); {
				c, err := proxytest.DialClient(fmt.Sprintf("127.0.9.%d", 1+u), p.Addr)
				if err != nil {
					errs <- err
					return
				}
				l, err := c.Line()
				if err == nil && strings.HasPrefix(l, "* OK") {
					if _, st, err := c.Cmd("l", "LOGIN alice secret"); err == nil && strings.HasPrefix(st, "l OK") {
						sessions <- c
						return
					}
				}
				c.Close() // closed for the flood before it logged in: again
			}
			errs <- fmt.Errorf("user %d: not logged in within %v", u, proxytest.Timeout)
		})
	}
	wg.Wait()
	close(usersDone)
	flood.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, v := range stopSampler() {
		t.Error(v)
	}
	close(sessions)
	n := 0
	for c := range sessions {
		n++
		if _, st, err := c.Cmd("n", "NOOP"); err != nil || !strings.HasPrefix(st, "n OK") {
			t.Errorf("a session after the flood: %q, %v", st, err)
		}
		c.Logout("z")
	}
	if n != users {
		t.Errorf("%d of %d users logged in", n, users)
	}
}
