package admin

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestReadyz: ready with the listeners and a reachable upstream; not
// ready with too few listeners or a dead upstream.
func TestReadyz(t *testing.T) {
	p := startProxy(t)

	_, base := startAdmin(t, Options{Sessions: p.Server, Listeners: 1})
	var rd Readiness
	get(t, base+"/readyz").decode(t, http.StatusOK, &rd)
	if rd.Status != "ready" || rd.Upstream != "ok" || !slices.Equal(rd.Listeners, []string{p.Addr}) {
		t.Fatalf("readyz: %+v", rd)
	}
	var h Health
	get(t, base+"/healthz").decode(t, http.StatusOK, &h)
	if h.Status != "ok" {
		t.Fatalf("healthz: %+v", h)
	}

	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 2})
	get(t, base+"/readyz").decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Status != "not ready" || rd.Upstream != "ok" || len(rd.Listeners) != 1 {
		t.Fatalf("readyz expecting 2 listeners: %+v", rd)
	}

	// A proxy with no listener is never ready.
	idle := proxy.New(proxy.Options{UpstreamAddr: "127.0.0.1:1"}, limits.New(limits.Options{}), nil)
	_, base = startAdmin(t, Options{Sessions: idle})
	r := get(t, base+"/readyz")
	r.decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Listeners == nil {
		t.Fatalf("readyz without listeners: %s; want listeners []", r.body)
	}

	// A dead upstream: "unreachable", and the details (its address) only
	// in the log, since the endpoint needs no token.
	dead := proxytest.ClosedAddr(t)
	p.Server.SetOptions(proxy.Options{UpstreamAddr: dead})
	var logs proxytest.Buffer
	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 1, Logger: logTo(&logs)})
	r = get(t, base+"/readyz")
	r.decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Status != "not ready" || rd.Upstream != "unreachable" {
		t.Fatalf("readyz with a dead upstream: %+v; want not ready, upstream unreachable", rd)
	}
	if _, port, _ := net.SplitHostPort(dead); bytes.Contains(r.body, []byte(port)) {
		t.Errorf("readyz with a dead upstream: %s; want no upstream address", r.body)
	}
	if log := logs.String(); !strings.Contains(log, `level=WARN msg="admin API: upstream check failed"`) || !strings.Contains(log, dead) {
		t.Errorf("log:\n%s\nwant a WARN line with the upstream's address %s", log, dead)
	}
}

// TestReadyzLogsOnce: a failed check is logged once, however many
// requests its cached result answers, and its text never reaches them.
func TestReadyzLogsOnce(t *testing.T) {
	const detail = "dial 10.9.8.7:993: tls: failed to verify certificate: x509: certificate is valid for internal.example"
	f := &fakeSessions{err: errors.New(detail)}
	var logs proxytest.Buffer
	s := New(Options{Sessions: f, Listeners: 1, Logger: logTo(&logs)})
	defer s.Shutdown(context.Background())
	var clock atomic.Int64 // nanoseconds
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	h := s.Handler()
	get := func() string {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("readyz: %d; want 503", rec.Code)
		}
		return rec.Body.String()
	}
	const want = `{"status":"not ready","listeners":["127.0.0.1:1143"],"upstream":"unreachable"}` + "\n"
	for range 3 {
		if got := get(); got != want {
			t.Fatalf("readyz: %s; want %s", got, want)
		}
	}
	count := func() int { return strings.Count(logs.String(), "upstream check failed") }
	if n, c := count(), f.checks.Load(); n != 1 || c != 1 {
		t.Fatalf("%d log lines for %d checks and 3 requests; want 1 and 1:\n%s", n, c, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "10.9.8.7:993") {
		t.Errorf("log:\n%s\nwant the detail at WARN", logs.String())
	}
	clock.Add(int64(readyCacheTTL))
	get()
	if n, c := count(), f.checks.Load(); n != 2 || c != 2 {
		t.Fatalf("after the cache time: %d log lines for %d checks; want 2 and 2", n, c)
	}
}

// TestReadyzShared: concurrent /readyz requests share one upstream check,
// its result is reused for a second, and a request that gives up does
// not cancel the check for the others.
func TestReadyzShared(t *testing.T) {
	f := &fakeSessions{started: make(chan struct{}, 10), release: make(chan struct{})}
	s := New(Options{Sessions: f, Listeners: 1})
	defer s.Shutdown(context.Background())
	var clock atomic.Int64 // nanoseconds
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	h := s.Handler()
	get := func(ctx context.Context) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/readyz", nil))
		return rec.Code
	}

	// One request gives up while the check runs.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan int)
	go func() { gaveUp <- get(ctx) }()
	<-f.started
	cancel()
	if code := <-gaveUp; code != http.StatusServiceUnavailable {
		t.Fatalf("cancelled request: %d; want 503", code)
	}

	codes := make(chan int, 10)
	for range 10 {
		go func() { codes <- get(context.Background()) }()
	}
	close(f.release)
	for range 10 {
		if code := <-codes; code != http.StatusOK {
			t.Fatalf("readyz: %d; want 200", code)
		}
	}
	if n := f.checks.Load(); n != 1 {
		t.Fatalf("%d upstream checks for 11 requests; want 1", n)
	}
	clock.Add(int64(readyCacheTTL - time.Millisecond))
	get(context.Background())
	if n := f.checks.Load(); n != 1 {
		t.Fatalf("%d upstream checks within the cache time; want 1", n)
	}
	clock.Add(int64(time.Millisecond))
	if code := get(context.Background()); code != http.StatusOK {
		t.Fatalf("readyz after the cache time: %d", code)
	}
	if n := f.checks.Load(); n != 2 {
		t.Fatalf("%d upstream checks after the cache time; want 2", n)
	}
}
