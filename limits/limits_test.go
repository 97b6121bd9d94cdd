package limits

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
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

// releaseAll calls each release and checks every count is back at zero.
func releaseAll(t *testing.T, l *Limiter, releases ...func()) {
	t.Helper()
	for _, r := range releases {
		r()
	}
	wantCounts(t, l, 0, 0, 0, 0)
}

func mustConn(t *testing.T, l *Limiter, addr netip.Addr) func() {
	t.Helper()
	rel, err := admitConn(l, addr)
	return admitted(t, fmt.Sprintf("AdmitConn(%v)", addr), rel, err)
}

func mustUser(t *testing.T, l *Limiter, user string) func() {
	t.Helper()
	rel, err := admitUser(l, user)
	return admitted(t, fmt.Sprintf("AdmitUser(%q)", user), rel, err)
}

// wantRefused calls admit five times and fails the test unless each is
// refused (by the cap named in what).
func wantRefused(t *testing.T, what string, admit func() (func(), error)) {
	t.Helper()
	for range 5 {
		if _, err := admit(); err == nil {
			t.Fatalf("got success; want %s", what)
		}
	}
}

// admitted fails the test unless call (an AdmitConn or AdmitUser) granted
// a release function.
func admitted(t *testing.T, call string, rel func(), err error) func() {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: got error %v; want success", call, err)
	}
	if rel == nil {
		t.Fatalf("%s: got nil release; want a function", call)
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
		RateTrackingEntries:   DefaultRateTrackingEntries,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got Options() %+v; want %+v", got, want)
	}
	if DefaultMaxConnectionsPerUser != 16 {
		t.Errorf("got DefaultMaxConnectionsPerUser %d; want 16", DefaultMaxConnectionsPerUser)
	}
	neg := New(Options{MaxConnections: -1, MaxConnectionsPerIP: -5, MaxConnectionsPerUser: -1, IPv6PrefixLength: 129}).Options()
	if !reflect.DeepEqual(neg, want) {
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
			releaseAll(t, l, rels...)
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
			releaseAll(t, l, append(rels, other)...)
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
			releaseAll(t, l, append(rels, bob)...)
		})
	}
}

// TestAllOrNothing: a refused AdmitConn counts nothing, whichever cap
// refused it.
func TestAllOrNothing(t *testing.T) {
	t.Run("per-ip refusal keeps global slot", func(t *testing.T) {
		l := New(Options{MaxConnections: 3, MaxConnectionsPerIP: 1})
		a := mustConn(t, l, ip2)
		wantRefused(t, "per-ip refusal", func() (func(), error) { return admitConn(l, ip2) })
		wantCounts(t, l, 1, 1, 0, 0)
		// Had the refusals taken global slots, these would fail.
		b := mustConn(t, l, ip3)
		c := mustConn(t, l, ipN(1))
		_, err := admitConn(l, ipN(2))
		wantLimitErr(t, err, "max_connections", 3, "Too many connections (max_connections=3)")
		releaseAll(t, l, a, b, c)
	})
	t.Run("global refusal keeps per-ip slot", func(t *testing.T) {
		l := New(Options{MaxConnections: 1, MaxConnectionsPerIP: 1})
		a := mustConn(t, l, ip3)
		wantRefused(t, "max_connections refusal", func() (func(), error) { return admitConn(l, ip2) })
		// The refused address left no entry behind.
		wantCounts(t, l, 1, 1, 0, 0)
		a()
		// Had the refusals counted against 127.0.0.2, this would fail.
		b := mustConn(t, l, ip2)
		releaseAll(t, l, b)
	})
	t.Run("user refusal counts nothing", func(t *testing.T) {
		l := New(Options{MaxConnectionsPerUser: 1})
		a := mustUser(t, l, "alice")
		wantRefused(t, "per-user refusal", func() (func(), error) { return admitUser(l, "alice") })
		wantCounts(t, l, 0, 0, 1, 1)
		a()
		b := mustUser(t, l, "alice")
		releaseAll(t, l, b)
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
		releaseAll(t, l, b, b, c, c)
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
		releaseAll(t, l, b, b)
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
		releaseAll(t, l, keep, keepU)
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
	releaseAll(t, l, rels...)
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
		releaseAll(t, l, rels...)
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
		releaseAll(t, l, rels...)
	})
	t.Run("ipv6 prefix change", func(t *testing.T) {
		// A release uncounts under the key it was counted under, even
		// after the prefix length changed.
		l := New(Options{MaxConnectionsPerIP: 1})
		a := netip.MustParseAddr("2001:db8::1")
		rel := mustConn(t, l, a)
		l.SetOptions(Options{MaxConnectionsPerIP: 1, IPv6PrefixLength: 128})
		rel2 := mustConn(t, l, netip.MustParseAddr("2001:db8::2"))
		releaseAll(t, l, rel, rel2)
	})
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
	relU, checksU, err := l.AdmitUser("Ann", a)
	if err != nil || fmt.Sprint(checksU) != fmt.Sprint([]Check{{"max_connections_per_user", 0, 1}}) {
		t.Fatalf("AdmitUser = %v, %v", checksU, err)
	}
	defer relU()
	if _, checksU, err = l.AdmitUser("ann", a); !errors.Is(err, ErrLimit) || checksU[len(checksU)-1].Count != 1 {
		t.Fatalf("second AdmitUser = %v, %v", checksU, err)
	}
}

// admitConn and admitUser are AdmitConn and AdmitUser for tests that do
// not look at the checks.
func admitConn(l *Limiter, addr netip.Addr) (release func(), err error) {
	release, _, err = l.AdmitConn(addr)
	return release, err
}

func admitUser(l *Limiter, user string) (release func(), err error) {
	release, _, err = l.AdmitUser(user, ip2)
	return release, err
}
