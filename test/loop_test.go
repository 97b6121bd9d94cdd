package test

// What the tests of the event-loop relay (issue 14) share: the relays
// they run under, how a test knows the sessions it opened are parked,
// and a look at the kernel's queues of a socket (/proc/net/tcp), which
// tells a test that a peer has read what was sent, or stopped reading,
// without a sleep.

import (
	"bufio"
	endian "encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
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

// tcpQueues is one socket's line of /proc/net/tcp: its state and its
// queues (RFC 793 states; proc(5)).
type tcpQueues struct {
	State   int   // 1 ESTABLISHED, 8 CLOSE_WAIT ...
	TxQueue int64 // bytes sent and not yet acknowledged, or not yet sent
	RxQueue int64 // bytes received and not yet read by the application
	Timer   int   // 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe
}

// tcpEstablished is the state ESTABLISHED in /proc/net/tcp.
const tcpEstablished = 1

// socketQueues returns the queues of the IPv4 socket whose local address
// is local and whose peer is remote, and whether there is one. It reads
// /proc/net/tcp (Linux only; elsewhere ok is false).
func socketQueues(local, remote net.Addr) (q tcpQueues, ok bool, err error) {
	want := procAddr(local) + " " + procAddr(remote)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return q, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "  0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 ..."
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1]+" "+fields[2] != want {
			continue
		}
		state, _ := strconv.ParseInt(fields[3], 16, 32)
		tx, rx, _ := strings.Cut(fields[4], ":")
		timer, _, _ := strings.Cut(fields[5], ":")
		q.State = int(state)
		q.TxQueue, _ = strconv.ParseInt(tx, 16, 64)
		q.RxQueue, _ = strconv.ParseInt(rx, 16, 64)
		tm, _ := strconv.ParseInt(timer, 16, 32)
		q.Timer = int(tm)
		return q, true, nil
	}
	return q, false, sc.Err()
}

// procAddr writes a TCP address as /proc/net/tcp does: the kernel prints
// the IPv4 address, held in network order, as a native-order number
// (%08X: 127.0.0.1 reads 0100007F on a little-endian machine), then the
// port.
func procAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP.To4() == nil {
		return "?"
	}
	return fmt.Sprintf("%08X:%04X", endian.NativeEndian.Uint32(ta.IP.To4()), ta.Port)
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
			t.Fatalf("reading /proc/net/tcp: %v", err)
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
