package server_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/test/proxytest"
)

// startTokens starts a server where alice has a test token and bob, with
// a comma and an equals sign in his name, another.
func startTokens(t *testing.T) string {
	t.Helper()
	return proxytest.Imapd(t,
		server.User{Username: "alice", Password: "secret", Token: "alice-token", Messages: 1},
		server.User{Username: "bob,x=y", Password: "pw", Token: "bob-token"})
}

// TestOAuthAdvertised: AUTH=OAUTHBEARER and AUTH=XOAUTH2 are offered
// when a user has a token, and only then.
func TestOAuthAdvertised(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		want bool
	}{
		{"tokens", startTokens(t), true},
		{"no tokens", proxytest.Imapd(t, server.User{Username: "alice", Password: "secret"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caps := proxytest.Caps(proxytest.Dial(t, tc.addr).Greeting())
			for _, m := range []string{"AUTH=OAUTHBEARER", "AUTH=XOAUTH2"} {
				if got := proxytest.HasCap(caps, m); got != tc.want {
					t.Errorf("%s in %v: got %v; want %v", m, caps, got, tc.want)
				}
			}
		})
	}
}

// TestOAuthLogin: the right token logs in, with and without SASL-IR, by
// both mechanisms; the GS2 authzid's escapes are undone.
func TestOAuthLogin(t *testing.T) {
	addr := startTokens(t)
	for _, tc := range []struct{ name, mech, resp string }{
		{"OAUTHBEARER", "OAUTHBEARER", proxytest.SASLOAuthBearer("alice", "alice-token")},
		{"OAUTHBEARER escaped user", "OAUTHBEARER", proxytest.SASLOAuthBearer("bob,x=y", "bob-token")},
		{"XOAUTH2", "XOAUTH2", proxytest.SASLXOAuth2("alice", "alice-token")},
	} {
		for _, ir := range []bool{true, false} {
			name := tc.name + "/SASL-IR"
			if !ir {
				name = tc.name + "/continuation"
			}
			t.Run(name, func(t *testing.T) {
				c := proxytest.Dial(t, addr)
				c.Greeting()
				if ir {
					c.Send("a AUTHENTICATE " + tc.mech + " " + tc.resp + "\r\n")
				} else {
					c.Send("a AUTHENTICATE " + tc.mech + "\r\n")
					c.Expect("+ ")
					c.Send(tc.resp + "\r\n")
				}
				if _, st := c.Until("a"); !strings.HasPrefix(st, "a OK") {
					t.Fatalf("got %q; want a OK", st)
				}
				c.Logout("z")
			})
		}
	}
}

// TestOAuthFailure: a wrong token gets the error challenge, and the
// client's dummy response a NO [AUTHENTICATIONFAILED]; a malformed
// response gets BAD.
func TestOAuthFailure(t *testing.T) {
	addr := startTokens(t)
	for _, tc := range []struct{ name, mech, resp, dummy string }{
		{"OAUTHBEARER wrong token", "OAUTHBEARER", proxytest.SASLOAuthBearer("alice", "bob-token"), "AQ=="},
		{"OAUTHBEARER unknown user", "OAUTHBEARER", proxytest.SASLOAuthBearer("carol", "alice-token"), "AQ=="},
		{"XOAUTH2 wrong token", "XOAUTH2", proxytest.SASLXOAuth2("alice", "nope"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, addr)
			c.Greeting()
			c.Send("a AUTHENTICATE " + tc.mech + " " + tc.resp + "\r\n")
			ch := strings.TrimPrefix(c.ExpectPrefix("+ "), "+ ")
			js, err := base64.StdEncoding.DecodeString(ch)
			if err != nil || !strings.Contains(string(js), `"status"`) {
				t.Fatalf("challenge %q (%s, %v); want base64 of a JSON status", ch, js, err)
			}
			c.Send(tc.dummy + "\r\n")
			if _, st := c.Until("a"); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
				t.Fatalf("got %q; want a NO [AUTHENTICATIONFAILED]", st)
			}
		})
	}
	for _, tc := range []struct{ name, mech, resp string }{
		{"no authzid", "OAUTHBEARER", proxytest.Base64("n,,\x01auth=Bearer alice-token\x01\x01")},
		{"bad escape", "OAUTHBEARER", proxytest.Base64("n,a=al=2Xice,\x01auth=Bearer alice-token\x01\x01")},
		{"not bearer", "XOAUTH2", proxytest.Base64("user=alice\x01auth=Basic alice-token\x01\x01")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, addr)
			c.Greeting()
			if _, st := c.Cmd("a", "AUTHENTICATE "+tc.mech+" "+tc.resp); !strings.HasPrefix(st, "a BAD") {
				t.Fatalf("got %q; want a BAD", st)
			}
		})
	}
}
