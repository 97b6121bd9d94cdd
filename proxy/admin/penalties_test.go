package admin

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// guardedProxy starts a proxy with a brute-force tracker (blocks at 2
// failures per address and 3 per user, no delay) and an admin API.
func guardedProxy(t *testing.T) (*proxytest.Proxy, string) {
	t.Helper()
	up := server.Start(t, server.Options{InsecureAuth: true, Users: []server.User{
		{Username: "alice", Password: "secret", Messages: 1},
	}})
	tr := limits.NewTracker(limits.AuthOptions{Window: 10 * time.Minute, MaxPerIP: 2, MaxPerUser: 3,
		Block: 15 * time.Minute, Entries: 100})
	p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{AuthTracker: tr, MaxAuthFailures: 10}})
	_, base := startAdmin(t, Options{Sessions: p.Server, Penalties: p.Server, Listeners: 1})
	return p, base
}

func fail(t *testing.T, src, addr, user string) {
	t.Helper()
	c := proxytest.DialFrom(t, src, addr)
	c.Greeting()
	if _, st := c.Cmd("a", "LOGIN "+user+" wrong"); !strings.HasPrefix(st, "a NO ") {
		t.Fatalf("got %q; want NO", st)
	}
	c.Logout("z")
}

func TestPenalties(t *testing.T) {
	p, base := guardedProxy(t)
	fail(t, "127.0.0.2", p.Addr, "Alice")
	fail(t, "127.0.0.2", p.Addr, "bob")
	fail(t, "127.0.0.3", p.Addr, "alice")

	var list PenaltyList
	r := get(t, base+"/penalties")
	r.decode(t, http.StatusOK, &list)
	if list.Count != 4 || len(list.Penalties) != 4 {
		t.Fatalf("GET /penalties: %s; want 4 keys", r.body)
	}
	a, b := list.Penalties[0], list.Penalties[1]
	if a.Kind != "address" || a.Key != "127.0.0.2/32" || a.Failures != 2 || !a.Blocked || a.BlockedUntil == nil ||
		a.BlockedUntil.Sub(a.LastFailure) != 15*time.Minute || a.LastFailure.Location() != time.UTC {
		t.Errorf("first: %+v; want 127.0.0.2 blocked for 15m after its last failure", a)
	}
	if b.Key != "127.0.0.3/32" || b.Failures != 1 || b.Blocked || b.BlockedUntil != nil {
		t.Errorf("second: %+v; want 127.0.0.3, 1 failure, not blocked", b)
	}
	if u := list.Penalties[2]; u.Kind != "user" || u.Key != "alice" || u.Failures != 2 || u.Blocked {
		t.Errorf("third: %+v; want user alice, 2 failures", u)
	}
	if strings.Contains(string(r.body), "wrong") {
		t.Errorf("the answer holds a password: %s", r.body)
	}

	c := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	c.Greeting()
	if _, st := c.Cmd("b", "LOGIN alice secret"); !strings.Contains(st, "(max_auth_failures_per_ip=2)") {
		t.Fatalf("got %q; want blocked", st)
	}

	json := "application/json"
	for _, tc := range []struct {
		body, ctype string
		status      int
	}{
		{`{}`, json, http.StatusBadRequest},
		{`{"all":true,"user":"alice"}`, json, http.StatusBadRequest},
		{`{"address":"nope"}`, json, http.StatusBadRequest},
		{`{"adress":"127.0.0.2"}`, json, http.StatusBadRequest},
		{`address=127.0.0.2`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
	} {
		post(t, base+"/penalties/clear", tc.ctype, tc.body).wantError(t, tc.status)
	}
	get(t, base+"/penalties?user=alice").wantError(t, http.StatusBadRequest)
	if r := get(t, base+"/penalties/clear"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /penalties/clear: status %d; want 405", r.status)
	}

	var res ClearResult
	post(t, base+"/penalties/clear", json, `{"address":"127.0.0.0/30"}`).decode(t, http.StatusOK, &res)
	if res.Cleared != 2 {
		t.Errorf("clear 127.0.0.0/30: cleared %d; want 2", res.Cleared)
	}
	c.LogIn("c", "LOGIN alice secret")
	c.Logout("z")
	post(t, base+"/penalties/clear", json, `{"user":"BOB"}`).decode(t, http.StatusOK, &res)
	if res.Cleared != 1 {
		t.Errorf("clear user BOB: cleared %d; want 1", res.Cleared)
	}
	fail(t, "127.0.0.4", p.Addr, "carol")
	post(t, base+"/penalties/clear", json, `{"all":true}`).decode(t, http.StatusOK, &res)
	if res.Cleared != 2 { // 127.0.0.4 and carol; alice's success cleared her
		t.Errorf("clear all: cleared %d; want 2", res.Cleared)
	}
	get(t, base+"/penalties").decode(t, http.StatusOK, &list)
	if list.Count != 0 || list.Penalties == nil {
		t.Errorf("after clearing all: %+v; want an empty list", list)
	}
	proxytest.WaitZero(t, p.Limiter)
}

// Without a tracker, the endpoints say the defence is off.
func TestPenaltiesOff(t *testing.T) {
	_, base := startAdmin(t, Options{Sessions: &fakeSessions{}, Listeners: 1})
	if msg := get(t, base+"/penalties").wantError(t, http.StatusNotFound); !strings.Contains(msg, "off") {
		t.Errorf("got %q; want the defence off", msg)
	}
	post(t, base+"/penalties/clear", "application/json", `{"all":true}`).wantError(t, http.StatusNotFound)
}
