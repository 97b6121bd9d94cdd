package test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

// TestE2EPipelining sends login and the first commands in one write: the
// commands after the login are relayed once it succeeds (RFC 9051 §5.5).
func TestE2EPipelining(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		cases := []struct {
			name, send string
			tags       []string // of the commands after the login
			logout     bool     // the last of them is LOGOUT
		}{
			{"login", "a LOGIN " + user + " " + pass + "\r\nb SELECT INBOX\r\nc NOOP\r\n", []string{"b", "c"}, false},
			{"login with literal", "a LOGIN " + user + " {" + strconv.Itoa(len(pass)) + "+}\r\n" + pass + "\r\nb SELECT INBOX\r\nc NOOP\r\n",
				[]string{"b", "c"}, false},
			{"authenticate fetch logout", "a AUTHENTICATE PLAIN " + proxytest.SASLPlain(user, pass) +
				"\r\nb SELECT INBOX\r\nc NOOP\r\nd FETCH 1 (BODY.PEEK[])\r\ne LOGOUT\r\n", []string{"b", "c", "d", "e"}, true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				c.Send(tc.send)
				// The proxy answers the login before it relays anything.
				c.ExpectPrefix("a OK [CAPABILITY ")
				un, st := c.UntilAll(tc.tags...)
				for _, tag := range tc.tags {
					if !strings.HasPrefix(st[tag], tag+" OK") {
						t.Errorf("command %s: got %q; want OK (all answers %q, untagged %q)", tag, st[tag], st, un)
					}
				}
				if !slices.Contains(un, "* 1 EXISTS") {
					t.Errorf("SELECT: no * 1 EXISTS in %q", un)
				}
				if !tc.logout {
					c.SelectAndLogout("")
					return
				}
				hasPrefix := func(prefix string) bool {
					return slices.ContainsFunc(un, func(l string) bool { return strings.HasPrefix(l, prefix) })
				}
				if !hasPrefix("* 1 FETCH ") || !hasPrefix("* BYE") {
					t.Errorf("no * 1 FETCH or * BYE in %q", un)
				}
				if !slices.Contains(un, "Hello through imapguard.") {
					t.Errorf("FETCH did not return message 1: %q", un)
				}
				c.ExpectClosed()
			})
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}
