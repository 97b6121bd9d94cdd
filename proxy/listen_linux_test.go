package proxy

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// sockopts reads the keep-alive options and TCP_NODELAY of c's socket.
func sockopts(t *testing.T, c net.Conn) map[string]int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var gerr error
	err = rc.Control(func(fd uintptr) {
		for _, o := range []struct {
			name       string
			level, opt int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY},
		} {
			v, err := syscall.GetsockoptInt(int(fd), o.level, o.opt)
			if err != nil {
				gerr = err
				return
			}
			got[o.name] = v
		}
	})
	if err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return got
}

// acceptOne dials ln and returns the accepted end.
func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	d := net.Dialer{KeepAlive: -1}
	cc, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := <-accepted
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestListenKeepAliveInherited checks that a connection accepted by
// Listen has the keep-alive net.Listen would set on it (15 s, 15 s, 9)
// and TCP_NODELAY, although nothing set them on it: Linux copied them
// from the listening socket. Without the listener's options, the same
// accept yields a socket without keep-alive, so the options come from
// the listener.
func TestListenKeepAliveInherited(t *testing.T) {
	ln, err := Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	secs := int(clientKeepAlive / time.Second)
	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": secs, "TCP_KEEPINTVL": secs,
		"TCP_KEEPCNT": clientKeepAliveCount, "TCP_NODELAY": 1}
	if got := sockopts(t, acceptOne(t, ln)); !equalOpts(got, want) {
		t.Errorf("accepted by Listen: %v; want %v", got, want)
	}

	lc := net.ListenConfig{KeepAlive: -1}
	plain, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got := sockopts(t, acceptOne(t, plain)); got["SO_KEEPALIVE"] != 0 {
		t.Errorf("accepted without the listener's options: %v; want SO_KEEPALIVE 0", got)
	}
}

// TestUpstreamKeepAlive checks the default dial to the upstream: no
// keep-alive, unless Options.UpstreamKeepAlive asks for it.
func TestUpstreamKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // the dialled end keeps its options
		}
	}()
	for _, tc := range []struct {
		keepAlive time.Duration
		want      map[string]int
	}{
		{0, map[string]int{"SO_KEEPALIVE": 0}},
		{time.Minute, map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 60, "TCP_KEEPCNT": 9}},
	} {
		o := Options{UpstreamKeepAlive: tc.keepAlive}.withDefaults()
		c, err := o.Dial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		got := sockopts(t, c)
		c.Close()
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("UpstreamKeepAlive %v: %s = %d; want %d (all: %v)", tc.keepAlive, k, got[k], v, got)
			}
		}
	}
}

func equalOpts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
