package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestLimitIdleTimeoutIDLE: traffic during IDLE keeps a session alive
// past idle_timeout; without traffic it is cut idle_timeout after the
// last, not earlier. The proxy's timers run on a fake clock.
func TestLimitIdleTimeoutIDLE(t *testing.T) {
	const idle = 30 * time.Minute
	// idling starts a proxy with idle_timeout in front of a scripted
	// upstream, and a client of it that logs in, selects INBOX, has that
	// noted (Settle) and starts IDLE; the proxy then runs one timer, the
	// session's idle_timeout. It returns the upstream's side of the
	// session, on which the test writes the upstream's updates: imapd
	// would lose one that came right after its "+ idling" (go-imap starts
	// watching the mailbox only after sending it). The proxy may note the
	// IDLE itself after the client has read "+ idling" (see
	// proxytest.Clock); over plaintext both ways that was not seen in 1000
	// runs under load.
	idling := func(t *testing.T) (*proxytest.Clock, *proxytest.Conn, *proxytest.FakeConn) {
		t.Helper()
		up := proxytest.StartFake(t, proxytest.Respond("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n",
			func(_ *proxytest.FakeConn, cmd proxytest.Command) string {
				switch strings.ToUpper(cmd.Name) {
				case "LOGIN", "AUTHENTICATE":
					return cmd.Tag + " OK [CAPABILITY IMAP4rev1 IDLE] in\r\n"
				case "SELECT":
					return "* 1 EXISTS\r\n" + cmd.Tag + " OK [READ-WRITE] SELECT completed\r\n"
				case "IDLE":
					return "+ idling\r\n"
				}
				return cmd.Tag + " BAD unexpected\r\n"
			}))
		clk := proxytest.NewClock()
		p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{IdleTimeout: idle, Clock: clk}})
		c := loginSelected(t, p.Addr)
		c.Settle("x")
		c.Idle("i")
		select {
		case fc := <-up.Accepted:
			return clk, c, fc
		case <-time.After(proxytest.Timeout):
			t.Fatal("the upstream accepted no connection")
			return nil, nil, nil
		}
	}

	t.Run("traffic keeps it alive", func(t *testing.T) {
		clk, c, up := idling(t)
		const period = idle / 3
		for i := range 6 { // twice idle_timeout
			clk.Advance(period)
			// The session's timer waits: when it came due, it found the
			// traffic and started itself again for the rest.
			clk.WaitTimers(t, 1)
			exists := fmt.Sprintf("* %d EXISTS", i+2)
			if err := up.Write(exists + "\r\n"); err != nil {
				t.Fatal(err)
			}
			c.Expect(exists)
		}
		// The traffic stops: the session is cut idle_timeout after the
		// last update reached it, not a nanosecond earlier.
		clk.ByeAfter(c, idle, 1, byeIdle("30m"))
	})

	t.Run("no traffic", func(t *testing.T) {
		clk, c, _ := idling(t)
		clk.ByeAfter(c, idle, 1, byeIdle("30m"))
	})
}
