package test

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// readingListener hands out connections that say when the proxy asks for
// more bytes after it has had want of them: from then on, it has done
// with all the client sent. It is the one way for a test to know that
// without a sleep.
type readingListener struct {
	net.Listener
	want    atomic.Int64 // bytes a connection must have delivered
	reading chan struct{}
}

func (l *readingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &readingConn{Conn: nc, l: l, told: -1}, nil
}

type readingConn struct {
	net.Conn
	l         *readingListener
	delivered int64 // since the greeting
	told      int64 // the want last told, -1 for none
}

func (c *readingConn) Read(p []byte) (int, error) {
	if want := c.l.want.Load(); c.delivered >= want && c.told != want {
		c.told = want
		c.l.reading <- struct{}{}
	}
	n, err := c.Conn.Read(p)
	c.delivered += int64(n)
	return n, err
}

// liveMemory is what the process holds: heap and goroutine stacks, after
// a collection.
func liveMemory() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestMemoryFollowsBytesReceived: a connection that announces a 1 MiB
// literal before login and sends 20 bytes of it costs what a connection
// that sent nothing costs, within a few KiB (issue 10: it used to reserve
// the announced megabyte, held until preauth_timeout).
func TestMemoryFollowsBytesReceived(t *testing.T) {
	n := 1000
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && int(rl.Cur) < 2*n+200 {
		n = (int(rl.Cur) - 200) / 2
		t.Logf("RLIMIT_NOFILE %d: %d connections", rl.Cur, n)
	}
	const announce = "a LOGIN {1048000+}\r\n"
	const sent = "01234567890123456789"
	srv := proxy.New(proxy.Options{UpstreamAddr: proxytest.ClosedAddr(t), MaxCommandSize: 1 << 20}, limits.New(limits.Options{}), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl2 := &readingListener{Listener: ln, reading: make(chan struct{}, n)}
	go srv.Serve(rl2)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), proxytest.Timeout)
		defer cancel()
		srv.Shutdown(ctx)
	})

	// open opens n connections, sends each of them send after the
	// greeting, and returns once the proxy has read all of it and waits
	// for more on every one.
	open := func(send string) []net.Conn {
		t.Helper()
		rl2.want.Store(0)
		conns := make([]net.Conn, 0, n)
		for range n {
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
			br := bufio.NewReader(nc)
			nc.SetReadDeadline(time.Now().Add(proxytest.Timeout))
			if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
				t.Fatalf("greeting %q, %v", g, err)
			}
			// The greeting is out: the proxy's next read is the
			// command's.
			<-rl2.reading
		}
		rl2.want.Store(int64(len(send)))
		for _, nc := range conns {
			nc.Write([]byte(send))
		}
		if send != "" {
			for range conns {
				<-rl2.reading
			}
		}
		return conns
	}
	closeAll := func(conns []net.Conn) {
		for _, nc := range conns {
			nc.Close()
		}
		proxytest.WaitFor(t, "every connection closed", func() bool { return len(srv.Conns()) == 0 })
	}

	// Once, so that pools and the runtime have warmed up.
	closeAll(open(""))
	base := liveMemory()
	idle := open("")
	idleMem := liveMemory()
	closeAll(idle)
	literal := open(announce + sent)
	literalMem := liveMemory()
	closeAll(literal)

	perIdle := (int64(idleMem) - int64(base)) / int64(n)
	extra := (int64(literalMem) - int64(idleMem)) / int64(n)
	t.Logf("%d connections: %d B each idle, %+d B more each with a 1 MiB literal announced and 20 bytes of it sent", n, perIdle, extra)
	// What a connection holds while a command is partly received is its
	// read buffer (4 KiB at most for 20 bytes), not the announced
	// megabyte; heap measurements of 1,000 connections under the race
	// detector vary by about 2 KiB each from run to run (2.2-4.1 KiB seen
	// on one machine), hence 8 KiB, still 128 times less than announced.
	if extra > 8<<10 {
		t.Errorf("a connection that announced a 1 MiB literal and sent 20 bytes costs %d B more than an idle one; want at most a few KiB", extra)
	}
}
