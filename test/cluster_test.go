package test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/redistest"
	"github.com/redis/go-redis/v9"
)

// clusterConfig is an imapguard configuration sharing the Redis at url.
func clusterConfig(upAddr, url, id, failure string) string {
	return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upAddr + "\"\n" +
		"[limits]\nmax_connections_per_user = 16\nauth_failure_window = \"0s\"\n" +
		"[cluster]\nstore = \"redis\"\nredis_url = \"" + url + "\"\ninstance_id = \"" + id + "\"\n" +
		"lease_ttl = \"2s\"\nredis_failure = \"" + failure + "\"\n"
}

var listeningRE = regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`)

// liveSlots counts the unexpired slots of user in Redis, as the admit
// script does.
func liveSlots(t *testing.T, c *redis.Client, user string) int {
	t.Helper()
	ctx := context.Background()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.ZCount(ctx, "imapguard:user:"+user, "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// waitSlots waits until user has want live slots in Redis, and returns
// how long that took. Redis is another process: its state is polled.
func waitSlots(t *testing.T, c *redis.Client, user string, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		n := liveSlots(t, c, user)
		if n == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("redis holds %d slots of %s after %v; want %d", n, user, within, want)
		}
		time.Sleep(10 * time.Millisecond) // polling another process's state
	}
}

// loginAll logs n clients in concurrently, alternately through addrs,
// from 127.0.0.2 on, and returns those admitted (still open) and the
// number refused with NO [LIMIT].
// loginDemo logs the user demo in through the proxy at addr from the
// client address src, and fails the test unless the proxy admits it.
func loginDemo(t *testing.T, src, addr string) *proxytest.Client {
	t.Helper()
	c, err := proxytest.DialClient(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Line()
	if _, st, err := c.Cmd("a", "LOGIN demo demo"); err != nil || !strings.HasPrefix(st, "a OK ") {
		t.Fatalf("LOGIN demo from %s through %s: %q %v", src, addr, st, err)
	}
	return c
}

func loginAll(t *testing.T, addrs []string, n int) (open []*proxytest.Client, refused int) {
	t.Helper()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range n {
		wg.Go(func() {
			c, err := proxytest.DialClient("127.0.0."+strconv.Itoa(2+i%50), addrs[i%len(addrs)])
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := c.Line(); err != nil {
				t.Error(err)
				c.Close()
				return
			}
			_, st, err := c.Cmd("a", "LOGIN demo demo")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Error(err)
				c.Close()
			case strings.HasPrefix(st, "a OK "):
				open = append(open, c)
			case strings.HasPrefix(st, "a NO [LIMIT]"):
				refused++
				c.Close()
			default:
				t.Errorf("login: got %q", st)
				c.Close()
			}
		})
	}
	wg.Wait()
	return open, refused
}

// TestClusterTwoProcesses runs two imapguard processes sharing one
// redis-server: 200 concurrent logins of one user split across both admit
// exactly max_connections_per_user, round after round; a process killed
// with SIGKILL leaves slots that expire within lease_ttl, and one that
// restarts with the same instance_id clears them at once; with Redis
// stopped, redis_failure = "deny" refuses logins with NO [UNAVAILABLE]
// and "local" admits by its own counts; with Redis back the live sessions
// are written again.
func TestClusterTwoProcesses(t *testing.T) {
	rs := redistest.Start(t)
	rc := rs.Client()
	upAddr := startIMAPD(t)
	pathA := writeFile(t, "a.toml", clusterConfig(upAddr, rs.URL(), "a", "local"))
	pathB := writeFile(t, "b.toml", clusterConfig(upAddr, rs.URL(), "b", "deny"))
	a := startImapguard(t, pathA)
	b := startImapguard(t, pathB)
	addrA, addrB := a.waitLog(listeningRE)[1], b.waitLog(listeningRE)[1]

	for round := range 3 {
		open, refused := loginAll(t, []string{addrA, addrB}, 200)
		if len(open) != 16 || refused != 184 {
			t.Fatalf("round %d: %d admitted, %d refused; want 16, 184", round, len(open), refused)
		}
		if n := liveSlots(t, rc, "demo"); n != 16 {
			t.Fatalf("round %d: redis holds %d slots; want 16", round, n)
		}
		for _, c := range open {
			c.Logout("z")
			c.Close()
		}
		waitSlots(t, rc, "demo", 0, 5*time.Second)
	}

	// 8 sessions on each; a killed and restarted with the same id at
	// once: its 8 are cleared at its start, well before lease_ttl.
	var held []*proxytest.Client
	for i := range 16 {
		held = append(held, loginDemo(t, "127.0.0.2", []string{addrA, addrB}[i%2]))
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.wait()
	killed := time.Now()
	a = startImapguard(t, pathA)
	addrA = a.waitLog(listeningRE)[1]
	if n, since := liveSlots(t, rc, "demo"), time.Since(killed); n != 8 {
		t.Fatalf("restart with the same instance_id: redis holds %d slots %v after the kill; want b's 8", n, since)
	} else {
		t.Logf("restart with the same instance_id: a's slots cleared %v after the kill (lease_ttl 2s)", since)
	}

	// a gets 8 again; killed without a restart, its slots expire
	// within lease_ttl.
	for range 8 {
		held = append(held, loginDemo(t, "127.0.0.3", addrA))
	}
	if n := liveSlots(t, rc, "demo"); n != 16 {
		t.Fatalf("redis holds %d slots; want 16", n)
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.wait()
	gone := waitSlots(t, rc, "demo", 8, 3*time.Second)
	t.Logf("SIGKILL: the killed instance's slots gone %v after the kill (lease_ttl 2s)", gone)
	a = startImapguard(t, pathA)
	addrA = a.waitLog(listeningRE)[1]

	// Redis stopped: b (deny) refuses, a (local) admits by its own
	// counts (it holds none; b's 8 it does not see).
	rs.Stop()
	c := proxytest.DialFrom(t, "127.0.0.4", addrB)
	c.Greeting()
	if _, st := c.Cmd("d", "LOGIN demo demo"); !strings.HasPrefix(st, "d NO [UNAVAILABLE]") {
		t.Fatalf("deny, redis down: got %q; want NO [UNAVAILABLE]", st)
	}
	c.Close()
	var local []*proxytest.Client
	for range 3 { // local, redis down
		local = append(local, loginDemo(t, "127.0.0.4", addrA))
	}
	// The sessions open through b go on.
	for i := 1; i < 16; i += 2 { // the odd ones went through b
		c := held[i]
		if _, st, err := c.Cmd("n", "NOOP"); err != nil || !strings.HasPrefix(st, "n OK") {
			t.Fatalf("open session %d, redis down: %q %v", i, st, err)
		}
	}
	// Redis back, empty: both write their live sessions again: b's 8
	// (those of held through b) and a's 3.
	rs.Restart()
	rc = rs.Client()
	waitSlots(t, rc, "demo", 8+3, 5*time.Second)
	for _, c := range append(held, local...) {
		c.Close()
	}
	waitSlots(t, rc, "demo", 0, 5*time.Second)
	if out := a.output() + b.output(); strings.Contains(out, "demo demo") {
		t.Error("a password reached the log")
	}
}

// TestClusterPenaltyShared: failed logins through one imapguard process
// block the address on another sharing the Redis.
func TestClusterPenaltyShared(t *testing.T) {
	rs := redistest.Start(t)
	upAddr := startIMAPD(t)
	conf := func(id string) string {
		return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upAddr + "\"\n" +
			"[limits]\nauth_failure_delay = \"0s\"\nmax_auth_failures = 10\nmax_auth_failures_per_ip = 2\n" +
			"[cluster]\nstore = \"redis\"\nredis_url = \"" + rs.URL() + "\"\ninstance_id = \"" + id + "\"\n"
	}
	a := startImapguard(t, writeFile(t, "a.toml", conf("a")))
	b := startImapguard(t, writeFile(t, "b.toml", conf("b")))
	addrA, addrB := a.waitLog(listeningRE)[1], b.waitLog(listeningRE)[1]
	c := proxytest.DialFrom(t, "127.0.0.7", addrA)
	c.Greeting()
	for _, tag := range []string{"a", "b"} {
		if _, st := c.Cmd(tag, "LOGIN demo wrong"); st != tag+authFailedNo {
			t.Fatalf("got %q; want a failed login", st)
		}
	}
	c.Close()
	d := proxytest.DialFrom(t, "127.0.0.7", addrB)
	d.Greeting()
	if _, st := d.Cmd("c", "LOGIN demo demo"); st != "c"+fmt.Sprintf(blockedByIP, 2) {
		t.Fatalf("on the other proxy: got %q; want the address blocked", st)
	}
	d.Close()
	proxytest.LoginFrom(t, "127.0.0.8", addrB, "demo", "demo").Logout("z")
}

// TestTraceClusterUnavailable: with Redis unreachable and redis_failure =
// "deny", a login gets NO [UNAVAILABLE], counted under the reason
// cluster_unavailable, with a span event; the connection itself was
// admitted by the local per-address count.
func TestTraceClusterUnavailable(t *testing.T) {
	rs := redistest.Start(t)
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword})
	st := redisstore.New(redisstore.Options{Client: rs.Client(), Instance: "t", Timeout: 300 * time.Millisecond})
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	rs.Stop()
	tp := startTracedProxyWith(t, proxytest.Config{Upstream: up,
		Shared: &limits.SharedOptions{Store: st, OnFailure: limits.FailureDeny}})
	loginRefused(t, tp.Addr, "a NO [UNAVAILABLE]")
	root := tp.tree(t, "")
	wantRefusalEvent(t, root, "cluster_unavailable")
	found := false
	for _, e := range root.find("imap.authenticate").s.Events {
		found = found || e.Name == "cluster store unavailable"
	}
	if !found {
		t.Error("no span event \"cluster store unavailable\" on imap.authenticate")
	}
	if got := collect(t, tp.reader).sum("imapguard.connections.refused", "reason=cluster_unavailable"); got != 1 {
		t.Errorf("refused cluster_unavailable = %v; want 1", got)
	}
	proxytest.WaitZero(t, tp.Limiter)
}
