package admin

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestBackends: GET /backends lists the backends with their health and
// sessions, and /readyz is ready while one is up (issue 13).
func TestBackends(t *testing.T) {
	up := server.Start(t, server.Options{InsecureAuth: true, Users: []server.User{
		{Username: "alice", Password: "secret", Messages: 1},
	}})
	// A backend nobody listens on, named; one with its address only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	clk := proxytest.NewClock()
	bs := []proxy.Backend{{Name: "gone", Addr: dead}, {Addr: up, Weight: 2}}
	p := proxytest.Start(t, proxytest.Config{Options: proxy.Options{Route: proxy.RouteMap, Backends: bs,
		RouteMap: map[string]string{"*": up}, Clock: clk, HealthInterval: time.Second, UnhealthyAfter: 1}})
	_, base := startAdmin(t, Options{Sessions: p.Server, Backends: p.Server.Route, Listeners: 1})

	c := proxytest.Login(t, p.Addr, "alice", "secret")
	var list BackendList
	get(t, base+"/backends").decode(t, http.StatusOK, &list)
	if list.Route != "map" || len(list.Backends) != 2 {
		t.Fatalf("GET /backends: %+v; want route map and 2 backends", list)
	}
	g, b := list.Backends[0], list.Backends[1]
	if g.Name != "gone" || g.Address != dead || g.State != "up" || g.LastProbe != nil || g.Sessions != 0 || g.Weight != 1 {
		t.Errorf("first before any probe: %+v; want gone, up, not probed", g)
	}
	if b.Name != up || b.Address != up || b.Weight != 2 || b.Sessions != 1 {
		t.Errorf("second: %+v; want named by its address, weight 2, alice's session", b)
	}

	var sl SessionList
	get(t, base+"/sessions").decode(t, http.StatusOK, &sl)
	if len(sl.Sessions) != 1 || sl.Sessions[0].Backend != up {
		t.Errorf("GET /sessions: %+v; want alice's session on backend %s", sl, up)
	}

	clk.WaitTimers(t, 1)
	clk.Advance(time.Second)
	proxytest.WaitFor(t, "a probe of each backend", func() bool {
		get(t, base+"/backends").decode(t, http.StatusOK, &list)
		return list.Backends[0].LastProbe != nil && list.Backends[1].LastProbe != nil
	})
	g = list.Backends[0]
	if g.State != "down" || g.Failures != 1 || g.LastError == "" || !g.LastProbe.Equal(clk.Now()) {
		t.Errorf("gone after a failed probe: %+v; want down, 1 failure, an error, probed now", g)
	}
	if r := get(t, base+"/readyz"); r.status != http.StatusOK {
		t.Errorf("/readyz with one backend up: %d %s; want 200", r.status, r.body)
	}
	c.Logout("z")
	proxytest.WaitFor(t, "the session uncounted", func() bool {
		get(t, base+"/backends").decode(t, http.StatusOK, &list)
		return list.Backends[1].Sessions == 0
	})
	if e := get(t, base+"/backends?x=1").wantError(t, http.StatusBadRequest); e == "" {
		t.Error("no error text")
	}
}

// TestBackendsSingle: with one upstream, no backends; without the
// option, 404.
func TestBackendsSingle(t *testing.T) {
	p := startProxy(t)
	_, base := startAdmin(t, Options{Sessions: p.Server, Backends: p.Server.Route, Listeners: 1})
	var list BackendList
	r := get(t, base+"/backends")
	r.decode(t, http.StatusOK, &list)
	if list.Route != "single" || list.Backends == nil || len(list.Backends) != 0 {
		t.Errorf("GET /backends: %s; want route single, backends []", r.body)
	}
	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 1})
	get(t, base+"/backends").wantError(t, http.StatusNotFound)
}
