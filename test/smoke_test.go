package test

import (
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

func TestSmokeLoginSelectLogout(t *testing.T) {
	p := proxytest.Start(t, proxytest.Config{Upstream: proxytest.Imapd(t)})
	c := proxytest.Login(t, p.Addr, "alice", "secret")
	c.OK("a", "SELECT INBOX")
	c.OK("b", "FETCH 1 BODY.PEEK[]")
	c.Logout("c")
	proxytest.WaitZero(t, p.Limiter)
}
