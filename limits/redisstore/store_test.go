package redisstore_test

import (
	"context"
	"errors"

	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/test/redistest"
	"github.com/redis/go-redis/v9"
)

// instance is one proxy's Limiter and Store sharing srv.
type instance struct {
	lim   *limits.Limiter
	store *redisstore.Store
}

func newInstance(t *testing.T, srv *redistest.Server, name string, lease time.Duration, mode limits.FailureMode, opts limits.Options) *instance {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	st := redisstore.New(redisstore.Options{Client: c, Instance: name, Lease: lease, Timeout: 500 * time.Millisecond})
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	lim := limits.New(opts)
	var seq atomic.Uint64
	lim.SetShared(limits.SharedOptions{Store: st, OnFailure: mode, NewID: func() string {
		return strconv.FormatUint(seq.Add(1), 10)
	}})
	return &instance{lim, st}
}

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%200)}) }

// redisCount is the live slots in a sorted set, as the scripts count.
func redisCount(t *testing.T, c *redis.Client, key string) int {
	t.Helper()
	ctx := context.Background()
	tm, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.ZCount(ctx, key, "("+strconv.FormatInt(tm.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// TestTwoInstancesUserCap: 200 concurrent sessions of one user split
// across two instances never admit more than the cap, round after round.
func TestTwoInstancesUserCap(t *testing.T) {
	srv := redistest.Start(t)
	opts := limits.Options{MaxConnectionsPerUser: 16, MaxConnectionsPerIP: 1000}
	a := newInstance(t, srv, "a", 30*time.Second, limits.FailureDeny, opts)
	b := newInstance(t, srv, "b", 30*time.Second, limits.FailureDeny, opts)
	c := srv.Client()
	for round := range 5 {
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			releases []func()
			refused  int
		)
		for i := range 200 {
			in := a
			if i%2 == 1 {
				in = b
			}
			wg.Go(func() {
				rel, _, err := in.lim.AdmitUser("Alice", addr(i))
				mu.Lock()
				defer mu.Unlock()
				var le *limits.Error
				switch {
				case err == nil:
					releases = append(releases, rel)
				case errors.As(err, &le) && le.Limit == "max_connections_per_user":
					refused++
				default:
					t.Errorf("AdmitUser: %v", err)
				}
			})
		}
		wg.Wait()
		if len(releases) != 16 || refused != 184 {
			t.Fatalf("round %d: admitted %d, refused %d; want 16, 184", round, len(releases), refused)
		}
		if n := redisCount(t, c, "imapguard:user:alice"); n != 16 {
			t.Fatalf("round %d: redis counts %d; want 16", round, n)
		}
		for _, r := range releases {
			r()
			r() // twice: uncounts once
		}
		if n := redisCount(t, c, "imapguard:user:alice"); n != 0 {
			t.Fatalf("round %d: redis counts %d after release; want 0", round, n)
		}
		if ca, cb := a.lim.Counts().Sessions, b.lim.Counts().Sessions; ca != 0 || cb != 0 {
			t.Fatalf("local sessions %d, %d after release; want 0", ca, cb)
		}
	}
}

// TestTwoInstancesUserIPCap: max_connections_per_user_ip holds across
// instances, and an exempt address skips it.
func TestTwoInstancesUserIPCap(t *testing.T) {
	srv := redistest.Start(t)
	exempt := netip.MustParsePrefix("127.0.0.9/32")
	opts := limits.Options{MaxConnectionsPerUser: 100, MaxConnectionsPerUserIP: 3, ExemptNetworks: []netip.Prefix{exempt}}
	a := newInstance(t, srv, "a", 30*time.Second, limits.FailureDeny, opts)
	b := newInstance(t, srv, "b", 30*time.Second, limits.FailureDeny, opts)
	from := netip.MustParseAddr("127.0.0.2")
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		in := []*instance{a, b}[i%2]
		wg.Go(func() {
			if _, _, err := in.lim.AdmitUser("bob", from); err == nil {
				admitted.Add(1)
			} else if le := new(limits.Error); !errors.As(err, &le) || le.Limit != "max_connections_per_user_ip" {
				t.Errorf("AdmitUser: %v", err)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != 3 {
		t.Fatalf("admitted %d from one address; want 3", n)
	}
	// Another address has its own 3; an exempt one is not capped.
	for i := range 3 {
		if _, _, err := b.lim.AdmitUser("bob", netip.MustParseAddr("127.0.0.3")); err != nil {
			t.Fatalf("other address, session %d: %v", i, err)
		}
	}
	for i := range 5 {
		if _, _, err := a.lim.AdmitUser("BOB", exempt.Addr()); err != nil {
			t.Fatalf("exempt address, session %d: %v", i, err)
		}
	}
}

// TestCapChange: the script takes the cap in force, so a raised cap
// admits at once and a lowered one refuses until the count falls.
func TestCapChange(t *testing.T) {
	srv := redistest.Start(t)
	a := newInstance(t, srv, "a", 30*time.Second, limits.FailureDeny, limits.Options{MaxConnectionsPerUser: 2})
	for range 2 {
		if _, _, err := a.lim.AdmitUser("carol", addr(0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.lim.AdmitUser("carol", addr(0)); err == nil {
		t.Fatal("third session admitted under a cap of 2")
	}
	a.lim.SetOptions(limits.Options{MaxConnectionsPerUser: 3})
	if _, _, err := a.lim.AdmitUser("carol", addr(0)); err != nil {
		t.Fatalf("raised cap: %v", err)
	}
	a.lim.SetOptions(limits.Options{MaxConnectionsPerUser: 1})
	_, checks, err := a.lim.AdmitUser("carol", addr(0))
	var le *limits.Error
	if !errors.As(err, &le) || le.Count != 3 || le.Value != 1 {
		t.Fatalf("lowered cap: %v (checks %v); want a refusal at count 3, max 1", err, checks)
	}
}

// TestLeaseExpiry: the slots of an instance that stops refreshing stop
// counting within the lease; a restart with the same instance id clears
// them at once.
func TestLeaseExpiry(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	opts := limits.Options{MaxConnectionsPerUser: 2}
	lease := 600 * time.Millisecond
	dead := newInstance(t, srv, "dead", lease, limits.FailureDeny, opts)
	for range 2 {
		if _, _, err := dead.lim.AdmitUser("dave", addr(0)); err != nil {
			t.Fatal(err)
		}
	}
	dead.store.Close() // no more refreshes: as if killed
	other := newInstance(t, srv, "other", lease, limits.FailureDeny, opts)
	if _, _, err := other.lim.AdmitUser("dave", addr(1)); err == nil {
		t.Fatal("admitted over the cap while the dead instance's leases run")
	}
	start := time.Now()
	for {
		if _, _, err := other.lim.AdmitUser("dave", addr(1)); err == nil {
			break
		}
		if time.Since(start) > 3*lease {
			t.Fatalf("dead instance's slots still count after %v", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond) // polling real time: leases expire on Redis's clock
	}
	t.Logf("dead instance's slots gone %v after it stopped refreshing (lease %v)", time.Since(start), lease)

	// A restart with the same id clears at once, long lease or not.
	x := newInstance(t, srv, "x", time.Hour, limits.FailureDeny, opts)
	if _, _, err := x.lim.AdmitUser("erin", addr(0)); err != nil {
		t.Fatal(err)
	}
	x.store.Close()
	if n := redisCount(t, c, "imapguard:user:erin"); n != 1 {
		t.Fatalf("before restart: %d slots; want 1", n)
	}
	newInstance(t, srv, "x", time.Hour, limits.FailureDeny, opts)
	if n := redisCount(t, c, "imapguard:user:erin"); n != 0 {
		t.Fatalf("after restart with the same id: %d slots; want 0", n)
	}
}

// TestRedisDown: with "deny" new sessions are refused with
// ErrUnavailable and open ones continue; with "local" the instance's own
// counts decide; when Redis is back, the live sessions are written again
// and the counts are exact.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	opts := limits.Options{MaxConnectionsPerUser: 3}
	deny := newInstance(t, srv, "deny", 3*time.Second, limits.FailureDeny, opts)
	local := newInstance(t, srv, "local", 3*time.Second, limits.FailureLocal, opts)
	relDeny, _, err := deny.lim.AdmitUser("fred", addr(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := local.lim.AdmitUser("fred", addr(1)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, _, err := deny.lim.AdmitUser("fred", addr(0)); !errors.Is(err, limits.ErrUnavailable) {
		t.Fatalf("deny, redis down: %v; want ErrUnavailable", err)
	}
	relDeny() // an open session ends normally
	if n := deny.lim.Counts().Sessions; n != 0 {
		t.Fatalf("deny: %d local sessions after release; want 0", n)
	}
	// local: its own counts, 1 held, cap 3.
	for i := range 2 {
		if _, _, err := local.lim.AdmitUser("fred", addr(1)); err != nil {
			t.Fatalf("local, redis down, session %d: %v", i+2, err)
		}
	}
	if _, _, err := local.lim.AdmitUser("fred", addr(1)); err == nil {
		t.Fatal("local, redis down: admitted a 4th session")
	}
	if deny.store.Up() || local.store.Up() {
		t.Fatal("stores report redis up while it is stopped")
	}
	srv.Restart() // empty
	c := srv.Client()
	deadline := time.Now().Add(5 * time.Second)
	for !local.store.Up() || !deny.store.Up() {
		if time.Now().After(deadline) {
			t.Fatal("stores did not see redis back")
		}
		time.Sleep(20 * time.Millisecond) // the refresher retries every second while down
	}
	if n := redisCount(t, c, "imapguard:user:fred"); n != 3 {
		t.Fatalf("after re-synchronisation redis counts %d; want the 3 live sessions", n)
	}
	if _, _, err := deny.lim.AdmitUser("fred", addr(0)); err == nil {
		t.Fatal("admitted a 4th session after re-synchronisation")
	}
}

// TestScriptsDirect: release of a slot not held, and a retried admit of
// the same slot, count nothing twice.
func TestScriptsDirect(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	st := redisstore.New(redisstore.Options{Client: c, Instance: "i", Lease: time.Minute})
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	slot := limits.Slot{ID: "1", User: "gina", Addr: netip.MustParsePrefix("127.0.0.2/32"), Start: time.Now()}
	st.Release(slot) // not held
	for i := range 2 {
		ok, checks, err := st.AdmitUser(context.Background(), slot, 1, 0)
		if err != nil || !ok {
			t.Fatalf("admit %d: %v %v %v", i, ok, checks, err)
		}
	}
	if n := redisCount(t, c, st.UserKey("gina")); n != 1 {
		t.Fatalf("retried admit counted %d; want 1", n)
	}
	st.Release(slot)
	st.Release(slot)
	if n := redisCount(t, c, st.UserKey("gina")); n != 0 {
		t.Fatalf("after release: %d; want 0", n)
	}
	if n, _ := c.HLen(context.Background(), st.SlotsKey("i")).Result(); n != 0 {
		t.Fatalf("slot records left: %d", n)
	}
}

// TestTwoInstancesAddrCap: max_connections_per_ip holds across
// instances; a refusal costs no rate token.
func TestTwoInstancesAddrCap(t *testing.T) {
	srv := redistest.Start(t)
	opts := limits.Options{MaxConnectionsPerIP: 10, MaxConnectionRatePerIP: 10} // burst 20 per instance
	a := newInstance(t, srv, "a", 30*time.Second, limits.FailureDeny, opts)
	b := newInstance(t, srv, "b", 30*time.Second, limits.FailureDeny, opts)
	from := netip.MustParseAddr("127.0.0.2")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		releases []func()
		byA      int
	)
	now := time.Now()
	for i := range 100 {
		in := []*instance{a, b}[i%2]
		wg.Go(func() {
			rel, _, err := in.lim.AdmitConnAt(from, now)
			var le *limits.Error
			switch {
			case err == nil:
				mu.Lock()
				releases = append(releases, rel)
				if in == a {
					byA++
				}
				mu.Unlock()
			case errors.As(err, &le) && le.Limit == "max_connections_per_ip":
			default:
				t.Errorf("AdmitConnAt: %v", err)
			}
		})
	}
	wg.Wait()
	if len(releases) != 10 {
		t.Fatalf("admitted %d connections from one address across two instances; want 10", len(releases))
	}
	c := srv.Client()
	if n := redisCount(t, c, "imapguard:addr:127.0.0.2/32"); n != 10 {
		t.Fatalf("redis counts %d; want 10", n)
	}
	for _, r := range releases {
		r()
		r()
	}
	if n := redisCount(t, c, "imapguard:addr:127.0.0.2/32"); n != 0 {
		t.Fatalf("redis counts %d after release; want 0", n)
	}
	if ca, cb := a.lim.Counts().Connections, b.lim.Counts().Connections; ca != 0 || cb != 0 {
		t.Fatalf("local connections %d, %d; want 0", ca, cb)
	}
	// The 90 refused took no tokens: a has its burst (20) less the
	// connections it admitted left at the same instant.
	for i := range 20 - byA {
		rel, _, err := a.lim.AdmitConnAt(from, now)
		if err != nil {
			t.Fatalf("token %d of %d: %v", i+1, 20-byA, err)
		}
		rel()
	}
	var le *limits.Error
	if _, _, err := a.lim.AdmitConnAt(from, now); !errors.As(err, &le) || le.Limit != "max_connection_rate_per_ip" {
		t.Fatalf("past the burst: %v; want a refusal", err)
	}
}
