package test

// The caps of issue 11: max_connection_rate_per_ip,
// max_connections_per_user_ip, overrides and exempt networks, and
// changing them while sessions are open, through the proxy on real
// sockets from distinct client addresses.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

func byeRate(r string) string {
	return "* BYE [UNAVAILABLE] Too many new connections from your address (max_connection_rate_per_ip=" + r + ")"
}

func noMaxPerUserIP(tag string, n int) string {
	return fmt.Sprintf("%s NO [LIMIT] Too many connections for this user from your address (max_connections_per_user_ip=%d)", tag, n)
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// TestCapRate: over max_connection_rate_per_ip an address gets the BYE
// while another still connects; time on the proxy's clock gives tokens
// back, and connections closed do not.
func TestCapRate(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnectionRatePerIP: 1}) // burst 2
	a1 := greeted(t, "127.0.0.2", p.Addr)
	a2 := greeted(t, "127.0.0.2", p.Addr)
	refused(t, "127.0.0.2", p.Addr, byeRate("1"))
	b := greeted(t, "127.0.0.3", p.Addr)
	b.LogIn("l", "LOGIN alice secret")

	// Closing connections gives no token back: it is a rate.
	a1.Logout("z")
	a2.Close()
	proxytest.WaitCounts(t, p.Limiter, "127.0.0.2 closed", func(c limits.Counts) bool { return c.Connections == 1 })
	refused(t, "127.0.0.2", p.Addr, byeRate("1"))
	p.wantDials(t, 1, " (refused connections must not reach the upstream)")

	// One second later, one connection; not two.
	p.clock.Advance(time.Second)
	greeted(t, "127.0.0.2", p.Addr).LogIn("l", "LOGIN alice secret")
	refused(t, "127.0.0.2", p.Addr, byeRate("1"))
	b.OK("n", "NOOP")
}

// TestCapRateImaps: on the imaps listener an address over the rate is
// closed without a line, as for the other connection caps.
func TestCapRateImaps(t *testing.T) {
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{Limits: limits.Options{MaxConnectionRatePerIP: 0.5}, // burst 1
		Options: proxy.Options{Clock: proxytest.NewClock()}})
	c, _ := proxytest.DialTLS(t, p.TLSAddr, ca.clientConfig())
	c.Greeting()
	data, err := proxytest.DialFrom(t, "", p.TLSAddr).ReadToEnd()
	if len(data) != 0 {
		t.Errorf("imaps: connection over the rate got %q; want a close", data)
	}
	t.Logf("imaps: closed, read error %v", err)
	// The plaintext listener shares the address's rate.
	refused(t, "", p.Addr, byeRate("0.5"))
	c.Logout("z")
}

// TestCapUserIP: max_connections_per_user_ip refuses the user's login
// from one address with NO [LIMIT], after the upstream accepted it (and
// the upstream session is logged out), while the same user from another
// address gets in.
func TestCapUserIP(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnectionsPerUserIP: 2},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2"})
	s1 := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	s2 := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	c := greeted(t, "127.0.0.2", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "3rd LOGIN of alice from 127.0.0.2", st, noMaxPerUserIP("l1", 2))
	p.wantDials(t, 3, " (the cap is checked after the upstream accepted)")
	p.dials.WaitOpen(t, 2) // the refused login's upstream session was closed

	// The same user from another address, another user from the same.
	other := proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "alice", "secret")
	_, st = c.Cmd("l2", "LOGIN bob hunter2")
	wantPrefix(t, "bob from 127.0.0.2", st, "l2 OK ")

	// A session leaving frees the slot.
	s1.Logout("z")
	proxytest.WaitCounts(t, p.Limiter, "one alice session from 127.0.0.2 left", func(c limits.Counts) bool { return c.PerUser["alice"] == 2 })
	proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret").OK("n", "NOOP")
	s2.OK("n", "NOOP")
	other.OK("n", "NOOP")
}

// TestCapOverride: an override raises one user's per-user cap while the
// others keep the default; a network override raises a per-address cap.
func TestCapOverride(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{
		MaxConnectionsPerUser: 1, MaxConnectionsPerIP: 2,
		Overrides: []limits.Override{
			{Users: []string{"Alice"}, MaxConnectionsPerUser: 3},
			{Networks: prefixes("127.0.0.4/32"), MaxConnectionsPerIP: 4},
		},
	},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2"})
	var open []*proxytest.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		open = append(open, proxytest.LoginFrom(t, src, p.Addr, "alice", "secret"))
	}
	c := greeted(t, "127.0.0.3", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "4th LOGIN of alice", st, noMaxPerUser("l1", 3))
	_, st = c.Cmd("l2", "LOGIN bob hunter2")
	wantPrefix(t, "bob's first", st, "l2 OK ")
	d := greeted(t, "127.0.0.5", p.Addr)
	_, st = d.Cmd("l1", "LOGIN bob hunter2")
	wantLine(t, "bob's second", st, noMaxPerUser("l1", 1))

	// 127.0.0.4 may open four connections, 127.0.0.2 two.
	refused(t, "127.0.0.2", p.Addr, byeMaxPerIP(2))
	for range 4 {
		open = append(open, greeted(t, "127.0.0.4", p.Addr))
	}
	refused(t, "127.0.0.4", p.Addr, byeMaxPerIP(4))
	for _, o := range open {
		o.OK("n", "NOOP")
	}
}

