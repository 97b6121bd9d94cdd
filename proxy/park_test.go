//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/park"
)

// countingParker is the epoll parker, counting what it holds.
type countingParker struct {
	park.Parker
	mu     sync.Mutex
	parked map[park.Resumer]*countedResumer
}

type countedResumer struct {
	r park.Resumer
	p *countingParker
}

func (c *countedResumer) Resume() {
	c.p.mu.Lock()
	delete(c.p.parked, c.r)
	c.p.mu.Unlock()
	c.r.Resume()
}

func (p *countingParker) Park(fd int, r park.Resumer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := &countedResumer{r: r, p: p}
	if !p.Parker.Park(fd, w) {
		return false
	}
	p.parked[r] = w
	return true
}

func (p *countingParker) Unpark(fd int, r park.Resumer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.parked[r]
	if w == nil || !p.Parker.Unpark(fd, w) {
		return false
	}
	delete(p.parked, r)
	return true
}

func (p *countingParker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// eventually polls cond on a ticker until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
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
	pk := &countingParker{Parker: park.New(), parked: make(map[park.Resumer]*countedResumer)}
	t.Cleanup(func() { pk.Close() })
	srv := New(Options{UpstreamAddr: up, Parker: pk, Relay: RelayGoroutines}, lim, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })

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
	allParked := func() bool { return pk.count() == 2*n }
	eventually(t, "every direction parked", allParked)

	// Client traffic resumes the client direction, and the response
	// resumes the upstream direction.
	for i, c := range cs {
		if st := c.cmd("b", "SELECT INBOX"); !strings.HasPrefix(st, "b OK") {
			t.Fatalf("client %d: SELECT after parking: %q", i, st)
		}
	}
	eventually(t, "parked again", allParked)

	// Upstream-initiated traffic: cs[0] idles, cs[1] appends, cs[0] sees
	// EXISTS although both its directions were parked.
	fmt.Fprintf(cs[0].nc, "i IDLE\r\n")
	if l := cs[0].line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	eventually(t, "parked in IDLE", allParked)
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
	eventually(t, "parked again", allParked)
	for _, c := range cs {
		c.nc.Close()
	}
	eventually(t, "parker empty and counts zero", func() bool {
		c := lim.Counts()
		return pk.count() == 0 && c.Connections == 0 && c.Sessions == 0
	})
}
