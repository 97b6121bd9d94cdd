package test

import (
	"strings"
	"testing"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

func TestSmokeLoginSelectLogout(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up, proxy.Options{}, limits.Options{})
	c := login(t, p.Addr, "alice", "secret")
	un, st := c.cmd("a", "SELECT INBOX")
	if !strings.HasPrefix(st, "a OK") {
		t.Fatalf("select: %q %q", un, st)
	}
	un, st = c.cmd("b", "FETCH 1 BODY.PEEK[]")
	if !strings.HasPrefix(st, "b OK") {
		t.Fatalf("fetch: %q %q", un, st)
	}
	un, st = c.cmd("c", "LOGOUT")
	if !strings.HasPrefix(st, "c OK") || len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") {
		t.Fatalf("logout: %q %q", un, st)
	}
	c.expectClosed()
	waitZero(t, p.Limiter)
}
