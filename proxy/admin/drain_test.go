package admin

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// TestDrain: POST /drain takes the token and a JSON body {} (as the kick,
// so that no web page can send it), starts a drain of the real proxy once
// (202, then 200 with started false), and from then /readyz answers 503
// at once, with "draining":true, without an upstream check; the
// pre-auth client and the only session get their BYE.
func TestDrain(t *testing.T) {
	p := startProxy(t)
	session := proxytest.Login(t, p.Addr, "alice", "secret")
	pre := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	pre.Greeting()
	pre.Cmd("n", "NOOP")
	fake := &fakeSessions{}
	var drains atomic.Int32
	_, base := startAdmin(t, Options{Token: testToken, Sessions: p.Server, Listeners: 1,
		Drain: func() bool {
			drains.Add(1)
			return p.Server.Drain(10*time.Second, 0)
		},
		Draining: p.Server.Draining,
	})
	auth := "Bearer " + testToken
	var ready Readiness
	get(t, base+"/readyz").decode(t, http.StatusOK, &ready)

	for _, tc := range []struct {
		name, ct, query, body, auth string
		status                      int
	}{
		{"no token", "application/json", "", `{}`, "", http.StatusUnauthorized},
		{"form", "application/x-www-form-urlencoded", "", ``, auth, http.StatusUnsupportedMediaType},
		{"text/plain", "text/plain", "", `{}`, auth, http.StatusUnsupportedMediaType},
		{"no body", "application/json", "", ``, auth, http.StatusBadRequest},
		{"unknown field", "application/json", "", `{"now":true}`, auth, http.StatusBadRequest},
		{"query", "application/json", "?now=1", `{}`, auth, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do(t, request{method: http.MethodPost, url: base + "/drain" + tc.query,
				header: headers("Content-Type", tc.ct, "Authorization", tc.auth), body: tc.body}).wantError(t, tc.status)
		})
	}
	if n := drains.Load(); n != 0 || p.Server.Draining() {
		t.Fatalf("refused requests drained: %d calls", n)
	}
	get(t, base+"/readyz").decode(t, http.StatusOK, &ready)

	var res DrainResult
	drain := func() response {
		return do(t, request{method: http.MethodPost, url: base + "/drain",
			header: headers("Content-Type", "application/json", "Authorization", auth), body: `{}`})
	}
	drain().decode(t, http.StatusAccepted, &res)
	if !res.Started || res.Connections != 2 || res.Status != "draining" {
		t.Errorf("first drain: got %+v; want started, 2 connections", res)
	}
	get(t, base+"/readyz").decode(t, http.StatusServiceUnavailable, &ready)
	if ready.Status != "not ready" || !ready.Draining || ready.Upstream != "not checked" {
		t.Errorf("readyz while draining: got %+v", ready)
	}
	pre.ExpectBye("* BYE [UNAVAILABLE] Server shutting down")
	session.ExpectBye("* BYE [UNAVAILABLE] Server shutting down")
	drain().decode(t, http.StatusOK, &res)
	if res.Started {
		t.Errorf("second drain: got %+v; want started false", res)
	}
	proxytest.WaitZero(t, p.Limiter)

	// Without Options.Drain the endpoint is not there.
	_, base2 := startAdmin(t, Options{Sessions: fake, Listeners: 1})
	post(t, base2+"/drain", "application/json", `{}`).wantError(t, http.StatusNotFound)
}
