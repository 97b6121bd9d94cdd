package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestLimitIdleTimeoutIDLE: traffic during IDLE keeps a session alive
// past idle_timeout; without traffic it is cut idle_timeout after the
// last, not earlier. The proxy's timers run on a fake clock.
func TestLimitIdleTimeoutIDLE(t *testing.T) {
	const idle = 30 * time.Minute
	// idling starts a proxy with idle_timeout, in front of alice with one
	// message, and a client of it that logs in, selects INBOX and starts
	// IDLE. The proxy then runs one timer: the session's idle_timeout.
	idling := func(t *testing.T) (*countedProxy, *proxytest.Conn) {
		t.Helper()
		p := startCounted(t, proxy.Options{IdleTimeout: idle}, limits.Options{},
			server.User{Username: "alice", Password: "secret", Messages: 1})
		c := loginSelected(t, p.Addr)
		c.Idle("i")
		return p, c
	}

	t.Run("traffic keeps it alive", func(t *testing.T) {
		p, a := idling(t)
		// The traffic: b appends on the upstream itself, which tells a of
		// each new message. (Through the proxy, b's session would add a
		// timer of its own.)
		b := proxytest.Login(t, p.fwd.Addr, "alice", "secret")
		const period = idle / 3
		const msg = "Subject: ping\r\n\r\nping\r\n"
		for i := range 6 { // twice idle_timeout
			p.clock.Advance(period)
			// a's timer waits: when it came due, it found the traffic and
			// started itself again for the rest.
			p.clock.WaitTimers(t, 1)
			tag := fmt.Sprintf("ap%d", i)
			b.Send(fmt.Sprintf("%s APPEND INBOX {%d}\r\n", tag, len(msg)))
			b.ExpectPrefix("+")
			b.Send(msg + "\r\n")
			_, st := b.Until(tag)
			wantPrefix(t, "APPEND", st, tag+" OK")
			for {
				l := a.Line()
				if strings.HasPrefix(l, "* BYE") {
					t.Fatalf("IDLE session cut %v in, with traffic every %v: %q", time.Duration(i+1)*period, period, l)
				}
				if strings.HasSuffix(l, " EXISTS") {
					wantLine(t, "update", l, fmt.Sprintf("* %d EXISTS", i+2))
					break
				}
			}
		}
		// The traffic stops: a is cut idle_timeout after the last new
		// message reached it, not a nanosecond earlier.
		p.clock.ByeAfter(a, idle, 1, byeIdle("30m"))
	})

	t.Run("no traffic", func(t *testing.T) {
		p, c := idling(t)
		p.clock.ByeAfter(c, idle, 1, byeIdle("30m"))
		proxytest.WaitZero(t, p.Limiter)
	})
}
