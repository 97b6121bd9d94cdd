package limits

import (
	"errors"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func testAuthOptions() AuthOptions {
	return AuthOptions{Window: 10 * time.Minute, MaxPerIP: 10, MaxPerUser: 30, Block: 15 * time.Minute,
		Delay: 2 * time.Second, Entries: 1000}
}

func attempt(addr, user string) Attempt {
	return Attempt{Addr: netip.MustParseAddr(addr), User: user, TrackAddr: true}
}

// refusedBy returns the limit of a refusal, or "".
func refusedBy(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var le *Error
	if !errors.As(err, &le) || !errors.Is(err, ErrLimit) {
		t.Fatalf("got error %v; want a *limits.Error", err)
	}
	return le.Limit
}

func TestAuthTrackerDelayGrows(t *testing.T) {
	tr := NewTracker(testAuthOptions())
	a := attempt("192.0.2.1", "alice")
	now := t0
	want := []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second}
	for i, w := range want {
		d, err := tr.Check(a, now)
		if err != nil {
			t.Fatalf("attempt %d: refused: %v", i, err)
		}
		if d != w {
			t.Fatalf("attempt %d: got delay %v; want %v", i, d, w)
		}
		tr.Failed(a, now)
		now = now.Add(time.Second)
	}
	// Another address is not delayed; the same /32 is, by any user.
	if d, _ := tr.Check(attempt("192.0.2.2", "alice"), now); d != 0 {
		t.Fatalf("other address: got delay %v; want 0", d)
	}
	if d, _ := tr.Check(attempt("192.0.2.1", "bob"), now); d != 15*time.Second {
		t.Fatalf("other user, same address: got delay %v; want 15s", d)
	}
}

func TestAuthTrackerBlockPerIP(t *testing.T) {
	tr := NewTracker(testAuthOptions())
	now := t0
	for i := range 10 {
		if _, err := tr.Check(attempt("192.0.2.1", "u"+strconv.Itoa(i)), now); err != nil {
			t.Fatalf("failure %d: refused early: %v", i, err)
		}
		tr.Failed(attempt("192.0.2.1", "u"+strconv.Itoa(i)), now)
	}
	_, err := tr.Check(attempt("192.0.2.1", "someone"), now)
	if got := refusedBy(t, err); got != "max_auth_failures_per_ip" {
		t.Fatalf("got %q; want max_auth_failures_per_ip", got)
	}
	if want := "Too many failed logins, try again later (max_auth_failures_per_ip=10)"; err.Error() != want {
		t.Fatalf("got text %q; want %q", err.Error(), want)
	}
	// Still blocked a moment before the block ends, free at its end.
	if _, err := tr.Check(attempt("192.0.2.1", "x"), now.Add(15*time.Minute-time.Second)); err == nil {
		t.Fatal("not blocked before auth_failure_block passed")
	}
	d, err := tr.Check(attempt("192.0.2.1", "x"), now.Add(15*time.Minute))
	if err != nil || d != 0 {
		t.Fatalf("after the block: got %v, %v; want no delay, no refusal", d, err)
	}
	// Not counted when the address is not tracked (exempt networks).
	tr2 := NewTracker(testAuthOptions())
	for i := range 20 {
		a := attempt("192.0.2.1", "u"+strconv.Itoa(i))
		a.TrackAddr = false
		tr2.Failed(a, now)
		if d, err := tr2.Check(a, now); d != 0 || err != nil {
			t.Fatalf("untracked address: got %v, %v; want nothing", d, err)
		}
	}
}

