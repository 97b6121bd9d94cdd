package test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// TestKick: Kick closes the sessions it matches with BYE [UNAVAILABLE],
// by user (case-insensitively) or by client address, and leaves the
// others alone; Select and Conns report state and bytes.
func TestKick(t *testing.T) {
	up := startUpstream(t,
		server.User{Username: "alice", Password: "secret", Messages: 2},
		server.User{Username: "bob", Password: "hunter2", Messages: 1})
	p := startProxy(t, up, proxy.Options{}, limits.Options{})

	a1 := login(t, p.Addr, "alice", "secret")
	a2 := dialFrom(t, "127.0.0.2", p.Addr)
	a2.greeting()
	a2.cmd("l1", "LOGIN alice secret")
	b := dialFrom(t, "127.0.0.3", p.Addr)
	b.greeting()
	b.cmd("l1", "LOGIN bob hunter2")
	pre := dialFrom(t, "127.0.0.4", p.Addr)
	pre.greeting()
	pre.cmd("n1", "NOOP") // registered before the selection below
	a1.cmd("s1", "SELECT INBOX")

	all := p.Server.Conns()
	if len(all) != 4 {
		t.Fatalf("Conns() = %d connections, want 4: %+v", len(all), all)
	}
	sel, err := p.Server.Select(proxy.Match{User: "ALICE"})
	if err != nil || len(sel) != 2 {
		t.Fatalf("Select(ALICE) = %+v, %v; want 2", sel, err)
	}
	for _, i := range sel {
		if i.State() != "authenticated" || i.User != "alice" {
			t.Errorf("alice session %+v", i)
		}
	}
	// The SELECT went one way and its answer the other.
	if sel[0].BytesToUpstream == 0 || sel[0].BytesToClient == 0 {
		t.Errorf("first alice session bytes %d/%d, want both > 0", sel[0].BytesToUpstream, sel[0].BytesToClient)
	}
	if sel, _ := p.Server.Select(proxy.Match{Address: "127.0.0.4"}); len(sel) != 1 || sel[0].State() != "preauth" {
		t.Fatalf("Select(127.0.0.4) = %+v", sel)
	}
	if _, err := p.Server.Select(proxy.Match{Address: "nonsense"}); err == nil {
		t.Fatal("Select(nonsense) succeeded")
	}
	if _, err := p.Server.Kick(proxy.Match{}, ""); !errors.Is(err, proxy.ErrEmptyMatch) {
		t.Fatalf("Kick(empty) = %v", err)
	}

	kicked, err := p.Server.Kick(proxy.Match{User: "Alice"}, "")
	if err != nil || len(kicked) != 2 {
		t.Fatalf("Kick(alice) = %+v, %v", kicked, err)
	}
	for _, c := range []*rawConn{a1, a2} {
		if l := c.line(); l != "* BYE [UNAVAILABLE] Session closed by the administrator" {
			t.Fatalf("kicked client got %q", l)
		}
		c.expectClosed()
	}
	// Bob and the pre-auth connection are untouched.
	if _, st := b.cmd("n2", "NOOP"); !strings.HasPrefix(st, "n2 OK") {
		t.Fatalf("bob after kick: %q", st)
	}
	kicked, err = p.Server.Kick(proxy.Match{Address: "127.0.0.4/31"}, "Maintenance")
	if err != nil || len(kicked) != 1 || kicked[0].State() != "preauth" {
		t.Fatalf("Kick(127.0.0.4/31) = %+v, %v", kicked, err)
	}
	if l := pre.line(); l != "* BYE [UNAVAILABLE] Maintenance" {
		t.Fatalf("pre-auth client got %q", l)
	}
	pre.expectClosed()
	waitCounts(t, p.Limiter, "kicked slots freed", func(c limits.Counts) bool {
		return c.Connections == 1 && c.Sessions == 1
	})
}

// TestCheckUpstream: reachable upstream gives nil, a closed port an error.
func TestCheckUpstream(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up, proxy.Options{}, limits.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Server.CheckUpstream(ctx); err != nil {
		t.Fatalf("CheckUpstream: %v", err)
	}
	if got := p.Server.Listening(); len(got) != 1 || got[0] != p.Addr {
		t.Fatalf("Listening() = %v, want [%s]", got, p.Addr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p.Server.SetOptions(proxy.Options{UpstreamAddr: dead})
	if err := p.Server.CheckUpstream(ctx); err == nil {
		t.Fatal("CheckUpstream to a closed port succeeded")
	}
}
