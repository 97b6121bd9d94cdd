package test

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// backpressureLiteral is the size of the literal the upstream sends.
const backpressureLiteral = 10 << 20

// backpressureHeap bounds how much the proxy's heap may grow while it
// relays the literal to a client that does not read it. A relay that
// applies backpressure holds at most a few buffers of its own (a pooled
// copy buffer of tens of KiB per direction, a bounded write queue, and
// while a literal is in flight a pipe, whose pages are the kernel's, not
// the heap's); the rest waits in the sockets' kernel buffers. HeapInuse
// also moves with what the runtime and the race detector allocate
// meanwhile (a few hundred KiB here). 4 MiB is far above both and well
// below the literal: a relay that read the literal into memory, or even
// 40% of it, fails.
const backpressureHeap = 4 << 20

// backpressureWritten bounds how much of the literal the upstream can
// write before it is throttled: what the four sockets between it and the
// client hold (socketBuffer each, which the kernel doubles for its
// bookkeeping), a splice pipe (64 KiB, at most 1 MiB), and what the
// proxy may hold in memory (backpressureHeap). About 550 KB is seen.
const backpressureWritten = 4*2*socketBuffer + 1<<20 + backpressureHeap

// TestLoopBackpressure (issue 14, "backpressure"): a client that stops
// reading while the upstream sends a 10 MiB literal. The proxy must stop
// reading from the upstream once it cannot write to the client, so that
// its memory stays bounded and the upstream's writes block; when the
// client reads again, it gets the whole literal, byte for byte, and the
// tagged OK.
//
// The upstream writes through its socket's non-blocking descriptor and
// notes each EAGAIN: a write that would block. That alone can be a
// moment's congestion; what shows the pipeline is full is the kernel's
// view of the sockets at both ends of the proxy: the proxy's to the
// client and the upstream's each have bytes to send and a peer whose
// receive window is closed, so the kernel probes the zero window (timer
// 4 in sock_diag's answer, "persist" in ss -o). The test waits for that,
// checks the heap and how far the upstream got, and checks the upstream
// again the next time the pipeline is seen full. It never waits for the
// proxy to do nothing, which no condition shows: the bounds hold however
// far the proxy has got, and a relay without backpressure reads the
// whole literal into memory long before.
func TestLoopBackpressure(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789 backpressure {5}\r\n* 1 FETCH\r\n"), backpressureLiteral/40+1)[:backpressureLiteral]
	forEachRelay(t, func(t *testing.T, relay string) {
		w := &throttledWriter{body: body, blocked: make(chan struct{}, 1)}
		upConn := make(chan net.Conn, 1)
		up := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
			if c.AcceptLogin() != nil {
				return
			}
			c.NetConn().SetDeadline(time.Time{}) // the cleanup closes it
			c.NetConn().(*net.TCPConn).SetWriteBuffer(socketBuffer)
			upConn <- c.NetConn()
			cmd, err := c.Command()
			if err != nil || cmd.Name != "FETCH" {
				return
			}
			if c.Write("* 1 FETCH (BODY[] {"+strconv.Itoa(len(body))+"}\r\n") != nil {
				return
			}
			if err := w.write(c.NetConn()); err != nil {
				w.err.Store(&err)
				return
			}
			c.Write(")\r\n" + cmd.Tag + " OK FETCH completed\r\n")
			if cmd, err := c.Command(); err == nil && cmd.Name == "LOGOUT" {
				c.Write(proxytest.Logout(cmd.Tag))
			}
		})
		// The proxy's own sockets get the same small buffers: the one it
		// dials to the upstream through Dial, the one it accepts from
		// the client from its listener.
		dialer := net.Dialer{Timeout: proxytest.Timeout, Control: setBuffer(syscall.SO_RCVBUF)}
		p := proxytest.Start(t, proxytest.Config{
			Upstream:     up.Addr,
			Options:      proxy.Options{Relay: relay, Dial: dialer.DialContext},
			ListenConfig: &net.ListenConfig{Control: setBuffer(syscall.SO_SNDBUF)},
		})
		c := smallBufferLogin(t, p.Addr)
		un := <-upConn

		base := heapInuse()
		c.Send("f FETCH 1 BODY[]\r\n") // and read nothing for now

		// The pipeline is full: the proxy's socket to the client has
		// bytes to send and a closed window, and so has the upstream's.
		proxySide, err := net.ResolveTCPAddr("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		throttled := func(when string) int64 {
			t.Helper()
			deadline := time.Now().Add(3 * proxytest.Timeout)
			for {
				if e := w.err.Load(); e != nil {
					t.Fatalf("the upstream's write: %v", *e)
				}
				if w.done.Load() {
					t.Fatalf("%s: the upstream wrote the whole %d-byte literal to a client that reads nothing: no backpressure", when, len(body))
				}
				toClient, ok1, err1 := socketQueues(proxySide, c.Client().LocalAddr())
				fromUp, ok2, err2 := socketQueues(un.LocalAddr(), un.RemoteAddr())
				if err := errors.Join(err1, err2); err != nil || !ok1 || !ok2 {
					t.Fatalf("the sockets: %v (found: %v, %v)", err, ok1, ok2)
				}
				if w.waiting.Load() && toClient.TxQueue > 0 && toClient.Timer == zeroWindowProbe && fromUp.TxQueue > 0 && fromUp.Timer == zeroWindowProbe {
					n := w.written.Load()
					t.Logf("%s: throttled after %d bytes; %d wait in the upstream's socket, %d in the proxy's to the client", when, n, fromUp.TxQueue, toClient.TxQueue)
					return n
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: the upstream never blocked: wrote %d bytes, waiting %v; the proxy's socket to the client %+v, the upstream's %+v", when, w.written.Load(), w.waiting.Load(), toClient, fromUp)
				}
				select {
				case <-w.blocked:
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		written := throttled("at first")
		grown := int64(heapInuse()) - int64(base)
		t.Logf("relay %s: the proxy's heap grew by %d bytes (bound %d); the upstream wrote %d of %d bytes (bound %d)", relay, grown, backpressureHeap, written, len(body), backpressureWritten)
		if grown > backpressureHeap {
			t.Errorf("the heap grew by %d bytes while the client did not read; want at most %d", grown, backpressureHeap)
		}
		// And it stays so: once more, after the collection (the proxy may
		// have finished a read of its own meanwhile, within the bound).
		for _, n := range []int64{written, throttled("again")} {
			if n > backpressureWritten {
				t.Errorf("the upstream wrote %d of %d bytes to a client that reads nothing; want at most %d", n, len(body), backpressureWritten)
			}
		}

		// The client reads again: all of it, byte for byte.
		c.Client().Timeout = 3 * proxytest.Timeout
		c.Expect("* 1 FETCH (BODY[] {" + strconv.Itoa(len(body)) + "}")
		got, err := c.Client().ReadN(len(body))
		if err != nil {
			t.Fatalf("reading the literal: %v (after %d bytes)", err, len(got))
		}
		if !bytes.Equal(got, body) {
			i := 0
			for i < len(got) && got[i] == body[i] {
				i++
			}
			t.Fatalf("the literal differs from what the upstream sent from byte %d on", i)
		}
		c.Expect(")", "f OK FETCH completed")
		c.Logout("z")
		proxytest.WaitZero(t, p.Limiter)
	})
}

// socketBuffer is the send buffer of the upstream's socket and the
// receive buffer of the client's: small and fixed (setting them turns the
// kernel's autotuning off), so that what waits in the kernel between the
// upstream and the proxy, and between the proxy and the client, is small
// beside the literal.
const socketBuffer = 64 << 10

// smallBufferLogin connects to addr with a receive buffer of socketBuffer
// bytes and logs in.
func smallBufferLogin(t *testing.T, addr string) *proxytest.Conn {
	t.Helper()
	d := net.Dialer{Timeout: proxytest.Timeout, Control: setBuffer(syscall.SO_RCVBUF)}
	c := proxytest.DialWith(t, &d, addr)
	c.Greeting()
	c.LogIn("l1", "LOGIN alice secret")
	return c
}

// setBuffer is a Control for a dialer or a listener that sets the
// socket's option opt (SO_RCVBUF or SO_SNDBUF) to socketBuffer before it
// connects or listens.
func setBuffer(opt int) func(_, _ string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, socketBuffer)
		}); err != nil {
			return err
		}
		return serr
	}
}

// zeroWindowProbe is the timer of a socket whose peer's receive window
// is closed while it has bytes to send (ICSK_TIME_PROBE0).
const zeroWindowProbe = 4

// heapInuse is the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// throttledWriter writes body to a TCP connection through its
// non-blocking descriptor and says when a write would block.
type throttledWriter struct {
	body    []byte
	written atomic.Int64
	waiting atomic.Bool // the last write would have blocked; none since
	done    atomic.Bool
	blocked chan struct{} // a write would block
	err     atomic.Pointer[error]
}

func (w *throttledWriter) write(nc net.Conn) error {
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	off := 0
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for off < len(w.body) {
			n, err := syscall.Write(int(fd), w.body[off:min(off+64<<10, len(w.body))])
			if errors.Is(err, syscall.EAGAIN) {
				w.waiting.Store(true)
				select {
				case w.blocked <- struct{}{}:
				default:
				}
				return false // the runtime waits until it can write
			}
			if err != nil {
				werr = err
				return true
			}
			w.waiting.Store(false)
			off += n
			w.written.Add(int64(n))
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err == nil {
		w.done.Store(true)
	}
	return err
}
