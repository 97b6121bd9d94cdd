package test

import (
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestLimitLiveReload changes the limiter's caps and the server's
// options while connections are open: new connections get the new
// values, older ones keep theirs.
func TestLimitLiveReload(t *testing.T) {
	t.Run("limiter", func(t *testing.T) {
		p := startCounted(t, proxy.Options{}, limits.Options{})
		c1 := greeted(t, "", p.Addr)
		c2 := greeted(t, "", p.Addr)
		c3 := greeted(t, "127.0.0.2", p.Addr)

		p.Limiter.SetOptions(limits.Options{MaxConnections: 2})
		refused(t, "", p.Addr, byeMaxConns(2))
		// The connections over the new cap are kept.
		c1.OK("n", "NOOP")
		c2.OK("n", "NOOP")
		c3.OK("n", "NOOP")

		c1.Logout("z")
		// Still 2 counted (or 3 if c1 is not unwound yet): refused.
		refused(t, "", p.Addr, byeMaxConns(2))
		c2.Logout("z")
		proxytest.WaitCounts(t, p.Limiter, "one connection left", func(c limits.Counts) bool { return c.Connections == 1 })
		c4 := greeted(t, "", p.Addr)

		// Per address and per user, lowered and raised.
		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 1, MaxConnectionsPerUser: 1})
		refused(t, "127.0.0.2", p.Addr, byeMaxPerIP(1))
		c3.OK("l", "LOGIN alice secret")
		_, st := c4.Cmd("l", "LOGIN alice secret")
		wantLine(t, "2nd session of alice with per-user cap 1", st, noMaxPerUser("l", 1))

		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 2, MaxConnectionsPerUser: 2})
		_, st = c4.Cmd("l2", "LOGIN alice secret")
		wantPrefix(t, "LOGIN after raising the per-user cap", st, "l2 OK ")
		greeted(t, "127.0.0.2", p.Addr)
	})

	t.Run("server options", func(t *testing.T) {
		const preauth = 500 * time.Millisecond
		const tooBig = " BAD [TOOBIG] Command too long (max_command_size=64)"
		p := startCounted(t, proxy.Options{}, limits.Options{})
		old := greeted(t, "", p.Addr)
		oldSess := proxytest.Login(t, p.Addr, "alice", "secret")
		oldLast := time.Now()

		p.Server.SetOptions(proxy.Options{UpstreamAddr: p.fwd.Addr, Dial: p.dials.Dial,
			MaxCommandSize: 64, PreauthTimeout: preauth, IdleTimeout: preauth})
		start := time.Now()
		fresh := greeted(t, "", p.Addr)

		long := `ID ("name" "` + strings.Repeat("x", 100) + `")`
		_, st := fresh.Cmd("t1", long)
		wantLine(t, "long ID on a new connection", st, "t1"+tooBig)
		if un := old.OK("t1", long); len(un) != 1 || !strings.HasPrefix(un[0], "* ID ") {
			t.Fatalf("long ID on an older connection: got %q; want * ID", un)
		}

		// The new connection has the new pre-auth timeout.
		byeAfter(t, fresh, "preauth_timeout=500ms", start, preauth)

		// A new session gets the new idle timeout; the older session keeps
		// the default one although it was quiet for longer.
		sess := proxytest.Login(t, p.Addr, "alice", "secret")
		list := `LIST "" "` + strings.Repeat("x", 100) + `"`
		_, st = sess.Cmd("t2", list)
		wantLine(t, "long LIST in a new session", st, "t2"+tooBig)
		sess.ExpectPrefix("* BYE")
		sess.ExpectClosed()
		if q := time.Since(oldLast); q < preauth {
			t.Fatalf("older session quiet for %v only; want more than %v", q, preauth)
		}
		oldSess.OK("n", "NOOP")
		oldSess.OK("t2", list) // the older session keeps max_command_size 10240
		old.OK("n", "NOOP")
		proxytest.WaitCounts(t, p.Limiter, "two connections left", func(c limits.Counts) bool { return c.Connections == 2 })
	})
}