func TestAuthTrackerBlockPerUser(t *testing.T) {
	o := testAuthOptions()
	o.MaxPerUser = 3
	tr := NewTracker(o)
	now := t0
	// alice logged in from .9 before the attack.
	tr.Succeeded(attempt("192.0.2.9", "alice"), now)
	for i := range 3 {
		tr.Failed(attempt("198.51.100."+strconv.Itoa(i+1), "Alice"), now)
	}
	_, err := tr.Check(attempt("203.0.113.5", "ALICE "), now)
	if got := refusedBy(t, err); got != "max_auth_failures_per_user" {
		t.Fatalf("new address: got %q; want max_auth_failures_per_user", got)
	}
	if _, err := tr.Check(attempt("192.0.2.9", "alice"), now); err != nil {
		t.Fatalf("address alice logged in from before: refused: %v", err)
	}
	if _, err := tr.Check(attempt("203.0.113.5", "bob"), now); err != nil {
		t.Fatalf("another user: refused: %v", err)
	}
	// The success clears the user's count.
	tr.Succeeded(attempt("192.0.2.9", "alice"), now)
	if _, err := tr.Check(attempt("203.0.113.5", "alice"), now); err != nil {
		t.Fatalf("after alice's success: refused: %v", err)
	}
}

func TestAuthTrackerWindowAndSuccess(t *testing.T) {
	tr := NewTracker(testAuthOptions())
	a := attempt("192.0.2.1", "alice")
	for range 9 {
		tr.Failed(a, t0)
	}
	// The window restarts at each failure, and ends window after the last.
	if d, _ := tr.Check(a, t0.Add(10*time.Minute-time.Second)); d == 0 {
		t.Fatal("failures forgotten before the window ended")
	}
	if d, err := tr.Check(a, t0.Add(10*time.Minute)); d != 0 || err != nil {
		t.Fatalf("after the window: got %v, %v; want nothing", d, err)
	}
	if p := tr.Penalties(t0.Add(10 * time.Minute)); len(p) != 0 {
		t.Fatalf("after the window: got penalties %+v; want none", p)
	}
	// A success resets the delay, not the count: the tenth failure after
	// it still blocks.
	for range 9 {
		tr.Failed(a, t0)
	}
	tr.Succeeded(a, t0)
	if d, _ := tr.Check(attempt("192.0.2.1", "bob"), t0); d != 0 {
		t.Fatalf("after a success: got delay %v; want 0", d)
	}
	tr.Failed(attempt("192.0.2.1", "bob"), t0)
	if _, err := tr.Check(attempt("192.0.2.1", "carol"), t0); refusedBy(t, err) != "max_auth_failures_per_ip" {
		t.Fatalf("tenth failure after a success: got %v; want the per-address block", err)
	}
}

func TestAuthTrackerIPv6Prefix(t *testing.T) {
	o := testAuthOptions()
	o.MaxPerIP = 2
	o.IPv6PrefixLength = 64
	tr := NewTracker(o)
	tr.Failed(attempt("2001:db8:1:2::1", "a"), t0)
	tr.Failed(attempt("2001:db8:1:2:ffff::9", "b"), t0)
	if _, err := tr.Check(attempt("2001:db8:1:2::77", "c"), t0); refusedBy(t, err) != "max_auth_failures_per_ip" {
		t.Fatalf("same /64: got %v; want blocked", err)
	}
	if _, err := tr.Check(attempt("2001:db8:1:3::1", "c"), t0); err != nil {
		t.Fatalf("another /64: refused: %v", err)
	}
	// IPv4-mapped addresses count as IPv4.
	tr.Failed(attempt("::ffff:192.0.2.1", "a"), t0)
	tr.Failed(attempt("192.0.2.1", "b"), t0)
	if _, err := tr.Check(attempt("192.0.2.1", "c"), t0); err == nil {
		t.Fatal("IPv4-mapped and IPv4 counted apart")
	}
	ps := tr.Penalties(t0)
	if len(ps) != 4 || ps[0].Kind != "address" || ps[0].Key != "192.0.2.1/32" || ps[1].Key != "2001:db8:1:2::/64" ||
		ps[1].Failures != 2 || !ps[1].BlockedUntil.Equal(t0.Add(15*time.Minute)) || ps[2].Kind != "user" {
		t.Fatalf("got penalties %+v", ps)
	}
	if n := tr.ClearAddr(netip.MustParsePrefix("2001:db8:1:2::5/128")); n != 1 {
		t.Fatalf("ClearAddr of one address in the /64: cleared %d; want 1", n)
	}
	if _, err := tr.Check(attempt("2001:db8:1:2::77", "c"), t0); err != nil {
		t.Fatalf("after clearing: refused: %v", err)
	}
	if n := tr.ClearUser("A"); n != 1 {
		t.Fatalf("ClearUser: cleared %d; want 1", n)
	}
	if n := tr.ClearAll(); n != 2 { // 192.0.2.1 and user b
		t.Fatalf("ClearAll: cleared %d; want 2", n)
	}
}

