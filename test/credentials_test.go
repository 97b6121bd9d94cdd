package test

import (
	"testing"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestNULInCredentials: a user name or password with a NUL in it is
// refused before the upstream is asked, in every form a client can send
// one (RFC 4616: no NUL in authcid or passwd). Passed on as PLAIN, where
// NUL separates the fields, such a user name could log in someone other
// than the user the proxy counts.
func TestNULInCredentials(t *testing.T) {
	const refused = " BAD NUL is not allowed in a user name or password"
	p := startCounted(t, proxy.Options{MaxBadCommands: 10}, limits.Options{})
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"LOGIN, user as a literal", []step{{"a LOGIN {10+}\r\nalice\x00root secret\r\n", []string{"a" + refused}}}},
		{"LOGIN, password as a literal", []step{{"a LOGIN alice {8+}\r\nsec\x00ret\r\n", []string{"a" + refused}}}},
		{"AUTHENTICATE LOGIN, user", []step{
			{"a AUTHENTICATE LOGIN\r\n", []string{"+ VXNlcm5hbWU6"}},
			{proxytest.Base64("alice\x00root") + "\r\n", []string{"+ UGFzc3dvcmQ6"}},
			{proxytest.Base64("secret") + "\r\n", []string{"a" + refused}}}},
		{"AUTHENTICATE LOGIN, password, initial response", []step{
			{"a AUTHENTICATE LOGIN " + proxytest.Base64("alice") + "\r\n", []string{"+ UGFzc3dvcmQ6"}},
			{proxytest.Base64("sec\x00ret") + "\r\n", []string{"a" + refused}}}},
		// PLAIN has exactly two NULs: a third is a malformed response.
		{"AUTHENTICATE PLAIN, a NUL too many", []step{
			{"a AUTHENTICATE PLAIN " + proxytest.Base64("\x00alice\x00sec\x00ret") + "\r\n", []string{"a BAD Malformed PLAIN response"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dials := p.dials.Dials.Load()
			c := greeted(t, "", p.Addr)
			for _, s := range tc.steps {
				c.Send(s.send)
				for _, want := range s.expect {
					c.Expect(want)
				}
			}
			// The connection goes on, and the upstream was never asked.
			c.OK("n", "NOOP")
			p.wantDials(t, dials, " (the credentials were refused before the upstream)")
			c.LogIn("l", "LOGIN alice secret")
		})
	}
}
