package limits

// Keys are canonicalised before counting: user names case-folded,
// IPv4-mapped IPv6 unmapped, IPv6 grouped by prefix.

import (
	"fmt"
	"net/netip"
	"testing"
)

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
			releaseAll(t, l, rel2)
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
		releaseAll(t, l, a, b, c)
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
			releaseAll(t, l, rel2)
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
			releaseAll(t, l, rel)
		})
	}
}
