package test

// What the tests of the event-loop relay (issue 14) share: the relays
// they run under, how a test knows the sessions it opened are parked,
// and a look at the kernel's queues of a socket (socketQueues, in
// loop_sockdiag_linux_test.go), which tells a test that a peer has read
// what was sent, or stopped reading, without a sleep.

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// relays are the relays a test of issue 14 runs under, each as a
// subtest: Options.Relay set explicitly, so that IMAPGUARD_RELAY (which
// make test's second run sets) does not change them.
var relays = []string{proxy.RelayLoop, proxy.RelayGoroutines}

// forEachRelay runs f as a subtest for each relay.
func forEachRelay(t *testing.T, f func(t *testing.T, relay string)) {
	for _, relay := range relays {
		t.Run("relay="+relay, func(t *testing.T) { f(t, relay) })
	}
}

// waitGoroutines waits until the process runs at most max goroutines,
// for at most d, and returns how many there were last. A parked session
// holds no goroutine under either relay (proxy/README.md, "Idle"; issue
// 14: "an idle session holds no goroutine"), so the count falling to what
// the test's own goroutines and upstream need is how a test knows its
// sessions are parked: the goroutine relay parks a direction after half
// a second without traffic (parkAfter), swept every quarter second.
func waitGoroutines(max int, d time.Duration) (int, bool) {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n := runtime.NumGoroutine()
		if n <= max {
			return n, true
		}
		if time.Now().After(deadline) {
			return n, false
		}
		<-tick.C
	}
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard one and
// returns the soft limit in force.
func raiseFileLimit(t testing.TB) int {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Logf("raising RLIMIT_NOFILE to %d: %v", rl.Max, err)
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		}
	}
	return int(rl.Cur)
}

// waitReadByProxy waits until the proxy's end of the client connection c
// (local address proxyAddr) has read everything c sent: its receive
// queue is empty, or the proxy closed it. With the next write only after
// this, the proxy's reads see the chunks apart, not run together by the
// kernel. It fails the test after proxytest.Timeout.
func waitReadByProxy(t testing.TB, c net.Conn) {
	t.Helper()
	deadline := time.Now().Add(proxytest.Timeout)
	for {
		q, ok, err := socketQueues(c.RemoteAddr(), c.LocalAddr())
		if err != nil {
			t.Fatalf("the proxy's socket: %v", err)
		}
		if !ok || q.State != tcpEstablished || q.RxQueue == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy has not read %d bytes the client sent, after %v", q.RxQueue, proxytest.Timeout)
		}
		runtime.Gosched()
	}
}
