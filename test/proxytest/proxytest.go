// Package proxytest runs a proxy.Server on loopback for tests, and waits
// for state the proxy updates on its own goroutines. It is shared by the
// end-to-end tests (test/), the admin API's tests and the command's.
package proxytest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// waitLimit bounds every wait here.
const waitLimit = 10 * time.Second

// Config is what Start runs.
type Config struct {
	Upstream string // the upstream's host:port (Options.UpstreamAddr)
	Options  proxy.Options
	Limits   limits.Options
	Logger   *slog.Logger // nil: discard
	// Setup, when set, prepares the server (such as Instrument) before
	// it serves.
	Setup func(*proxy.Server)
}

// Proxy is a server serving plaintext IMAP on 127.0.0.1.
type Proxy struct {
	Addr    string
	Server  *proxy.Server
	Limiter *limits.Limiter
}

// Start serves a proxy on 127.0.0.1:0 and returns once it is listening.
// Its cleanup shuts it down and checks that every count is back at zero:
// Shutdown returns after the handlers, which free the slots, have ended.
func Start(t testing.TB, c Config) *Proxy {
	t.Helper()
	c.Options.UpstreamAddr = c.Upstream
	limiter := limits.New(c.Limits)
	srv := proxy.New(c.Options, limiter, c.Logger)
	if c.Setup != nil {
		c.Setup(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("proxy serve: %v", err)
		}
		if n := limiter.Counts(); !zero(n) {
			t.Errorf("counts after shutdown: %+v; want all zero", n)
		}
	})
	// Serve registers the listener on its own goroutine.
	WaitFor(t, "the proxy listening", func() bool { return len(srv.Listening()) == 1 })
	return &Proxy{Addr: ln.Addr().String(), Server: srv, Limiter: limiter}
}

// Eventually checks ok every 2 ms until it holds, for at most 10 s, and
// reports whether it did. It is for state with no event to wait on.
func Eventually(ok func() bool) bool {
	deadline := time.After(waitLimit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-deadline:
			return ok()
		case <-tick.C:
		}
	}
	return true
}

// WaitFor fails the test unless ok comes to hold (see Eventually).
func WaitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	if !Eventually(ok) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// WaitCounts fails the test unless the limiter's counts come to satisfy
// ok, and then shows them.
func WaitCounts(t testing.TB, lim *limits.Limiter, what string, ok func(limits.Counts) bool) {
	t.Helper()
	var n limits.Counts
	if !Eventually(func() bool { n = lim.Counts(); return ok(n) }) {
		t.Fatalf("%s: counts %+v", what, n)
	}
}

// WaitZero waits for every count to return to zero.
func WaitZero(t testing.TB, lim *limits.Limiter) {
	t.Helper()
	WaitCounts(t, lim, "counts did not return to zero", zero)
}

func zero(n limits.Counts) bool {
	return n.Connections == 0 && n.Addresses == 0 && n.Users == 0 && n.Sessions == 0
}
