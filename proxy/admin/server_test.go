package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestSettings: /settings returns what the function gives, in order.
func TestSettings(t *testing.T) {
	want := []Setting{
		{Name: "limits.max_connections", Value: "2147483647"},
		{Name: "admin.token", Value: "(redacted)"},
		{Name: "tls.email", Value: ""},
	}
	f := &fakeSessions{}
	_, base := startAdmin(t, Options{Sessions: f, Settings: func() []Setting { return want }})
	r := get(t, base+"/settings")
	var got SettingList
	r.decode(t, http.StatusOK, &got)
	wantJSON := `{"settings":[{"name":"limits.max_connections","value":"2147483647"},{"name":"admin.token","value":"(redacted)"},{"name":"tls.email","value":""}]}` + "\n"
	if string(r.body) != wantJSON {
		t.Fatalf("GET /settings: %s; want %s", r.body, wantJSON)
	}
	post(t, base+"/settings", "", "").wantError(t, http.StatusMethodNotAllowed)

	_, base = startAdmin(t, Options{Sessions: f})
	if r := get(t, base+"/settings"); string(r.body) != `{"settings":[]}`+"\n" {
		t.Fatalf("GET /settings without Settings: %s", r.body)
	}
}

// TestMetrics: /metrics is the given handler, 404 without one.
func TestMetrics(t *testing.T) {
	f := &fakeSessions{}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "imapguard_connections 3\n")
	})
	_, base := startAdmin(t, Options{Token: testToken, Sessions: f, Metrics: metrics})
	r := do(t, request{url: base + "/metrics", header: headers("Authorization", "Bearer "+testToken)})
	if r.status != http.StatusOK || string(r.body) != "imapguard_connections 3\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	_, base = startAdmin(t, Options{Sessions: f})
	get(t, base+"/metrics").wantError(t, http.StatusNotFound)
	get(t, base+"/nothing").wantError(t, http.StatusNotFound)
	r = do(t, request{method: http.MethodDelete, url: base + "/sessions"})
	r.wantError(t, http.StatusMethodNotAllowed)
	if a := r.header.Get("Allow"); a != "GET" {
		t.Errorf("DELETE /sessions: Allow %q; want GET", a)
	}
}

// TestServePublic: without a token Serve refuses a listener that is not
// on loopback, and closes it; with one it serves.
func TestServePublic(t *testing.T) {
	f := &fakeSessions{}
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("cannot listen on %s: %v", addr, err)
			}
			s := New(Options{Sessions: f})
			err = s.Serve(ln)
			if !errors.Is(err, ErrPublicWithoutToken) {
				t.Fatalf("Serve(%s) without token = %v; want ErrPublicWithoutToken", addr, err)
			}
			select {
			case <-s.Started():
				t.Fatal("Started closed after a refusal")
			default:
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener after refusal: Accept = %v; want closed", err)
			}
		})
	}

	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Token: testToken, Sessions: f})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	select {
	case <-s.Started():
	case err := <-done:
		t.Fatalf("Serve(0.0.0.0:0) with a token = %v", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var h Health
	get(t, "http://127.0.0.1:"+port+"/healthz").decode(t, http.StatusOK, &h)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve with token after Shutdown = %v", err)
	}
}
