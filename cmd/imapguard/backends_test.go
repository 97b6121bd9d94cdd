package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
)

func TestBackendsCommand(t *testing.T) {
	probe := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	route, list := "hash", []proxy.BackendInfo{
		{Name: "mail1", Address: "192.0.2.1:143", Weight: 1, Up: true, LastProbe: probe, Sessions: 12},
		{Name: "mail\x1b2", Address: "192.0.2.2:143", Weight: 2.5, Failures: 3, LastProbe: probe, LastError: "dial: refused"},
		{Name: "mail3", Address: "192.0.2.3:143", Weight: 1, Up: true},
	}
	api := admin.New(admin.Options{Sessions: &sessions{}, Listeners: 1,
		Backends: func() (string, []proxy.BackendInfo) { return route, list }})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		srv.Close()
		api.Shutdown(context.Background())
	})
	t.Setenv(tokenEnv, "")

	code, out, errOut := runCLI("backends", "-admin", srv.URL)
	want := "" +
		"NAME    ADDRESS        WEIGHT  STATE  FAILURES  LAST PROBE            SESSIONS  LAST ERROR\n" +
		"mail1   192.0.2.1:143  1       up     0         2026-12-02T10:00:00Z  12        -\n" +
		"mail?2  192.0.2.2:143  2.5     down   3         2026-12-02T10:00:00Z  0         dial: refused\n" +
		"mail3   192.0.2.3:143  1       up     0         -                     0         -\n" +
		"route hash: 3 backends\n"
	if code != 0 || out != want || errOut != "" {
		t.Fatalf("backends: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	code, out, _ = runCLI("backends", "-json", "-admin", srv.URL)
	if code != 0 || !strings.Contains(out, `"state":"down"`) || !strings.Contains(out, `"route":"hash"`) {
		t.Errorf("backends -json: exit %d, %s", code, out)
	}

	route, list = "single", nil
	code, out, _ = runCLI("backends", "-admin", srv.URL)
	if want := "route single: one upstream (upstream.address), no backends\n"; code != 0 || out != want {
		t.Errorf("backends with one upstream: exit %d, %q; want %q", code, out, want)
	}
}

// TestRouteOptions: a backend's TLS keys default to [upstream]'s.
func TestRouteOptions(t *testing.T) {
	c, err := config.Parse("x.toml", []byte(`
[upstream]
route = "hash"
tls = "starttls"
server_name = "mail.example.com"
health_interval = "2s"
[[upstream.backend]]
address = "192.0.2.1:143"
[[upstream.backend]]
name = "plain"
address = "192.0.2.2:143"
tls = "none"
[[upstream.backend]]
name = "own"
address = "192.0.2.3:993"
tls = "implicit"
server_name = "mail3.example.com"
insecure_skip_verify = true
weight = 3
`))
	if err != nil {
		t.Fatal(err)
	}
	var o proxy.Options
	if err := routeOptions(c, &o); err != nil {
		t.Fatal(err)
	}
	if o.Route != "hash" || o.HealthInterval != 2*time.Second || o.UnhealthyAfter != 3 || o.HealthyAfter != 2 || len(o.Backends) != 3 {
		t.Fatalf("got %+v", o)
	}
	a, b, d := o.Backends[0], o.Backends[1], o.Backends[2]
	if a.TLS != "starttls" || a.TLSConfig == nil || a.TLSConfig.ServerName != "mail.example.com" || a.TLSConfig.InsecureSkipVerify {
		t.Errorf("first: %+v; want [upstream]'s starttls and server_name", a)
	}
	if b.TLS != "none" || b.TLSConfig != nil {
		t.Errorf("plain: %+v; want no TLS", b)
	}
	if d.TLS != "implicit" || d.TLSConfig.ServerName != "mail3.example.com" || !d.TLSConfig.InsecureSkipVerify || d.Weight != 3 {
		t.Errorf("own: %+v; want its own TLS keys and weight", d)
	}
	if got := upstreamDesc(c); got != "hash:192.0.2.1:143,plain,own" {
		t.Errorf("upstreamDesc: %q", got)
	}
}
