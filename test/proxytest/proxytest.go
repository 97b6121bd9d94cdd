// Package proxytest is imapguard's test kit, as net/http/httptest is
// net/http's: everything a test needs to run a proxy on loopback, talk
// IMAP to it and put an upstream behind it, with real sockets on
// 127.0.0.1 and cleanup registered on the test.
//
//   - Start serves a proxy.Server (plaintext, and implicit TLS with
//     Config.ServeTLS) and checks at cleanup that every count of its
//     limiter is back at zero.
//   - Conn is a raw IMAP client bound to a test: Dial, DialFrom (a chosen
//     source address such as 127.0.0.2, for per-address limits), DialWith
//     (a net.Dialer of the test's, to set socket options), DialTLS and
//     Login make one; each read and write has a deadline and any error
//     fails the test. Client is the same client returning errors, for
//     goroutines, where t.Fatal must not be called (DialClient, or
//     Conn.Client). LoginFrom logs in from a chosen source address.
//   - Clock is a fake clock for the proxy's timers (Options.Clock):
//     Expire and ByeAfter move it to a deadline and show that the timer
//     fired then and not earlier; Conn.Settle has the proxy note a
//     session's traffic before the clock moves.
//   - Upstreams: Imapd runs the bundled cmd/imapd; StartFake serves
//     scripted connections (Respond answers command by command, Hold
//     greets and says nothing more; a handler of the test's own may
//     start with FakeConn.AcceptLogin and end with StayOpen) and records
//     the commands it read;
//     Forward puts a TCP forwarder in front of an upstream that the test
//     can cut; Dialer is an Options.Dial that counts the proxy's upstream
//     connections; ClosedAddr is an address nobody listens on.
//   - Eventually, WaitFor, WaitCounts and WaitZero wait for state the
//     proxy updates on its own goroutines, polling with a deadline.
//   - Buffer is a bytes.Buffer safe for concurrent writers (logs, a
//     process's output).
//   - CI, Skip and LookPath decide what runs on this machine: a suite
//     that needs a missing program skips with a message "make test"
//     collects in its summary line, and fails instead when CI is set.
//   - Quote, Base64, SASLPlain, Caps, CapLine and HasCap build and read
//     IMAP text.
//
// Every wait, dial, read and write is bounded by Timeout, so a test that
// goes wrong fails instead of hanging. The kit is shared by the end-to-end
// tests (test/), the admin API's and the commands' tests.
package proxytest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// Timeout bounds every wait, dial, read and write of the kit.
const Timeout = 10 * time.Second

// Config is what Start runs.
type Config struct {
	Upstream string // the upstream's host:port (Options.UpstreamAddr)
	Options  proxy.Options
	Limits   limits.Options
	// Logger, when nil, logs to standard error with -v (debug level) and
	// nowhere otherwise.
	Logger *slog.Logger
	// Setup, when set, prepares the server (such as Instrument) before
	// it serves.
	Setup func(*proxy.Server)
	// Shared, when set, attaches a fleet-wide session store to the
	// limiter (limits.Limiter.SetShared), as [cluster] store = "redis".
	Shared *limits.SharedOptions
	// ServeTLS also serves implicit TLS (imaps) on a second listener,
	// Proxy.TLSAddr; Options.TLSConfig must be set.
	ServeTLS bool
	// ListenConfig, when set, makes the listeners, so that its Control
	// can set socket options the accepted connections inherit (such as
	// SO_SNDBUF).
	ListenConfig *net.ListenConfig
}

// Proxy is a server serving plaintext IMAP (with STARTTLS when
// Options.TLSConfig is set) on Addr, and implicit TLS on TLSAddr with
// Config.ServeTLS.
type Proxy struct {
	Addr    string
	TLSAddr string
	Server  *proxy.Server
	Limiter *limits.Limiter
}

// Start serves a proxy on 127.0.0.1:0 and returns once it is listening.
// Its cleanup shuts it down and checks that every count is back at zero:
// Shutdown returns after the handlers, which free the slots, have ended.
func Start(t testing.TB, c Config) *Proxy {
	t.Helper()
	c.Options.UpstreamAddr = c.Upstream
	if c.Logger == nil {
		c.Logger = verboseLogger()
	}
	limiter := limits.New(c.Limits)
	if c.Shared != nil {
		limiter.SetShared(*c.Shared)
	}
	srv := proxy.New(c.Options, limiter, c.Logger)
	if c.Setup != nil {
		c.Setup(srv)
	}
	p := &Proxy{Server: srv, Limiter: limiter}
	serves := []func(net.Listener) error{srv.Serve}
	if c.ServeTLS {
		serves = append(serves, srv.ServeTLS)
	}
	var lns []net.Listener
	for range serves {
		lns = append(lns, listenWith(t, c.ListenConfig))
	}
	done := make(chan error, len(serves))
	for i, serve := range serves {
		go func() { done <- serve(lns[i]) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		for range serves {
			if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("proxy serve: %v", err)
			}
		}
		if n := limiter.Counts(); !zero(n) {
			t.Errorf("counts after shutdown: %+v; want all zero", n)
		}
	})
	// Serve registers its listener on its own goroutine.
	WaitFor(t, "the proxy listening", func() bool { return len(srv.Listening()) == len(serves) })
	p.Addr = lns[0].Addr().String()
	if c.ServeTLS {
		p.TLSAddr = lns[1].Addr().String()
	}
	return p
}

// verboseLogger logs to standard error when the tests run with -v.
func verboseLogger() *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// listen opens a listener on a free port of 127.0.0.1.
func listen(t testing.TB) net.Listener { t.Helper(); return listenWith(t, nil) }

// listenWith opens a listener on a free port of 127.0.0.1 with lc (nil:
// the default).
func listenWith(t testing.TB, lc *net.ListenConfig) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	if lc == nil {
		// The proxy's own listener, keep-alive set on it (proxy.Listen).
		ln, err = proxy.Listen(context.Background(), "tcp", "127.0.0.1:0")
	} else {
		ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// ClosedAddr returns an address of 127.0.0.1 on which nothing listens: a
// port that was free a moment ago (the kernel does not hand a just-closed
// ephemeral port out again at once).
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
