package test

import (
	"fmt"
	"testing"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

const evictedBye = "* BYE [UNAVAILABLE] Too many connections; closing the oldest unauthenticated one (max_connections=5)"

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
			flood[i-5].Expect(evictedBye)
			flood[i-5].ExpectClosed()
		}
	}
	proxytest.WaitCounts(t, p.Limiter, "5 connections", func(c limits.Counts) bool { return c.Connections == 5 })

	// A real user still gets in, and logs in.
	user := greeted(t, "127.0.0.2", p.Addr)
	flood[45].Expect(evictedBye)
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
