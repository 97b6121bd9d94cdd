package test

import (
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

// forbiddenCap reports capabilities the client must not see after login
// through the proxy.
func forbiddenCap(c string) bool {
	u := strings.ToUpper(c)
	return strings.HasPrefix(u, "COMPRESS=") || strings.HasPrefix(u, "AUTH=") ||
		u == "STARTTLS" || u == "LOGINDISABLED"
}

// TestE2ECapabilities checks the capabilities a client sees after login:
// the upstream's own, without COMPRESS (RFC 4978 would blind the proxy's
// framing), STARTTLS or AUTH= (RFC 9051 §6.2.1, §6.2.2); and that
// COMPRESS is refused by the proxy, not forwarded.
func TestE2ECapabilities(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})

		// What the upstream itself offers after login.
		d := proxytest.Dial(t, up)
		d.Greeting()
		if _, st := d.Cmd("a", "LOGIN "+user+" "+pass); !strings.Contains(st, "OK") {
			t.Fatalf("direct login: %q", st)
		}
		direct := proxytest.Caps(proxytest.CapLine(d.OK("b", "CAPABILITY")))
		if len(direct) == 0 {
			t.Fatal("the upstream's CAPABILITY listed nothing")
		}
		d.Cmd("c", "LOGOUT")
		t.Logf("upstream capabilities after login: %v", direct)

		c := proxytest.Dial(t, p.Addr)
		c.Greeting()
		st := c.LogIn("a", "LOGIN "+user+" "+pass)
		inOK := proxytest.Caps(st)
		t.Logf("capabilities in the tagged OK: %v", inOK)
		for _, cp := range inOK {
			if forbiddenCap(cp) {
				t.Errorf("tagged OK of LOGIN offers %s: %q", cp, st)
			}
		}
		if !proxytest.HasCap(inOK, "IMAP4rev1") && !proxytest.HasCap(inOK, "IMAP4rev2") {
			t.Errorf("tagged OK of LOGIN lacks IMAP4rev1/IMAP4rev2: %q", st)
		}
		// Everything else the upstream offers is passed on.
		for _, cp := range direct {
			if forbiddenCap(cp) || strings.EqualFold(cp, "SASL-IR") {
				continue
			}
			if !proxytest.HasCap(inOK, cp) {
				t.Errorf("upstream capability %s missing from the proxy's list %v", cp, inOK)
			}
		}

		relayed := proxytest.Caps(proxytest.CapLine(c.OK("b", "CAPABILITY")))
		if len(relayed) == 0 {
			t.Fatal("CAPABILITY after login listed nothing")
		}
		for _, cp := range relayed {
			if forbiddenCap(cp) {
				t.Errorf("CAPABILITY after login offers %s: %v", cp, relayed)
			}
		}

		if _, st := c.Cmd("x", "COMPRESS DEFLATE"); !strings.HasPrefix(st, "x NO") {
			t.Fatalf("COMPRESS DEFLATE: got %q; want x NO", st)
		}
		// The stream is still plain IMAP.
		c.OK("y", "NOOP")
		c.SelectAndLogout("* 1 EXISTS")
		proxytest.WaitZero(t, p.Limiter)
	})
}
