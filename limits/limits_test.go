package limits

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

var (
	ip2 = netip.MustParseAddr("127.0.0.2")
	ip3 = netip.MustParseAddr("127.0.0.3")
)

// ipN returns a distinct IPv4 address for each n.
func ipN(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
}

// wantLimitErr checks that err is an *Error for limit with value, with
// the exact text want, matched by errors.Is(err, ErrLimit).
func wantLimitErr(t *testing.T, err error, limit string, value int, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error; want %q", want)
	}
	var le *Error
	if !errors.As(err, &le) {
		t.Fatalf("got error %T %v; want *Error", err, err)
	}
	if le.Limit != limit || le.Value != value {
		t.Errorf("got Limit=%q Value=%d; want Limit=%q Value=%d", le.Limit, le.Value, limit, value)
	}
	if got := err.Error(); got != want {
		t.Errorf("got Error() %q; want %q", got, want)
	}
	if !errors.Is(err, ErrLimit) {
		t.Errorf("got errors.Is(err, ErrLimit) false; want true")
	}
}

func wantCounts(t *testing.T, l *Limiter, conns, addrs, users, sessions int) {
	t.Helper()
	c := l.Counts()
	if c.Connections != conns || c.Addresses != addrs || c.Users != users || c.Sessions != sessions {
		t.Fatalf("got counts {Connections:%d Addresses:%d Users:%d Sessions:%d}; want {Connections:%d Addresses:%d Users:%d Sessions:%d}",
			c.Connections, c.Addresses, c.Users, c.Sessions, conns, addrs, users, sessions)
	}
	if len(c.PerUser) != users {
		t.Fatalf("got len(PerUser) %d (%v); want %d", len(c.PerUser), c.PerUser, users)
	}
}

func mustConn(t *testing.T, l *Limiter, addr netip.Addr) func() {
	t.Helper()
	rel, err := admitConn(l, addr)
	if err != nil {
		t.Fatalf("AdmitConn(%v): got error %v; want success", addr, err)
	}
	if rel == nil {
		t.Fatalf("AdmitConn(%v): got nil release; want a function", addr)
	}
	return rel
}

