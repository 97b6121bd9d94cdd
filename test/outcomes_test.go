package test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestSessionOutcomes ends a logged-in session in each way there is,
// through real sockets, in a plaintext and in a TLS session, and checks
// what the proxy says of who ended it: the connection span's outcome,
// the session span's ended_by, and the outcome label of
// imapguard.connections.closed (issue 10: a client's close used to be
// recorded as the upstream's, since the proxy's half-close made the
// upstream close first).
func TestSessionOutcomes(t *testing.T) {
	ca := newTestCA(t, "outcomes CA")
	msg := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 1<<18) // 4.5 MiB
	for _, tc := range []struct {
		name, outcome, endedBy string
		// idle sets idle_timeout, which also bounds a relayed write to
		// the client; the idle timer runs on a fake clock.
		idle time.Duration
		end  func(t *testing.T, s *outcomeSession)
	}{
		{name: "client LOGOUT", outcome: "logout", endedBy: "client", end: func(t *testing.T, s *outcomeSession) {
			s.c.Logout("z")
		}},
		{name: "client close", outcome: "client closed", endedBy: "client", end: func(t *testing.T, s *outcomeSession) {
			s.c.Close()
		}},
		{name: "client reset", outcome: "client reset", endedBy: "client", end: func(t *testing.T, s *outcomeSession) {
			s.c.Reset()
		}},
		{name: "upstream close", outcome: "upstream closed", endedBy: "upstream", end: func(t *testing.T, s *outcomeSession) {
			s.fwd.Cut()
			s.c.ExpectClosed()
		}},
		{name: "upstream reset", outcome: "upstream reset", endedBy: "upstream", end: func(t *testing.T, s *outcomeSession) {
			s.fwd.Reset()
			s.c.ExpectClosed()
		}},
		{name: "idle timeout", outcome: "idle timeout", endedBy: "proxy", end: func(t *testing.T, s *outcomeSession) {
			if !s.clock.WaitPending(1, proxytest.Timeout) {
				t.Fatal("no idle timer")
			}
			s.clock.Advance(limits.DefaultIdleTimeout)
			s.c.Expect("* BYE Autologout; idle for too long (idle_timeout=30m)")
			s.c.ExpectClosed()
		}},
		{name: "kick", outcome: "kicked", endedBy: "proxy", end: func(t *testing.T, s *outcomeSession) {
			if _, err := s.p.Server.Kick(proxy.Match{User: "alice"}, "bye"); err != nil {
				t.Fatal(err)
			}
			s.c.Expect("* BYE [UNAVAILABLE] bye")
			s.c.ExpectClosed()
		}},
		{name: "shutdown", outcome: "proxy shutdown", endedBy: "proxy", end: func(t *testing.T, s *outcomeSession) {
			go s.p.Server.Shutdown(context.Background())
			s.c.Expect("* BYE [UNAVAILABLE] Server shutting down")
			s.c.ExpectClosed()
		}},
		{name: "write timeout", outcome: "write timeout", endedBy: "proxy", idle: time.Second, end: func(t *testing.T, s *outcomeSession) {
			// The client stops reading in the middle of a large FETCH:
			// the proxy's write to it times out (after idle_timeout on
			// the wall clock) and it is closed.
			s.c.Send("a APPEND INBOX {" + strconv.Itoa(len(msg)) + "+}\r\n" + msg + "\r\n")
			_, st := s.c.Until("a")
			wantPrefix(t, "APPEND", st, "a OK")
			s.c.Send("f FETCH * BODY.PEEK[]\r\n")
		}},
	} {
		for _, useTLS := range []bool{false, true} {
			name := tc.name + ", plaintext"
			if useTLS {
				name = tc.name + ", TLS"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s := startOutcomeSession(t, ca, useTLS, tc.idle)
				tc.end(t, s)
				root := s.p.tree(t, "")
				wantAttr(t, root, "imapguard.outcome", tc.outcome)
				wantAttr(t, root, "imapguard.session.ended_by", tc.endedBy)
				label := "outcome=" + strings.ReplaceAll(tc.outcome, " ", "_")
				if got := collect(t, s.p.reader).sum("imapguard.connections.closed", label); got != 1 {
					t.Errorf("imapguard.connections.closed{%s} = %v; want 1", label, got)
				}
			})
		}
	}
}

// outcomeSession is one logged-in session (INBOX selected) through a
// traced proxy whose upstream is behind a forwarder.
type outcomeSession struct {
	p     *tracedProxy
	fwd   *proxytest.Forwarder
	clock *clock.Fake
	c     *proxytest.Conn
}

func startOutcomeSession(t *testing.T, ca *testCA, useTLS bool, idle time.Duration) *outcomeSession {
	t.Helper()
	s := &outcomeSession{clock: clock.NewFake(time.Now())}
	s.fwd = proxytest.Forward(t, proxytest.Imapd(t, server.User{Username: "alice", Password: "secret", Messages: 1}))
	s.p = startTracedProxy(t, s.fwd.Addr, proxy.Options{TLSConfig: ca.serverConfig(), AllowPlaintextAuth: true,
		Clock: s.clock, IdleTimeout: idle}, limits.Options{})
	s.c = proxytest.Dial(t, s.p.Addr)
	s.c.Greeting()
	if useTLS {
		s.c.StartTLS("s", ca.clientConfig())
	}
	s.c.LogIn("l", "LOGIN alice secret")
	s.c.OK("s1", "SELECT INBOX")
	return s
}