func TestAuthTrackerOff(t *testing.T) {
	o := testAuthOptions()
	o.Window = 0
	tr := NewTracker(o)
	a := attempt("192.0.2.1", "alice")
	for range 50 {
		tr.Failed(a, t0)
	}
	if d, err := tr.Check(a, t0); d != 0 || err != nil {
		t.Fatalf("defence off: got %v, %v", d, err)
	}
	// Reload: on, with no delay and a per-IP block of 2.
	o = testAuthOptions()
	o.Delay, o.MaxPerIP = 0, 2
	tr.SetOptions(o)
	tr.Failed(a, t0)
	if d, err := tr.Check(a, t0); d != 0 || err != nil {
		t.Fatalf("delay off: got %v, %v", d, err)
	}
	tr.Failed(a, t0)
	if _, err := tr.Check(a, t0); err == nil {
		t.Fatal("max_auth_failures_per_ip lowered by SetOptions: not blocked")
	}
	o.MaxPerIP, o.MaxPerUser = 0, 0
	tr.SetOptions(o)
	for range 50 {
		tr.Failed(a, t0)
	}
	if _, err := tr.Check(a, t0); err != nil {
		t.Fatalf("blocks off: refused: %v", err)
	}
}

// TestAuthTrackerMillionKeys drives a million distinct addresses and as
// many user names (long ones, as an attacker would send) through the
// tracker, and checks that it holds at most Entries keys in each cache
// and that its memory stays within the bound documented in the
// configuration reference (auth_tracking_entries): about 400 bytes per
// key of each cache.
func TestAuthTrackerMillionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys")
	}
	const entries = 100000
	o := testAuthOptions()
	o.Entries = entries
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tr := NewTracker(o)
	long := string(make([]byte, 300)) // hashed: longer than maxUserKeyLen
	for i := range 1_000_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		user := "user" + strconv.Itoa(i)
		if i%2 == 0 {
			user += long
		}
		a := Attempt{Addr: ip, User: user, TrackAddr: true}
		tr.Failed(a, t0)
		if i%10 == 0 {
			tr.Succeeded(Attempt{Addr: ip, User: "known" + strconv.Itoa(i), TrackAddr: true}, t0)
		}
	}
	n := tr.Counts()
	if n.Addresses > entries || n.Users > entries || n.Known > entries {
		t.Fatalf("got %+v keys; want at most %d each", n, entries)
	}
	if n.Addresses != entries || n.Users != entries || n.Known != entries {
		t.Fatalf("got %+v keys; want the caches full (%d each)", n, entries)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	const bound = 3 * entries * 400
	t.Logf("%d keys per cache hold %d bytes of heap (%d per key of each cache)", entries, used, used/(3*entries))
	if used > bound {
		t.Fatalf("the tracker holds %d bytes; want at most %d", used, bound)
	}
	runtime.KeepAlive(tr)
	// The newest keys are the ones kept.
	if _, err := tr.Check(Attempt{Addr: netip.AddrFrom4([4]byte{10, 15, 66, 63}), User: "x", TrackAddr: true}, t0); err != nil {
		t.Fatal(err)
	}
	if ps := tr.Penalties(t0); len(ps) != 2*entries {
		t.Fatalf("got %d penalties; want %d", len(ps), 2*entries)
	}
	tr.SetOptions(AuthOptions{Window: time.Minute, Entries: 10})
	if n := tr.Counts(); n.Addresses != 10 || n.Users != 10 || n.Known != 10 {
		t.Fatalf("after resizing to 10: got %+v", n)
	}
}
