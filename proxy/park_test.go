//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
)

// parkedCount is how many directions the process's parker holds.
func parkedCount() int {
	p := getParker()
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// waitFor polls cond on a ticker until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

type parkClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (c *parkClient) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *parkClient) cmd(tag, s string) string {
	c.t.Helper()
	fmt.Fprintf(c.nc, "%s %s\r\n", tag, s)
	for {
		if l := c.line(); strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

// TestParkAndResume checks that idle sessions give up their goroutines
// to the parker, resume on client and on upstream traffic, and leave
// nothing behind.
func TestParkAndResume(t *testing.T) {
	up := server.Start(t, server.Options{Users: []server.User{{Username: "u", Password: "p"}}, InsecureAuth: true})
	lim := limits.New(limits.Options{})
	srv := New(Options{UpstreamAddr: up}, lim, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	base := parkedCount()

	const n = 5
	var cs []*parkClient
	for i := 0; i < n; i++ {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := &parkClient{t: t, nc: nc, br: bufio.NewReader(nc)}
		c.line()
		if st := c.cmd("a", "LOGIN u p"); !strings.HasPrefix(st, "a OK") {
			t.Fatalf("login: %q", st)
		}
		cs = append(cs, c)
	}
	waitFor(t, "every direction parked", func() bool { return parkedCount() == base+2*n })

	// Client traffic resumes the client direction, and the response
	// resumes the upstream direction.
	for i, c := range cs {
		if st := c.cmd("b", "SELECT INBOX"); !strings.HasPrefix(st, "b OK") {
			t.Fatalf("client %d: SELECT after parking: %q", i, st)
		}
	}
	waitFor(t, "parked again", func() bool { return parkedCount() == base+2*n })

	// Upstream-initiated traffic: cs[0] idles, cs[1] appends, cs[0] sees
	// EXISTS although both its directions were parked.
	fmt.Fprintf(cs[0].nc, "i IDLE\r\n")
	if l := cs[0].line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	waitFor(t, "parked in IDLE", func() bool { return parkedCount() == base+2*n })
	fmt.Fprintf(cs[1].nc, "c APPEND INBOX {5}\r\n")
	if l := cs[1].line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND: %q", l)
	}
	fmt.Fprintf(cs[1].nc, "hello\r\n")
	for {
		if l := cs[1].line(); strings.HasPrefix(l, "c ") {
			break
		}
	}
	if l := cs[0].line(); !strings.HasSuffix(l, "EXISTS") {
		t.Fatalf("got %q; want an EXISTS pushed during IDLE", l)
	}
	fmt.Fprintf(cs[0].nc, "DONE\r\n")
	if l := cs[0].line(); !strings.HasPrefix(l, "i OK") {
		t.Fatalf("DONE: %q", l)
	}

	// Closing parked sessions frees everything.
	waitFor(t, "parked again", func() bool { return parkedCount() == base+2*n })
	for _, c := range cs {
		c.nc.Close()
	}
	waitFor(t, "parker empty and counts zero", func() bool {
		c := lim.Counts()
		return parkedCount() == base && c.Connections == 0 && c.Sessions == 0
	})
}
