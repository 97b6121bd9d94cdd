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
// past idle_timeout; without traffic it is cut, not earlier.
func TestLimitIdleTimeoutIDLE(t *testing.T) {
	const idle = 400 * time.Millisecond
	const period = idle / 4
	p := startCounted(t, proxy.Options{IdleTimeout: idle}, limits.Options{},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2", Messages: 1})
	// startIDLE logs in, selects INBOX and starts IDLE; it returns when
	// it sent IDLE.
	startIDLE := func(t *testing.T, user, pass string) (*proxytest.Conn, time.Time) {
		t.Helper()
		c := proxytest.Login(t, p.Addr, user, pass)
		c.OK("s", "SELECT INBOX")
		sent := time.Now()
		c.Idle("i")
		return c, sent
	}

	t.Run("traffic keeps it alive", func(t *testing.T) {
		a, _ := startIDLE(t, "alice", "secret")
		b := proxytest.Login(t, p.Addr, "alice", "secret")

		const msg = "Subject: ping\r\n\r\nping\r\n"
		tick := time.NewTicker(period)
		defer tick.Stop()
		start := time.Now()
		var lastSend time.Time
		appends := 0
		for time.Since(start) < 3*idle {
			<-tick.C
			lastSend = time.Now()
			tag := fmt.Sprintf("ap%d", appends)
			b.Send(fmt.Sprintf("%s APPEND INBOX {%d}\r\n", tag, len(msg)))
			b.ExpectPrefix("+")
			b.Send(msg + "\r\n")
			_, st := b.Until(tag)
			wantPrefix(t, "APPEND", st, tag+" OK")
			appends++
			// A sees the new message.
			for {
				l := a.Line()
				if strings.HasPrefix(l, "* BYE") {
					t.Fatalf("IDLE session cut after %v with traffic every %v: %q", time.Since(start), period, l)
				}
				if strings.HasSuffix(l, " EXISTS") {
					wantLine(t, "update", l, fmt.Sprintf("* %d EXISTS", appends+1))
					break
				}
			}
		}
		t.Logf("IDLE kept for %v (idle_timeout %v) by %d APPENDs", time.Since(start), idle, appends)

		// The traffic stops: A is cut, not before idle_timeout after the
		// last APPEND was sent.
		byeAfter(t, a, "idle_timeout=400ms", lastSend, idle)
	})

	t.Run("no traffic", func(t *testing.T) {
		c, start := startIDLE(t, "bob", "hunter2")
		byeAfter(t, c, "", start, idle)
	})

	proxytest.WaitZero(t, p.Limiter)
}