// TestCapExempt: a client in exempt_networks goes over
// max_connections_per_ip, max_connections_per_user_ip and the rate;
// others do not.
func TestCapExempt(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{
		MaxConnectionsPerIP: 2, MaxConnectionsPerUserIP: 1, MaxConnectionRatePerIP: 1,
		ExemptNetworks: prefixes("127.0.0.2/32"),
	})
	var open []*proxytest.Conn
	for range 3 {
		open = append(open, proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret"))
	}
	for range 2 {
		open = append(open, greeted(t, "127.0.0.2", p.Addr))
	}
	open = append(open, proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "alice", "secret"))
	c := greeted(t, "127.0.0.3", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "2nd alice from 127.0.0.3", st, noMaxPerUserIP("l1", 1))
	refused(t, "127.0.0.3", p.Addr, byeRate("1"))
	p.clock.Advance(2 * time.Second) // the rate lets it through; the count does not
	refused(t, "127.0.0.3", p.Addr, byeMaxPerIP(2))
	for _, o := range open {
		o.OK("n", "NOOP")
	}
}

// TestCapReload changes the caps with the limiter's SetOptions, which
// SIGHUP calls (cmd/imapguard reload, TestReloadCaps there), while
// sessions are open: lowering closes nothing and refuses new ones;
// raising admits at once.
func TestCapReload(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnectionsPerUserIP: 3})
	var open []*proxytest.Conn
	for range 3 {
		open = append(open, proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret"))
	}
	// Lowered: the three sessions stay and work; a fourth is refused.
	p.Limiter.SetOptions(limits.Options{MaxConnectionsPerUserIP: 1, MaxConnectionRatePerIP: 1})
	for _, o := range open {
		o.OK("n", "NOOP")
	}
	c := greeted(t, "127.0.0.2", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "LOGIN after lowering", st, noMaxPerUserIP("l1", 1))
	greeted(t, "127.0.0.3", p.Addr)
	greeted(t, "127.0.0.3", p.Addr) // the burst is twice the rate
	refused(t, "127.0.0.3", p.Addr, byeRate("1"))

	// Raised by an override for the user, the rate by an exemption: at
	// once, on the connection refused before.
	p.Limiter.SetOptions(limits.Options{MaxConnectionsPerUserIP: 1, MaxConnectionRatePerIP: 1,
		Overrides:      []limits.Override{{Users: []string{"alice"}, Networks: prefixes("127.0.0.0/8"), MaxConnectionsPerUserIP: 5}},
		ExemptNetworks: prefixes("127.0.0.3/32"),
	})
	_, st = c.Cmd("l2", "LOGIN alice secret")
	wantPrefix(t, "LOGIN after raising", st, "l2 OK ")
	greeted(t, "127.0.0.3", p.Addr).LogIn("l", "LOGIN alice secret")
	for _, o := range open {
		o.OK("n", "NOOP")
	}
	if n := p.Limiter.Counts().PerUser["alice"]; n != 5 {
		t.Errorf("alice's sessions: got %d; want 5", n)
	}
}

// TestCapMetrics: the refusals of the rate and of the user+address cap
// are counted with their own reasons, and the refused login's result is
// limit.
func TestCapMetrics(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword, Messages: 1})
	tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{
		MaxConnectionRatePerIP: 0.01, MaxConnectionsPerUserIP: 1, // a burst of 1, then one per 100 s
		Overrides: []limits.Override{{Networks: prefixes("127.0.0.3/32"), MaxConnectionRatePerIP: 1000}},
	})
	a := proxytest.LoginFrom(t, "127.0.0.2", tp.Addr, "alice", tracedPassword)
	refused(t, "127.0.0.2", tp.Addr, byeRate("0.01"))
	b := proxytest.LoginFrom(t, "127.0.0.3", tp.Addr, "alice", tracedPassword)
	c := greeted(t, "127.0.0.3", tp.Addr)
	_, st := c.Cmd("l", "LOGIN alice "+tracedPassword)
	wantLine(t, "2nd alice from 127.0.0.3", st, noMaxPerUserIP("l", 1))
	for _, s := range []*proxytest.Conn{a, b, c} {
		s.Logout("z")
	}
	proxytest.WaitZero(t, tp.Limiter)
	m := collectUntil(t, tp.reader, "no connection open", func(m metrics) bool {
		return m.gauge("imapguard.connections.open") == 0
	})
	m.want(t, []metricWant{
		{"sum", "imapguard.connections.refused", []string{"reason=max_connection_rate_per_ip"}, 1},
		{"sum", "imapguard.connections.refused", []string{"reason=max_connections_per_user_ip"}, 1},
		{"sum", "imapguard.auth.attempts", []string{"result=limit"}, 1},
		{"sum", "imapguard.connections.closed", []string{"outcome=refused"}, 1},
		{"gauge", "imapguard.limit", []string{"limit=max_connections_per_user_ip"}, 1},
	})
}