func mustUser(t *testing.T, l *Limiter, user string) func() {
	t.Helper()
	rel, err := admitUser(l, user)
	if err != nil {
		t.Fatalf("AdmitUser(%q): got error %v; want success", user, err)
	}
	if rel == nil {
		t.Fatalf("AdmitUser(%q): got nil release; want a function", user)
	}
	return rel
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		limit string
		value int
		want  string
	}{
		{"max_connections", 3, "Too many connections (max_connections=3)"},
		{"max_connections_per_ip", 2, "Too many connections from your address (max_connections_per_ip=2)"},
		{"max_connections_per_user", 16, "Too many connections for this user (max_connections_per_user=16)"},
		{"something_else", 7, "Limit reached (something_else=7)"},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			var err error = &Error{Limit: tt.limit, Value: tt.value}
			wantLimitErr(t, err, tt.limit, tt.value, tt.want)
			wrapped := fmt.Errorf("refused: %w", err)
			if !errors.Is(wrapped, ErrLimit) {
				t.Errorf("got errors.Is(wrapped, ErrLimit) false; want true")
			}
			if errors.Is(err, errors.New("other")) {
				t.Errorf("got errors.Is(err, other) true; want false")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	got := New(Options{}).Options()
	want := Options{
		MaxConnections:        DefaultMaxConnections,
		MaxConnectionsPerIP:   DefaultMaxConnectionsPerIP,
		MaxConnectionsPerUser: DefaultMaxConnectionsPerUser,
		IPv6PrefixLength:      DefaultIPv6PrefixLength,
	}
	if got != want {
		t.Errorf("got Options() %+v; want %+v", got, want)
	}
	if DefaultMaxConnectionsPerUser != 16 {
		t.Errorf("got DefaultMaxConnectionsPerUser %d; want 16", DefaultMaxConnectionsPerUser)
	}
	neg := New(Options{MaxConnections: -1, MaxConnectionsPerIP: -5, MaxConnectionsPerUser: -1, IPv6PrefixLength: 129}).Options()
	if neg != want {
		t.Errorf("got Options() for negative/out-of-range fields %+v; want %+v", neg, want)
	}
}

func TestGlobalCap(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10} {
		t.Run(fmt.Sprintf("max=%d", n), func(t *testing.T) {
			l := New(Options{MaxConnections: n})
			var rels []func()
			for i := range n {
				rels = append(rels, mustConn(t, l, ipN(i))) // distinct addresses
			}
			wantCounts(t, l, n, n, 0, 0)
			rel, err := admitConn(l, ipN(n))
			if rel != nil {
				t.Errorf("got a release function with the error; want nil")
			}
			wantLimitErr(t, err, "max_connections", n, fmt.Sprintf("Too many connections (max_connections=%d)", n))
			wantCounts(t, l, n, n, 0, 0)
			// One slot freed: exactly one more fits.
			rels[0]()
			rels[0] = mustConn(t, l, ipN(n))
			if _, err := admitConn(l, ipN(n+1)); err == nil {
				t.Fatalf("got success after refilling the freed slot; want max_connections error")
			}
			for _, r := range rels {
				r()
			}
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
}

func TestPerIPCap(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		t.Run(fmt.Sprintf("max=%d", n), func(t *testing.T) {
			l := New(Options{MaxConnectionsPerIP: n})
			var rels []func()
			for range n {
				rels = append(rels, mustConn(t, l, ip2))
			}
			wantCounts(t, l, n, 1, 0, 0)
			_, err := admitConn(l, ip2)
			wantLimitErr(t, err, "max_connections_per_ip", n,
				fmt.Sprintf("Too many connections from your address (max_connections_per_ip=%d)", n))
			// Another address is not affected.
			other := mustConn(t, l, ip3)
			wantCounts(t, l, n+1, 2, 0, 0)
			rels[0]()
			rels[0] = mustConn(t, l, ip2)
			for _, r := range append(rels, other) {
				r()
			}
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
}

func TestPerUserCap(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want int
	}{
		{"max=1", Options{MaxConnectionsPerUser: 1}, 1},
		{"max=2", Options{MaxConnectionsPerUser: 2}, 2},
		{"default", Options{}, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.opts)
			var rels []func()
			for range tt.want {
				rels = append(rels, mustUser(t, l, "alice"))
			}
			wantCounts(t, l, 0, 0, 1, tt.want)
			if got := l.Counts().PerUser["alice"]; got != tt.want {
				t.Errorf("got PerUser[alice] %d; want %d", got, tt.want)
			}
			_, err := admitUser(l, "alice")
			wantLimitErr(t, err, "max_connections_per_user", tt.want,
				fmt.Sprintf("Too many connections for this user (max_connections_per_user=%d)", tt.want))
			bob := mustUser(t, l, "bob")
			wantCounts(t, l, 0, 0, 2, tt.want+1)
			for _, r := range append(rels, bob) {
				r()
			}
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
}

// TestAllOrNothing: a refused AdmitConn counts nothing, whichever cap
// refused it.
func TestAllOrNothing(t *testing.T) {
	t.Run("per-ip refusal keeps global slot", func(t *testing.T) {
		l := New(Options{MaxConnections: 3, MaxConnectionsPerIP: 1})
		a := mustConn(t, l, ip2)
		for range 5 {
			if _, err := admitConn(l, ip2); err == nil {
				t.Fatalf("got success; want per-ip refusal")
			}
		}
		wantCounts(t, l, 1, 1, 0, 0)
		// Had the refusals taken global slots, these would fail.
		b := mustConn(t, l, ip3)
		c := mustConn(t, l, ipN(1))
		_, err := admitConn(l, ipN(2))
		wantLimitErr(t, err, "max_connections", 3, "Too many connections (max_connections=3)")
		a()
		b()
		c()
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("global refusal keeps per-ip slot", func(t *testing.T) {
		l := New(Options{MaxConnections: 1, MaxConnectionsPerIP: 1})
		a := mustConn(t, l, ip3)
		for range 5 {
			if _, err := admitConn(l, ip2); err == nil {
				t.Fatalf("got success; want max_connections refusal")
			}
		}
		// The refused address left no entry behind.
		wantCounts(t, l, 1, 1, 0, 0)
		a()
		// Had the refusals counted against 127.0.0.2, this would fail.
		b := mustConn(t, l, ip2)
		b()
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("user refusal counts nothing", func(t *testing.T) {
		l := New(Options{MaxConnectionsPerUser: 1})
		a := mustUser(t, l, "alice")
		for range 5 {
			if _, err := admitUser(l, "alice"); err == nil {
				t.Fatalf("got success; want per-user refusal")
			}
		}
		wantCounts(t, l, 0, 0, 1, 1)
		a()
		b := mustUser(t, l, "alice")
		b()
		wantCounts(t, l, 0, 0, 0, 0)
	})
}

func TestReleaseIdempotent(t *testing.T) {
	t.Run("conn", func(t *testing.T) {
		l := New(Options{MaxConnections: 2, MaxConnectionsPerIP: 2})
		a := mustConn(t, l, ip2)
		b := mustConn(t, l, ip2)
		a()
		a()
		a()
		// Only a's slot was uncounted: b's is still held.
		wantCounts(t, l, 1, 1, 0, 0)
		c := mustConn(t, l, ip2)
		if _, err := admitConn(l, ip2); err == nil {
			t.Fatalf("got success; want refusal (b and c hold both slots)")
		}
		b()
		b()
		c()
		c()
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("user", func(t *testing.T) {
		l := New(Options{MaxConnectionsPerUser: 2})
		a := mustUser(t, l, "alice")
		b := mustUser(t, l, "alice")
		a()
		a()
		wantCounts(t, l, 0, 0, 1, 1)
		if got := l.Counts().PerUser["alice"]; got != 1 {
			t.Fatalf("got PerUser[alice] %d; want 1", got)
		}
		b()
		b()
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("concurrent double release", func(t *testing.T) {
		l := New(Options{})
		keep := mustConn(t, l, ip2)
		keepU := mustUser(t, l, "alice")
		for range 100 {
			rc := mustConn(t, l, ip2)
			ru := mustUser(t, l, "alice")
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { rc(); ru() })
			}
			wg.Wait()
		}
		wantCounts(t, l, 1, 1, 1, 1)
		keep()
		keepU()
		wantCounts(t, l, 0, 0, 0, 0)
	})
}

func TestMapEntriesDeleted(t *testing.T) {
	l := New(Options{})
	var rels []func()
	for i := range 100 {
		rels = append(rels, mustConn(t, l, ipN(i)), mustConn(t, l, ipN(i)))
		rels = append(rels, mustUser(t, l, fmt.Sprintf("user%d", i)))
	}
	wantCounts(t, l, 200, 100, 100, 100)
	for _, r := range rels {
		r()
	}
	wantCounts(t, l, 0, 0, 0, 0)
	l.mu.Lock()
	nIP, nUsers := len(l.perIP), len(l.users)
	l.mu.Unlock()
	if nIP != 0 || nUsers != 0 {
		t.Errorf("got %d address and %d user map entries; want 0 and 0", nIP, nUsers)
	}
}

func TestCountsSnapshot(t *testing.T) {
	l := New(Options{})
	rel := mustUser(t, l, "alice")
	defer rel()
	c := l.Counts()
	c.PerUser["alice"] = 99
	c.PerUser["mallory"] = 1
	if got := l.Counts().PerUser; len(got) != 1 || got["alice"] != 1 {
		t.Errorf("got PerUser %v after mutating a snapshot; want map[alice:1]", got)
	}
}

func TestUserKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"Alice", "alice"},
		{"ALICE", "alice"},
		{" alice\t", "alice"},
		{"Alice@Example.COM", "alice@example.com"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := UserKey(tt.in); got != tt.want {
			t.Errorf("UserKey(%q): got %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestUserCaseInsensitive(t *testing.T) {
	tests := []struct{ first, second string }{
		{"Alice", "ALICE"},
		{"alice", "Alice"},
		{"ALICE", " alice "},
		{"Bob@Example.com", "bob@EXAMPLE.COM"},
	}
	for _, tt := range tests {
		t.Run(tt.first+"/"+tt.second, func(t *testing.T) {
			l := New(Options{MaxConnectionsPerUser: 1})
			rel := mustUser(t, l, tt.first)
			_, err := admitUser(l, tt.second)
			wantLimitErr(t, err, "max_connections_per_user", 1,
				"Too many connections for this user (max_connections_per_user=1)")
			c := l.Counts()
			if c.Users != 1 || c.PerUser[UserKey(tt.first)] != 1 {
				t.Errorf("got Users=%d PerUser=%v; want one entry %q=1", c.Users, c.PerUser, UserKey(tt.first))
			}
			rel()
			// Released under either spelling's key: the other one fits now.
			rel2 := mustUser(t, l, tt.second)
			rel2()
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
	t.Run("shared count", func(t *testing.T) {
		l := New(Options{MaxConnectionsPerUser: 3})
		a := mustUser(t, l, "alice")
		b := mustUser(t, l, "Alice")
		c := mustUser(t, l, "ALICE")
		if _, err := admitUser(l, "aLiCe"); err == nil {
			t.Fatalf("got success for a 4th spelling; want per-user refusal")
		}
		if got := l.Counts().PerUser; len(got) != 1 || got["alice"] != 3 {
			t.Fatalf("got PerUser %v; want map[alice:3]", got)
		}
		a()
		b()
		c()
		wantCounts(t, l, 0, 0, 0, 0)
	})
}

func TestAddrKey(t *testing.T) {
	tests := []struct {
		addr   string
		prefix int
		want   string
	}{
		{"127.0.0.2", 64, "127.0.0.2/32"},
		{"::ffff:127.0.0.2", 64, "127.0.0.2/32"},
		{"::ffff:127.0.0.2", 128, "127.0.0.2/32"},
		{"2001:db8:1:2::1", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"},
		{"2001:db8:1:2::1", 48, "2001:db8:1::/48"},
		{"fe80::1%eth0", 128, "fe80::1/128"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.addr, tt.prefix), func(t *testing.T) {
			got := AddrKey(netip.MustParseAddr(tt.addr), tt.prefix)
			if got.String() != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
	if got := AddrKey(netip.Addr{}, 64); got != (netip.Prefix{}) {
		t.Errorf("AddrKey(invalid): got %v; want the zero Prefix", got)
	}
}

func TestIPv4Mapped(t *testing.T) {
	mapped := netip.MustParseAddr("::ffff:127.0.0.2")
	tests := []struct {
		name          string
		first, second netip.Addr
	}{
		{"plain then mapped", ip2, mapped},
		{"mapped then plain", mapped, ip2},
		{"mapped twice", mapped, mapped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(Options{MaxConnectionsPerIP: 1})
			rel := mustConn(t, l, tt.first)
			_, err := admitConn(l, tt.second)
			wantLimitErr(t, err, "max_connections_per_ip", 1,
				"Too many connections from your address (max_connections_per_ip=1)")
			wantCounts(t, l, 1, 1, 0, 0)
			rel()
			rel2 := mustConn(t, l, tt.second)
			rel2()
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
}

func TestIPv6Prefix(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1:2::1")
	sameNet := netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff")
	otherNet := netip.MustParseAddr("2001:db8:1:3::1")
	tests := []struct {
		name      string
		prefixLen int // 0: default (64)
		second    netip.Addr
		shared    bool
	}{
		{"same /64 default", 0, sameNet, true},
		{"same /64 explicit", 64, sameNet, true},
		{"different /64", 0, otherNet, false},
		{"same /64 at /128", 128, sameNet, false},
		{"same address at /128", 128, a, true},
		{"different /64 same /48", 48, otherNet, true},
		{"zones dropped", 128, netip.MustParseAddr("2001:db8:1:2::1%eth1"), true},
		{"out of range means /64", 200, sameNet, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(Options{MaxConnectionsPerIP: 1, IPv6PrefixLength: tt.prefixLen})
			first := a
			if tt.name == "zones dropped" {
				first = netip.MustParseAddr("2001:db8:1:2::1%eth0")
			}
			rel := mustConn(t, l, first)
			rel2, err := admitConn(l, tt.second)
			if tt.shared {
				wantLimitErr(t, err, "max_connections_per_ip", 1,
					"Too many connections from your address (max_connections_per_ip=1)")
				wantCounts(t, l, 1, 1, 0, 0)
			} else {
				if err != nil {
					t.Fatalf("got %v; want success (different key)", err)
				}
				wantCounts(t, l, 2, 2, 0, 0)
				rel2()
			}
			rel()
			wantCounts(t, l, 0, 0, 0, 0)
		})
	}
}

func TestSetOptions(t *testing.T) {
	t.Run("max_connections", func(t *testing.T) {
		l := New(Options{MaxConnections: 5})
		var rels []func()
		for i := range 4 {
			rels = append(rels, mustConn(t, l, ipN(i)))
		}
		l.SetOptions(Options{MaxConnections: 2})
		if got := l.Options().MaxConnections; got != 2 {
			t.Fatalf("got Options().MaxConnections %d; want 2", got)
		}
		// Existing ones are kept.
		wantCounts(t, l, 4, 4, 0, 0)
		_, err := admitConn(l, ipN(10))
		wantLimitErr(t, err, "max_connections", 2, "Too many connections (max_connections=2)")
		rels[0]()
		rels[1]()
		// Count 2, still at the new cap.
		if _, err := admitConn(l, ipN(10)); err == nil {
			t.Fatalf("got success at count 2 with cap 2; want refusal")
		}
		rels[2]()
		rels[2] = mustConn(t, l, ipN(10))
		// Raising allows more.
		l.SetOptions(Options{MaxConnections: 6})
		for i := range 4 {
			rels = append(rels, mustConn(t, l, ipN(20+i)))
		}
		_, err = admitConn(l, ipN(30))
		wantLimitErr(t, err, "max_connections", 6, "Too many connections (max_connections=6)")
		for _, r := range rels {
			r()
		}
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("max_connections_per_ip", func(t *testing.T) {
		l := New(Options{MaxConnectionsPerIP: 3})
		a, b, c := mustConn(t, l, ip2), mustConn(t, l, ip2), mustConn(t, l, ip2)
		l.SetOptions(Options{MaxConnectionsPerIP: 1})
		_, err := admitConn(l, ip2)
		wantLimitErr(t, err, "max_connections_per_ip", 1,
			"Too many connections from your address (max_connections_per_ip=1)")
		wantCounts(t, l, 3, 1, 0, 0)
		d := mustConn(t, l, ip3)
		l.SetOptions(Options{MaxConnectionsPerIP: 4})
		e := mustConn(t, l, ip2)
		for _, r := range []func(){a, b, c, d, e} {
			r()
		}
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("max_connections_per_user", func(t *testing.T) {
		l := New(Options{})
		var rels []func()
		for range 3 {
			rels = append(rels, mustUser(t, l, "alice"))
		}
		l.SetOptions(Options{MaxConnectionsPerUser: 2})
		_, err := admitUser(l, "alice")
		wantLimitErr(t, err, "max_connections_per_user", 2,
			"Too many connections for this user (max_connections_per_user=2)")
		wantCounts(t, l, 0, 0, 1, 3)
		// Back to the default.
		l.SetOptions(Options{})
		rels = append(rels, mustUser(t, l, "alice"))
		for _, r := range rels {
			r()
		}
		wantCounts(t, l, 0, 0, 0, 0)
	})
	t.Run("ipv6 prefix change", func(t *testing.T) {
		// A release uncounts under the key it was counted under, even
		// after the prefix length changed.
		l := New(Options{MaxConnectionsPerIP: 1})
		a := netip.MustParseAddr("2001:db8::1")
		rel := mustConn(t, l, a)
		l.SetOptions(Options{MaxConnectionsPerIP: 1, IPv6PrefixLength: 128})
		rel2 := mustConn(t, l, netip.MustParseAddr("2001:db8::2"))
		rel()
		rel2()
		wantCounts(t, l, 0, 0, 0, 0)
	})
}

// TestConcurrentAcquireRelease hammers one Limiter from 64 goroutines;
// run it with -race.
func TestConcurrentAcquireRelease(t *testing.T) {
	const goroutines, cycles = 64, 1000
	l := New(Options{MaxConnections: 40, MaxConnectionsPerIP: 6, MaxConnectionsPerUser: 5})
	users := []string{"alice", "Alice", "BOB", "bob", "carol"}
	addrs := []netip.Addr{ip2, ip3, netip.MustParseAddr("::ffff:127.0.0.2"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), ipN(7)}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range cycles {
				addr := addrs[(g+i)%len(addrs)]
				relC, err := admitConn(l, addr)
				if err != nil {
					if !errors.Is(err, ErrLimit) {
						t.Errorf("AdmitConn: got %v; want nil or ErrLimit", err)
						return
					}
					refused.Add(1)
					continue
				}
				ok.Add(1)
				relU, err := admitUser(l, users[(g*7+i)%len(users)])
				if err == nil {
					if i%3 == 0 {
						_ = l.Counts()
					}
					relU()
					relU()
				} else if !errors.Is(err, ErrLimit) {
					t.Errorf("AdmitUser: got %v; want nil or ErrLimit", err)
				}
				relC()
				if i%5 == 0 {
					relC()
				}
			}
		})
	}
	wg.Wait()
	wantCounts(t, l, 0, 0, 0, 0)
	if ok.Load() == 0 {
		t.Errorf("got no successful acquire; want some")
	}
	t.Logf("%d acquired, %d refused", ok.Load(), refused.Load())
}

// TestConcurrentCapNeverExceeded tracks how many slots the test holds at
// once: it counts after a successful acquire and uncounts before the
// release, so its count never exceeds the Limiter's.
func TestConcurrentCapNeverExceeded(t *testing.T) {
	const goroutines, cycles = 64, 500
	tests := []struct {
		name    string
		opts    Options
		cap     int
		acquire func(l *Limiter, g, i int) (func(), error)
	}{
		{"max_connections", Options{MaxConnections: 8}, 8, func(l *Limiter, g, i int) (func(), error) {
			return admitConn(l, ipN(g))
		}},
		{"max_connections_per_ip", Options{MaxConnectionsPerIP: 5}, 5, func(l *Limiter, g, i int) (func(), error) {
			if i%2 == 0 {
				return admitConn(l, netip.MustParseAddr("::ffff:127.0.0.2"))
			}
			return admitConn(l, ip2)
		}},
		{"max_connections_per_user", Options{MaxConnectionsPerUser: 4}, 4, func(l *Limiter, g, i int) (func(), error) {
			if i%2 == 0 {
				return admitUser(l, "ALICE")
			}
			return admitUser(l, "alice")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.opts)
			var live, maxLive, refused atomic.Int64
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range cycles {
						rel, err := tt.acquire(l, g, i)
						if err != nil {
							var le *Error
							if !errors.As(err, &le) || le.Limit != tt.name || le.Value != tt.cap {
								t.Errorf("got %v; want %s=%d refusal", err, tt.name, tt.cap)
								return
							}
							refused.Add(1)
							continue
						}
						n := live.Add(1)
						for {
							m := maxLive.Load()
							if n <= m || maxLive.CompareAndSwap(m, n) {
								break
							}
						}
						runtime.Gosched() // hold the slot a moment
						live.Add(-1)
						rel()
					}
				})
			}
			wg.Wait()
			if m := maxLive.Load(); m > int64(tt.cap) {
				t.Errorf("got %d slots held at once; want at most %d", m, tt.cap)
			}
			if refused.Load() == 0 {
				t.Logf("no refusals (scheduling); cap was not contended")
			}
			wantCounts(t, l, 0, 0, 0, 0)
			t.Logf("max held %d (cap %d), %d refused", maxLive.Load(), tt.cap, refused.Load())
		})
	}
}

// TestAdmitChecks: the checks an admission reports carry the count found
// and the cap, and a refusal ends with the limit that refused.
func TestAdmitChecks(t *testing.T) {
	l := New(Options{MaxConnections: 3, MaxConnectionsPerIP: 1, MaxConnectionsPerUser: 1})
	a := netip.MustParseAddr("192.0.2.1")
	rel, checks, err := l.AdmitConn(a)
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	want := []Check{{"max_connections", 0, 3}, {"max_connections_per_ip", 0, 1}}
	if fmt.Sprint(checks) != fmt.Sprint(want) {
		t.Fatalf("checks = %v, want %v", checks, want)
	}
	_, checks, err = l.AdmitConn(a)
	var le *Error
	if !errors.As(err, &le) || le.Limit != "max_connections_per_ip" || le.Count != 1 || le.Value != 1 {
		t.Fatalf("err = %#v", err)
	}
	if last := checks[len(checks)-1]; last != (Check{"max_connections_per_ip", 1, 1}) {
		t.Fatalf("last check = %v", last)
	}
	relU, check, err := l.AdmitUser("Ann")
	if err != nil || check != (Check{"max_connections_per_user", 0, 1}) {
		t.Fatalf("AdmitUser = %v, %v", check, err)
	}
	defer relU()
	if _, check, err = l.AdmitUser("ann"); !errors.Is(err, ErrLimit) || check.Count != 1 {
		t.Fatalf("second AdmitUser = %v, %v", check, err)
	}
}

// admitConn and admitUser are AdmitConn and AdmitUser for tests that do
// not look at the checks.
func admitConn(l *Limiter, addr netip.Addr) (release func(), err error) {
	release, _, err = l.AdmitConn(addr)
	return release, err
}

func admitUser(l *Limiter, user string) (release func(), err error) {
	release, _, err = l.AdmitUser(user)
	return release, err
}
