package limits

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// admitAt admits n connections from addr at now and returns their
// release functions; it fails the test at the first refusal.
func admitAt(t *testing.T, l *Limiter, addr netip.Addr, now time.Time, n int) []func() {
	t.Helper()
	var rels []func()
	for i := range n {
		rel, _, err := l.AdmitConnAt(addr, now)
		if err != nil {
			t.Fatalf("connection %d from %v at %v: got %v; want admitted", i+1, addr, now.Sub(t0), err)
		}
		rels = append(rels, rel)
	}
	return rels
}

func TestRate(t *testing.T) {
	l := New(Options{MaxConnectionRatePerIP: 2}) // burst 4
	rels := admitAt(t, l, ip2, t0, 4)
	rel, checks, err := l.AdmitConnAt(ip2, t0)
	wantLimitErr(t, err, "max_connection_rate_per_ip", 4, "Too many new connections from your address (max_connection_rate_per_ip=2)")
	if rel != nil {
		t.Errorf("got a release function with the error; want nil")
	}
	if got, want := checks[len(checks)-1], (Check{"max_connection_rate_per_ip", 4, 4}); got != want {
		t.Errorf("got last check %v; want %v", got, want)
	}
	// Another address has its own bucket.
	rels = append(rels, admitAt(t, l, ip3, t0, 4)...)
	// Releasing does not give tokens back: it is a rate, not a count.
	releaseAll(t, l, rels...)
	if _, _, err := l.AdmitConnAt(ip2, t0); err == nil {
		t.Fatalf("got admitted after releases at the same instant; want refused")
	}
	// Half a second later one token is back (2 per second), not two.
	rels = admitAt(t, l, ip2, t0.Add(500*time.Millisecond), 1)
	if _, _, err := l.AdmitConnAt(ip2, t0.Add(500*time.Millisecond)); err == nil {
		t.Fatalf("got a second connection after 0.5s; want refused")
	}
	// After 10 s the bucket is full again: the burst, no more.
	rels = append(rels, admitAt(t, l, ip2, t0.Add(10*time.Second), 4)...)
	if _, _, err := l.AdmitConnAt(ip2, t0.Add(10*time.Second)); err == nil {
		t.Fatalf("got a fifth connection after 10s; want refused")
	}
	releaseAll(t, l, rels...)
}

func TestRateFraction(t *testing.T) {
	l := New(Options{MaxConnectionRatePerIP: 0.5}) // one every 2 s, burst 1
	rels := admitAt(t, l, ip2, t0, 1)
	_, _, err := l.AdmitConnAt(ip2, t0.Add(time.Second))
	wantLimitErr(t, err, "max_connection_rate_per_ip", 1, "Too many new connections from your address (max_connection_rate_per_ip=0.5)")
	rels = append(rels, admitAt(t, l, ip2, t0.Add(2*time.Second), 1)...)
	releaseAll(t, l, rels...)
}

// A connection refused by another cap uses up no token, and one refused
// by the rate does not count.
func TestRateOnlyAdmittedCount(t *testing.T) {
	l := New(Options{MaxConnectionRatePerIP: 1, MaxConnectionsPerIP: 1}) // burst 2
	rels := admitAt(t, l, ip2, t0, 1)
	for range 5 {
		_, _, err := l.AdmitConnAt(ip2, t0)
		wantLimitErr(t, err, "max_connections_per_ip", 1, "Too many connections from your address (max_connections_per_ip=1)")
	}
	rels[0]()
	rels = admitAt(t, l, ip2, t0, 1) // the second token is still there
	rels[0]()
	if _, _, err := l.AdmitConnAt(ip2, t0); err == nil {
		t.Fatal("got a third connection at once; want refused by the rate")
	}
	wantCounts(t, l, 0, 0, 0, 0)
}

// IPv6 addresses share a bucket by prefix.
func TestRateIPv6Prefix(t *testing.T) {
	l := New(Options{MaxConnectionRatePerIP: 1})
	a := netip.MustParseAddr("2001:db8::1")
	b := netip.MustParseAddr("2001:db8::2")
	c := netip.MustParseAddr("2001:db8:0:1::1")
	rels := admitAt(t, l, a, t0, 1)
	rels = append(rels, admitAt(t, l, b, t0, 1)...)
	if _, _, err := l.AdmitConnAt(a, t0); err == nil {
		t.Fatal("got a third connection from one /64; want refused")
	}
	rels = append(rels, admitAt(t, l, c, t0, 2)...)
	releaseAll(t, l, rels...)
}

