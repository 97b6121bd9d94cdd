package test

// Routing to several upstreams (issue 13): hash and map routes, health
// checks on the fake clock, the failover of a dial at login, with three
// cmd/imapd backends. Each backend holds the same accounts with a
// different number of messages (backend i: i+1), so SELECT INBOX tells
// which backend a login landed on.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

const routePass = "route-secret"

// routeUsers are the accounts every routing backend holds.
func routeUsers(messages int) []server.User {
	var us []server.User
	for i := range 24 {
		us = append(us, server.User{Username: fmt.Sprintf("user%d", i), Password: routePass, Messages: messages})
	}
	return us
}

// routeBackend serves an imapd with routeUsers(messages) on addr
// ("127.0.0.1:0" for a fresh port) and returns it and its address; the
// test's cleanup closes it.
func routeBackend(t *testing.T, addr string, messages int) (*server.Server, string) {
	t.Helper()
	srv, err := server.New(server.Options{Users: routeUsers(messages), InsecureAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("imapd: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// threeBackends starts three routing backends, named b0, b1 and b2.
func threeBackends(t *testing.T) ([]*server.Server, []proxy.Backend) {
	t.Helper()
	var srvs []*server.Server
	var bs []proxy.Backend
	for i := range 3 {
		srv, addr := routeBackend(t, "127.0.0.1:0", i+1)
		srvs = append(srvs, srv)
		bs = append(bs, proxy.Backend{Name: fmt.Sprintf("b%d", i), Addr: addr})
	}
	return srvs, bs
}

// landsOn logs user in through the proxy at addr and checks that the
// session is on backend want (by its message count).
func landsOn(t *testing.T, addr, user string, want int) {
	t.Helper()
	c := proxytest.Login(t, addr, user, routePass)
	c.SelectAndLogout(fmt.Sprintf("* %d EXISTS", want+1))
}

func TestHashOrderMovesOnlyTheRemovedBackendsUsers(t *testing.T) {
	three := []proxy.Backend{{Name: "b0"}, {Name: "b1"}, {Name: "b2"}}
	two := []proxy.Backend{three[0], three[2]} // b1 taken out
	const users = 10000
	var per [3]int
	moved, movedElsewhere := 0, 0
	for i := range users {
		u := fmt.Sprintf("user%d@example.org", i)
		before := three[proxy.HashOrder(u, three)[0]].Name
		after := two[proxy.HashOrder(u, two)[0]].Name
		per[proxy.HashOrder(u, three)[0]]++
		if before != after {
			moved++
			if before != "b1" {
				movedElsewhere++
			}
		}
		// The next choice is where a user goes when the first is down.
		if before == "b1" && three[proxy.HashOrder(u, three)[1]].Name != after {
			t.Errorf("%s: moved to %s; want its second choice", u, after)
		}
	}
	t.Logf("10000 users over b0/b1/b2: %v; removing b1 moved %d users (%d not b1's)", per, moved, movedElsewhere)
	if movedElsewhere != 0 {
		t.Errorf("%d users not on b1 moved; want 0", movedElsewhere)
	}
	if moved != per[1] {
		t.Errorf("moved %d users; want b1's %d", moved, per[1])
	}
	for i, n := range per {
		// An even share is 3333; 5 standard deviations is about 235.
		if n < 3333-300 || n > 3333+300 {
			t.Errorf("backend b%d has %d of 10000 users; want about 3333", i, n)
		}
	}
}

func TestHashOrderWeightsAndCase(t *testing.T) {
	bs := []proxy.Backend{{Name: "small", Weight: 1}, {Name: "big", Weight: 3}}
	big := 0
	for i := range 10000 {
		if proxy.HashOrder(fmt.Sprintf("u%d", i), bs)[0] == 1 {
			big++
		}
	}
	t.Logf("weights 1:3: %d of 10000 on the weight-3 backend", big)
	if big < 7500-300 || big > 7500+300 {
		t.Errorf("weight-3 backend has %d of 10000 users; want about 7500", big)
	}
	if a, b := proxy.HashOrder("Alice", bs), proxy.HashOrder(" alice ", bs); a[0] != b[0] {
		t.Errorf("Alice → %d, alice → %d; want the same backend", a[0], b[0])
	}
}

func TestRouteHashLogins(t *testing.T) {
	_, bs := threeBackends(t)
	p := proxytest.Start(t, proxytest.Config{Options: proxy.Options{Route: proxy.RouteHash, Backends: bs}})
	seen := map[int]bool{}
	for i := range 12 {
		u := fmt.Sprintf("user%d", i)
		want := proxy.HashOrder(u, bs)[0]
		seen[want] = true
		landsOn(t, p.Addr, u, want)
		// Case-folded: the same user in capitals lands on the same backend.
		if i == 0 {
			want2 := proxy.HashOrder("USER0", bs)[0]
			if want2 != want {
				t.Fatalf("USER0 → b%d, user0 → b%d", want2, want)
			}
		}
	}
	if len(seen) < 2 {
		t.Errorf("12 users all on %v; want them spread", seen)
	}
	proxytest.WaitZero(t, p.Limiter)
}

func TestRouteMap(t *testing.T) {
	_, bs := threeBackends(t)
	o := proxy.Options{Route: proxy.RouteMap, Backends: bs, RouteMap: map[string]string{
		"user1": "b2",
		"user2": bs[1].Addr, // by address
		"*":     "b0",
	}}
	p := proxytest.Start(t, proxytest.Config{Options: o})
	landsOn(t, p.Addr, "user1", 2)
	landsOn(t, p.Addr, "user2", 1)
	landsOn(t, p.Addr, "user3", 0) // the default

	// A reload (SetOptions) applies to new logins.
	o.RouteMap = map[string]string{"user1": "b1"}
	p.Server.SetOptions(o)
	landsOn(t, p.Addr, "user1", 1)
	// No default: a user the map does not list is told so, not routed.
	d := proxytest.Dial(t, p.Addr)
	d.Greeting()
	_, tagged := d.Cmd("a", "LOGIN user3 "+routePass)
	if want := "a NO [UNAVAILABLE]"; len(tagged) < len(want) || tagged[:len(want)] != want {
		t.Errorf("unmapped user: %q; want %q…", tagged, want)
	}
	d.Logout("b")
	proxytest.WaitZero(t, p.Limiter)
}

// healthRound moves the clock on by one interval and waits for the round
// of probes it starts to be recorded.
func healthRound(t *testing.T, clk *proxytest.Clock, srv *proxy.Server, interval time.Duration) {
	t.Helper()
	clk.WaitTimers(t, 1)
	clk.Advance(interval)
	now := clk.Now()
	proxytest.WaitFor(t, "a round of health checks", func() bool {
		for _, b := range srv.Backends() {
			if !b.LastProbe.Equal(now) {
				return false
			}
		}
		return true
	})
}

func backendState(srv *proxy.Server, name string) proxy.BackendInfo {
	for _, b := range srv.Backends() {
		if b.Name == name {
			return b
		}
	}
	return proxy.BackendInfo{}
}

func TestRouteHealthChecks(t *testing.T) {
	srvs, bs := threeBackends(t)
	clk := proxytest.NewClock()
	const interval = 5 * time.Second
	o := proxy.Options{Route: proxy.RouteHash, Backends: bs, Clock: clk,
		HealthInterval: interval, UnhealthyAfter: 3, HealthyAfter: 2}
	p := proxytest.Start(t, proxytest.Config{Options: o})

	// A user whose first choice is b1, and where it goes without it.
	var user string
	for i := range 24 {
		if u := fmt.Sprintf("user%d", i); proxy.HashOrder(u, bs)[0] == 1 {
			user = u
			break
		}
	}
	if user == "" {
		t.Fatal("no test user hashes to b1")
	}
	next := proxy.HashOrder(user, bs)[1]

	healthRound(t, clk, p.Server, interval)
	for _, b := range p.Server.Backends() {
		if !b.Up || b.Failures != 0 {
			t.Fatalf("%s after a good probe: %+v; want up", b.Name, b)
		}
	}
	landsOn(t, p.Addr, user, 1)

	// b1 dies: it stays up for two failed probes and goes down at the third.
	addr := bs[1].Addr
	srvs[1].Close()
	for i := 1; i <= 3; i++ {
		healthRound(t, clk, p.Server, interval)
		st := backendState(p.Server, "b1")
		if st.Failures != i || st.Up != (i < 3) {
			t.Fatalf("b1 after %d failed probes: up %v, failures %d", i, st.Up, st.Failures)
		}
	}
	if p.Server.BackendsReady() != true {
		t.Error("BackendsReady with two backends up: false")
	}
	// Its users go to their next choice; the others stay.
	landsOn(t, p.Addr, user, next)

	// b1 comes back on the same address: up after two good probes.
	back, _ := routeBackend(t, addr, 2)
	healthRound(t, clk, p.Server, interval)
	if st := backendState(p.Server, "b1"); st.Up || st.Failures != 0 {
		t.Fatalf("b1 after one good probe: %+v; want down, no failures", st)
	}
	healthRound(t, clk, p.Server, interval)
	if st := backendState(p.Server, "b1"); !st.Up {
		t.Fatalf("b1 after two good probes: %+v; want up", st)
	}
	landsOn(t, p.Addr, user, 1)

	// Every backend down: not ready.
	for _, s := range append(srvs, back) {
		s.Close()
	}
	for range 3 {
		healthRound(t, clk, p.Server, interval)
	}
	for _, b := range p.Server.Backends() {
		if b.Up {
			t.Errorf("%s after 3 failed probes: %+v; want down", b.Name, b)
		}
	}
	if p.Server.BackendsReady() {
		t.Error("BackendsReady with every backend down: true")
	}
	if err := p.Server.CheckUpstream(context.Background()); !errors.Is(err, proxy.ErrNoBackendUp) {
		t.Errorf("CheckUpstream with every backend down: %v; want ErrNoBackendUp", err)
	}
	proxytest.WaitZero(t, p.Limiter)
}

func TestRouteDialFailover(t *testing.T) {
	_, bs := threeBackends(t)
	// A user whose first choice is a backend nobody listens on.
	dead := proxytest.ClosedAddr(t)
	bs[0].Addr = dead
	var user string
	for i := range 24 {
		if u := fmt.Sprintf("user%d", i); proxy.HashOrder(u, bs)[0] == 0 {
			user = u
			break
		}
	}
	if user == "" {
		t.Fatal("no test user hashes to b0")
	}
	p := proxytest.Start(t, proxytest.Config{Options: proxy.Options{Route: proxy.RouteHash, Backends: bs}})
	// No probe has run: b0 counts as up, the dial fails and the login
	// goes to the user's next choice.
	c := proxytest.Login(t, p.Addr, user, routePass)
	next := proxy.HashOrder(user, bs)[1]
	proxytest.WaitFor(t, "the session counted on its backend", func() bool {
		return backendState(p.Server, bs[next].Name).Sessions == 1
	})
	c.SelectAndLogout(fmt.Sprintf("* %d EXISTS", next+1))
	proxytest.WaitFor(t, "the session uncounted", func() bool {
		return backendState(p.Server, bs[next].Name).Sessions == 0
	})
	proxytest.WaitZero(t, p.Limiter)
}

// writeMap writes a map file with a modification time of its own, so
// that the proxy sees each version as a change.
func writeMap(t *testing.T, path, text string, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func TestRouteMapFile(t *testing.T) {
	_, bs := threeBackends(t)
	path := filepath.Join(t.TempDir(), "users.map")
	mod := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	writeMap(t, path, "# user backend\nuser1 b2\n\nUSER2\tb1\n*  b0\n", mod)
	clk := proxytest.NewClock()
	const interval = 5 * time.Second
	o := proxy.Options{Route: proxy.RouteMap, Backends: bs, RouteMapFile: path, Clock: clk, HealthInterval: interval}
	p := proxytest.Start(t, proxytest.Config{Options: o})
	landsOn(t, p.Addr, "user1", 2)
	landsOn(t, p.Addr, "user2", 1) // case-folded
	landsOn(t, p.Addr, "user3", 0)

	// The file changes: read again before the next round of probes.
	writeMap(t, path, "user1 b1\n* "+bs[2].Addr+"\n", mod.Add(time.Second))
	healthRound(t, clk, p.Server, interval)
	landsOn(t, p.Addr, "user1", 1)
	landsOn(t, p.Addr, "user3", 2)

	// A wrong file leaves the map in force, on a change and on a reload.
	writeMap(t, path, "user1 nosuch\n", mod.Add(2*time.Second))
	healthRound(t, clk, p.Server, interval)
	landsOn(t, p.Addr, "user1", 1)
	p.Server.SetOptions(o)
	landsOn(t, p.Addr, "user1", 1)

	// A reload reads the file again even with the same time and size.
	writeMap(t, path, "user1 b0\n", mod.Add(3*time.Second))
	p.Server.SetOptions(o)
	landsOn(t, p.Addr, "user1", 0)
	proxytest.WaitZero(t, p.Limiter)
}

func TestParseRouteMap(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     map[string]string
		err      string
	}{
		{"empty", "", map[string]string{}, ""},
		{"comments and default", "# c\n\n  Alice  mail1 \n* mail2\n", map[string]string{"alice": "mail1", "*": "mail2"}, ""},
		{"three fields", "alice mail1 x\n", nil, "line 1: want \"user backend\", got 3 fields"},
		{"one field", "# c\nalice\n", nil, "line 2: want \"user backend\", got 1 fields"},
		{"twice", "alice a\nALICE b\n", nil, `line 2: user "ALICE" is listed twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proxy.ParseRouteMap([]byte(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v; want %q", err, tt.err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	bs := []proxy.Backend{{Name: "mail1", Addr: "192.0.2.1:143"}, {Addr: "192.0.2.2:143"}}
	if err := proxy.CheckRouteMap(map[string]string{"a": "mail1", "b": "192.0.2.2:143", "c": "192.0.2.1:143"}, bs); err != nil {
		t.Errorf("names and addresses: %v", err)
	}
	if err := proxy.CheckRouteMap(map[string]string{"a": "mail2"}, bs); err == nil {
		t.Error("an unknown backend: no error")
	}
}

// TestRouteMetrics: imapguard.backend.up and imapguard.backend.sessions,
// one series per backend.
func TestRouteMetrics(t *testing.T) {
	srvs, bs := threeBackends(t)
	clk := proxytest.NewClock()
	const interval = time.Second
	p := startTracedProxy(t, "", proxy.Options{Route: proxy.RouteMap, Backends: bs, Clock: clk,
		RouteMap: map[string]string{"*": "b2"}, HealthInterval: interval, UnhealthyAfter: 1}, limits.Options{})
	a := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "user1", routePass)
	b := proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "user2", routePass)
	collect(t, p.reader).want(t, []metricWant{
		{"gauge", "imapguard.backend.up", []string{"backend=b0"}, 1},
		{"gauge", "imapguard.backend.up", []string{"backend=b1"}, 1},
		{"gauge", "imapguard.backend.sessions", []string{"backend=b2"}, 2},
		{"gauge", "imapguard.backend.sessions", []string{"backend=b0"}, 0},
	})
	srvs[0].Close()
	a.Logout("z")
	b.Logout("z")
	proxytest.WaitFor(t, "the sessions uncounted", func() bool { return backendState(p.Server, "b2").Sessions == 0 })
	healthRound(t, clk, p.Server, interval)
	collect(t, p.reader).want(t, []metricWant{
		{"gauge", "imapguard.backend.up", []string{"backend=b0"}, 0},
		{"gauge", "imapguard.backend.up", []string{"backend=b2"}, 1},
		{"gauge", "imapguard.backend.sessions", []string{"backend=b2"}, 0},
	})
	proxytest.WaitZero(t, p.Limiter)
}

// TestRouteReload: new backends, weights and route apply to new logins;
// a session stays on its backend; an unchanged backend keeps its health.
func TestRouteReload(t *testing.T) {
	srvs, bs := threeBackends(t)
	clk := proxytest.NewClock()
	const interval = time.Second
	o := proxy.Options{Route: proxy.RouteHash, Backends: bs, Clock: clk, HealthInterval: interval, UnhealthyAfter: 1}
	p := proxytest.Start(t, proxytest.Config{Options: o})
	srvs[0].Close()
	healthRound(t, clk, p.Server, interval)
	if backendState(p.Server, "b0").Up {
		t.Fatal("b0 up after a failed probe with unhealthy_after 1")
	}
	// A session on b2 through the map route.
	o.Route, o.RouteMap = proxy.RouteMap, map[string]string{"*": "b2"}
	p.Server.SetOptions(o)
	held := proxytest.Login(t, p.Addr, "user5", routePass)

	// Only b0 and b1 now, by hash: b0 kept its health (down), so every
	// user lands on b1, and the session on b2 goes on.
	o.Route, o.Backends = proxy.RouteHash, bs[:2]
	p.Server.SetOptions(o)
	if st := backendState(p.Server, "b0"); st.Up || st.Failures != 1 {
		t.Errorf("b0 after a reload: %+v; want down with its failure", st)
	}
	for i := range 4 {
		landsOn(t, p.Addr, fmt.Sprintf("user%d", i), 1)
	}
	held.SelectAndLogout("* 3 EXISTS")

	// A renamed backend is another one: up until probed.
	o.Backends = []proxy.Backend{{Name: "b0-new", Addr: bs[0].Addr}, bs[1]}
	p.Server.SetOptions(o)
	if st := backendState(p.Server, "b0-new"); !st.Up {
		t.Errorf("b0 renamed: %+v; want up until probed", st)
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestRouteProcess: imapguard as a user runs it, with route = "map" over
// three backends: the map file read at start, on SIGHUP and when it
// changes; a backend stopped is down after its probes; imapguard
// backends lists them.
func TestRouteProcess(t *testing.T) {
	t.Parallel()
	srvs, bs := threeBackends(t)
	mapPath := filepath.Join(t.TempDir(), "users.map")
	writeMap(t, mapPath, "user1 b1\n* b0\n", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\nroute = \"map\"\nmap_file = \"" + mapPath + "\"\n" +
		"health_interval = \"100ms\"\nunhealthy_after = 1\n"
	for _, b := range bs {
		cfg += "[[upstream.backend]]\nname = \"" + b.Name + "\"\naddress = \"" + b.Addr + "\"\n"
	}
	cfg += "[admin]\nlisten = \"127.0.0.1:0\"\n"
	path := writeFile(t, "imapguard.toml", cfg)
	p := startImapguard(t, path)
	addr := p.waitLog(listeningRe)[1]
	base := p.waitLog(adminRe)[1]
	landsOn(t, addr, "user1", 1)
	landsOn(t, addr, "user2", 0)
	p.waitLog(regexp.MustCompile(`msg="logged in" .*user=user2 .*backend=b0`))

	// Changed: read again within a health interval, without a signal.
	writeMap(t, mapPath, "user1 b2\n* b0\n", time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC))
	p.waitLog(regexp.MustCompile(`msg="route map read" file=\S+ users=2$`))
	landsOn(t, addr, "user1", 2)
	// SIGHUP reads it too.
	writeMap(t, mapPath, "user1 b0\n* b1\n", time.Date(2025, 1, 1, 0, 0, 2, 0, time.UTC))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(regexp.MustCompile(`msg="configuration reloaded" source=SIGHUP`))
	landsOn(t, addr, "user1", 0)
	landsOn(t, addr, "user2", 1)

	srvs[2].Close()
	p.waitLog(regexp.MustCompile(`level=WARN msg="backend down" backend=b2 `))
	code, out, errOut := runBinary(t, "backends", "-admin", base)
	for _, re := range []string{`(?m)^b0 +127\.0\.0\.1:\d+ +1 +up +0 `, `(?m)^b2 +127\.0\.0\.1:\d+ +1 +down +[1-9]`, `(?m)^route map: 3 backends$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("imapguard backends: no %s in:\n%s", re, out)
		}
	}
	if code != 0 || errOut != "" {
		t.Errorf("imapguard backends: exit %d, stderr %q", code, errOut)
	}
}

// TestRouteShutdownDuringProbe: a probe of a backend that accepts and
// says nothing does not hold Shutdown for login_timeout.
func TestRouteShutdownDuringProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	clk := proxytest.NewClock()
	srv := proxy.New(proxy.Options{Route: proxy.RouteHash, Clock: clk, HealthInterval: time.Second,
		LoginTimeout: time.Minute, Backends: []proxy.Backend{{Name: "silent", Addr: ln.Addr().String()}}}, limits.New(limits.Options{}), nil)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pl) }()
	clk.WaitTimers(t, 1)
	clk.Advance(time.Second)
	var held net.Conn
	select {
	case held = <-accepted:
		defer held.Close()
	case <-time.After(proxytest.Timeout):
		t.Fatal("no probe came")
	}
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Timeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown during a probe: %v", err)
		}
	case <-time.After(proxytest.Timeout):
		// The probe would go on for its login_timeout, a minute.
		t.Fatal("Shutdown waits for the probe")
	}
	if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if st := srv.Backends()[0]; st.Failures != 0 || !st.Up {
		t.Errorf("a probe cut short by Shutdown: %+v; want no failure", st)
	}
}

// TestRouteReloadFromSingle: no health timer with one upstream; a reload
// to "hash" starts the checks.
func TestRouteReloadFromSingle(t *testing.T) {
	_, bs := threeBackends(t)
	clk := proxytest.NewClock()
	const interval = time.Second
	o := proxy.Options{UpstreamAddr: bs[0].Addr, Clock: clk, HealthInterval: interval}
	p := proxytest.Start(t, proxytest.Config{Upstream: bs[0].Addr, Options: o})
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers with one upstream and no connection; want 0", n)
	}
	landsOn(t, p.Addr, "user1", 0)
	o.Route, o.Backends = proxy.RouteHash, bs
	p.Server.SetOptions(o)
	healthRound(t, clk, p.Server, interval)
	for _, b := range p.Server.Backends() {
		if !b.Up || !b.LastProbe.Equal(clk.Now()) {
			t.Errorf("%s: %+v; want up and probed", b.Name, b)
		}
	}
	u := "user3"
	landsOn(t, p.Addr, u, proxy.HashOrder(u, bs)[0])
	proxytest.WaitZero(t, p.Limiter)
}