// The buckets are bounded: a flood of distinct addresses keeps at most
// RateTrackingEntries.
func TestRateBounded(t *testing.T) {
	const entries = 100
	l := New(Options{MaxConnectionRatePerIP: 1, RateTrackingEntries: entries})
	for i := range 10 * entries {
		rel, _, err := l.AdmitConnAt(ipN(i), t0)
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if got := l.Counts().RateTracked; got != entries {
		t.Fatalf("got %d addresses tracked; want %d", got, entries)
	}
}

func TestRateOff(t *testing.T) {
	l := New(Options{})
	rels := admitAt(t, l, ip2, t0, 1000)
	if got := l.Counts().RateTracked; got != 0 {
		t.Errorf("got %d addresses tracked with the rate off; want 0", got)
	}
	releaseAll(t, l, rels...)
}

func TestUserIP(t *testing.T) {
	l := New(Options{MaxConnectionsPerUserIP: 2, MaxConnectionsPerUser: 3})
	var rels []func()
	for range 2 {
		rel, _, err := l.AdmitUser("Ann", ip2)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	_, checks, err := l.AdmitUser("ann", ip2)
	wantLimitErr(t, err, "max_connections_per_user_ip", 2, "Too many connections for this user from your address (max_connections_per_user_ip=2)")
	want := []Check{{"max_connections_per_user", 2, 3}, {"max_connections_per_user_ip", 2, 2}}
	if fmt.Sprint(checks) != fmt.Sprint(want) {
		t.Errorf("got checks %v; want %v", checks, want)
	}
	// The same user from another address, and another user from the same.
	for _, a := range []struct {
		user string
		addr netip.Addr
	}{{"ann", ip3}, {"bob", ip2}} {
		rel, _, err := l.AdmitUser(a.user, a.addr)
		if err != nil {
			t.Fatalf("AdmitUser(%q, %v): got %v; want admitted", a.user, a.addr, err)
		}
		rels = append(rels, rel)
	}
	// The per-user cap still holds across addresses.
	_, _, err = l.AdmitUser("ann", netip.MustParseAddr("127.0.0.4"))
	wantLimitErr(t, err, "max_connections_per_user", 3, "Too many connections for this user (max_connections_per_user=3)")
	if got := l.Counts().UserAddresses; got != 3 {
		t.Errorf("got %d user addresses; want 3", got)
	}
	for _, r := range rels {
		r()
		r()
	}
	if c := l.Counts(); c.UserAddresses != 0 || c.Users != 0 {
		t.Errorf("got %+v after release; want zero", c)
	}
}

func TestExempt(t *testing.T) {
	l := New(Options{
		MaxConnectionsPerIP: 1, MaxConnectionRatePerIP: 1, MaxConnectionsPerUserIP: 1,
		ExemptNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("2001:db8::/48")},
	})
	for _, a := range []string{"127.0.0.2", "::ffff:127.0.0.2", "2001:db8:0:ff::1"} {
		if !l.Exempt(netip.MustParseAddr(a)) {
			t.Errorf("got Exempt(%s) false; want true", a)
		}
	}
	if l.Exempt(ip3) {
		t.Errorf("got Exempt(%v) true; want false", ip3)
	}
	rels := admitAt(t, l, ip2, t0, 10) // over both per_ip and the rate
	for range 3 {
		rel, _, err := l.AdmitUser("ann", ip2)
		if err != nil {
			t.Fatalf("exempt AdmitUser: got %v; want admitted", err)
		}
		rels = append(rels, rel)
	}
	// max_connections still applies, and others are capped.
	rels = append(rels, admitAt(t, l, ip3, t0, 1)...)
	if _, _, err := l.AdmitConnAt(ip3, t0.Add(time.Hour)); err == nil {
		t.Error("got a second connection from a non-exempt address; want refused")
	}
	for _, r := range rels {
		r()
	}
	wantCounts(t, l, 0, 0, 0, 0)
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// TestOverridePrecedence is the rule of Override, cap by cap.
func TestOverridePrecedence(t *testing.T) {
	overrides := []Override{
		0: {Networks: pfx("10.0.0.0/8"), MaxConnectionsPerIP: 100, MaxConnectionsPerUser: 100, MaxConnectionRatePerIP: 100},
		1: {Networks: pfx("10.1.0.0/16"), MaxConnectionsPerIP: 116, MaxConnectionsPerUser: 116},
		2: {Networks: pfx("10.0.0.0/8"), MaxConnectionsPerIP: 999}, // same prefix as 0, later: loses
		3: {Users: []string{"Archive@Example.com"}, MaxConnectionsPerUser: 50, MaxConnectionsPerIP: 7},
		4: {Users: []string{"archive@example.com"}, MaxConnectionsPerUser: 999}, // later: loses
		5: {Users: []string{"archive@example.com"}, Networks: pfx("10.0.0.0/8"), MaxConnectionsPerUser: 60},
		6: {Users: []string{"archive@example.com"}, Networks: pfx("10.1.2.0/24"), MaxConnectionsPerUser: 70, MaxConnectionsPerUserIP: 5},
		7: {Users: []string{"ops@example.com"}, Networks: pfx("192.0.2.0/24", "192.0.2.10/32"), MaxConnectionsPerUserIP: 9},
		8: {Networks: pfx("192.0.2.10/32"), MaxConnectionsPerUserIP: 3, MaxConnectionRatePerIP: 0.5},
		9: {}, // no selector: matches nobody
	}
	l := New(Options{MaxConnectionsPerIP: 10, MaxConnectionsPerUser: 16, MaxConnectionsPerUserIP: 2, MaxConnectionRatePerIP: 5, Overrides: overrides})
	p := l.policy
	tests := []struct {
		name  string
		cap   capKind
		user  string // "" at accept time
		addr  string
		want  float64
		entry string // why
	}{
		{"per_ip default", capPerIP, "", "192.0.2.1", 10, "none matches"},
		{"per_ip network", capPerIP, "", "10.9.9.9", 100, "entry 0 (entry 2 has the same prefix, later)"},
		{"per_ip longest prefix", capPerIP, "", "10.1.9.9", 116, "entry 1, /16 over /8"},
		{"per_ip ignores users", capPerIP, "", "10.1.9.9", 116, "entry 3 has users: not at accept time"},
		{"per_ip mapped address", capPerIP, "", "::ffff:10.1.0.1", 116, "IPv4-mapped is IPv4"},
		{"rate network", capRate, "", "10.200.0.1", 100, "entry 0"},
		{"rate fraction", capRate, "", "192.0.2.10", 0.5, "entry 8"},
		{"rate default", capRate, "", "172.16.0.1", 5, "none"},
		{"per_user default", capPerUser, "bob", "172.16.0.1", 16, "none"},
		{"per_user network only", capPerUser, "bob", "10.1.0.1", 116, "entry 1 for everyone on 10.1/16"},
		{"per_user user over network", capPerUser, "ARCHIVE@example.com", "172.16.0.1", 50, "entry 3 (entry 4 later)"},
		{"per_user user+network over user", capPerUser, "archive@example.com", "10.9.0.1", 60, "entry 5"},
		{"per_user user+network longest", capPerUser, "archive@example.com", "10.1.2.3", 70, "entry 6, /24 over entry 5's /8"},
		{"per_user_ip default", capPerUserIP, "bob", "10.1.2.3", 2, "none sets it there"},
		{"per_user_ip user+network", capPerUserIP, "archive@example.com", "10.1.2.3", 5, "entry 6"},
		{"per_user_ip user+network over longer network", capPerUserIP, "ops@example.com", "192.0.2.10", 9, "entry 7 (rank) over entry 8's /32"},
		{"per_user_ip network", capPerUserIP, "bob", "192.0.2.10", 3, "entry 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.value(tt.cap, UserKey(tt.user), tt.user != "", netip.MustParseAddr(tt.addr), p.opts.capDefault(tt.cap))
			if got != tt.want {
				t.Errorf("got %v; want %v (%s)", got, tt.want, tt.entry)
			}
		})
	}
}

// capDefault is the cap k of Options, for TestOverridePrecedence.
func (o Options) capDefault(k capKind) float64 {
	switch k {
	case capPerIP:
		return float64(o.MaxConnectionsPerIP)
	case capPerUser:
		return float64(o.MaxConnectionsPerUser)
	case capPerUserIP:
		return float64(o.MaxConnectionsPerUserIP)
	}
	return o.MaxConnectionRatePerIP
}

// Overrides reach the admit functions.
func TestOverrideAdmit(t *testing.T) {
	l := New(Options{MaxConnectionsPerIP: 1, MaxConnectionsPerUser: 1, Overrides: []Override{
		{Users: []string{"archive"}, MaxConnectionsPerUser: 3},
		{Networks: pfx("127.0.0.3/32"), MaxConnectionsPerIP: 3},
	}})
	rels := admitAt(t, l, ip3, t0, 3)
	_, _, err := l.AdmitConnAt(ip3, t0)
	wantLimitErr(t, err, "max_connections_per_ip", 3, "Too many connections from your address (max_connections_per_ip=3)")
	rels = append(rels, admitAt(t, l, ip2, t0, 1)...)
	if _, _, err := l.AdmitConnAt(ip2, t0); err == nil {
		t.Fatal("got a second connection from 127.0.0.2; want refused")
	}
	for range 3 {
		rel, _, err := l.AdmitUser("Archive", ip2)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	_, _, err = l.AdmitUser("archive", ip2)
	wantLimitErr(t, err, "max_connections_per_user", 3, "Too many connections for this user (max_connections_per_user=3)")
	rels = append(rels, mustUser(t, l, "bob"))
	if _, err := admitUser(l, "bob"); err == nil {
		t.Fatal("got a second session of bob; want refused")
	}
	releaseAll(t, l, rels...)
}

// SetOptions with sessions open: lowering a cap closes nothing and
// refuses new ones; raising it admits at once. Overrides, exemptions and
// the rate follow.
func TestSetOptionsOpen(t *testing.T) {
	l := New(Options{MaxConnectionsPerUserIP: 3, MaxConnectionRatePerIP: 10})
	rels := admitAt(t, l, ip2, t0, 3)
	for range 3 {
		rel, _, err := l.AdmitUser("ann", ip2)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	l.SetOptions(Options{MaxConnectionsPerUserIP: 1, MaxConnectionRatePerIP: 1, MaxConnectionsPerIP: 2})
	if c := l.Counts(); c.Connections != 3 || c.Sessions != 3 {
		t.Fatalf("got %+v after lowering; want the 3 connections and sessions kept", c)
	}
	_, _, err := l.AdmitUser("ann", ip2)
	wantLimitErr(t, err, "max_connections_per_user_ip", 1, "Too many connections for this user from your address (max_connections_per_user_ip=1)")
	_, _, err = l.AdmitConnAt(ip2, t0.Add(time.Hour))
	wantLimitErr(t, err, "max_connections_per_ip", 2, "Too many connections from your address (max_connections_per_ip=2)")
	// The rate: a new address gets the new burst, 2.
	rels = append(rels, admitAt(t, l, ip3, t0, 2)...)
	_, _, err = l.AdmitConnAt(ip3, t0)
	wantLimitErr(t, err, "max_connection_rate_per_ip", 2, "Too many new connections from your address (max_connection_rate_per_ip=1)")

	// Raised, by an override and an exemption: admitted at once.
	l.SetOptions(Options{MaxConnectionsPerUserIP: 1, MaxConnectionRatePerIP: 1, MaxConnectionsPerIP: 2,
		Overrides:      []Override{{Users: []string{"ann"}, MaxConnectionsPerUserIP: 4}},
		ExemptNetworks: pfx("127.0.0.3/32"),
	})
	rel, _, err := l.AdmitUser("ann", ip2)
	if err != nil {
		t.Fatalf("AdmitUser after raising: got %v; want admitted", err)
	}
	rels = append(rels, rel)
	rels = append(rels, admitAt(t, l, ip3, t0, 5)...)
	// Turned off: no bucket is consulted.
	l.SetOptions(Options{})
	rels = append(rels, admitAt(t, l, ip2, t0, 10)...)
	for _, r := range rels {
		r()
	}
	wantCounts(t, l, 0, 0, 0, 0)
	if got := l.Counts().UserAddresses; got != 0 {
		t.Errorf("got %d user addresses; want 0", got)
	}
}

func TestErrorTextNew(t *testing.T) {
	for _, tt := range []struct {
		err  *Error
		want string
	}{
		{&Error{Limit: "max_connection_rate_per_ip", Value: 10, Rate: 10}, "Too many new connections from your address (max_connection_rate_per_ip=10)"},
		{&Error{Limit: "max_connection_rate_per_ip", Value: 2, Rate: 2.5}, "Too many new connections from your address (max_connection_rate_per_ip=2.5)"},
		{&Error{Limit: "max_connections_per_user_ip", Value: 4}, "Too many connections for this user from your address (max_connections_per_user_ip=4)"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q; want %q", got, tt.want)
		}
		if !errors.Is(tt.err, ErrLimit) {
			t.Errorf("got errors.Is(%v, ErrLimit) false; want true", tt.err)
		}
	}
}
