package proxytest

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Forwarder is a TCP forwarder on 127.0.0.1 in front of an upstream: put
// its Addr where the upstream's would be, and Cut drops the forwarded
// connections from the upstream's side, as an upstream that crashes
// would. When one direction of a connection ends, the forwarder
// half-closes the other, as TCP does.
type Forwarder struct {
	Addr string
	// ToUpstream counts the bytes forwarded to the upstream.
	ToUpstream atomic.Int64

	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool // both sides of every forwarded connection: true for the proxy's
	cut   bool              // set by Cut: new connections are dropped at once
}

// Forward starts a forwarder to target. Cleanup cuts every connection and
// waits for the forwarder's goroutines; registered before the proxy's
// (Start), it runs after it.
func Forward(t testing.TB, target string) *Forwarder {
	t.Helper()
	ln := listen(t)
	f := &Forwarder{Addr: ln.Addr().String(), ln: ln, conns: make(map[net.Conn]bool)}
	f.wg.Add(1)
	go f.accept(target)
	t.Cleanup(func() {
		ln.Close()
		f.Cut()
		f.wg.Wait()
	})
	return f
}

func (f *Forwarder) accept(target string) {
	defer f.wg.Done()
	for {
		down, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", target, Timeout)
		if err != nil {
			down.Close()
			continue
		}
		if !f.track(down, up) {
			down.Close()
			up.Close()
			continue
		}
		f.wg.Add(1)
		go f.forward(down, up)
	}
}

// track registers a forwarded connection, unless Cut came first.
func (f *Forwarder) track(down, up net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return false
	}
	f.conns[down], f.conns[up] = true, false
	return true
}

func (f *Forwarder) forward(down, up net.Conn) {
	defer f.wg.Done()
	var half sync.WaitGroup
	pipe := func(dst net.Conn, src io.Reader) {
		defer half.Done()
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	half.Add(2)
	go pipe(up, counting{down, &f.ToUpstream})
	go pipe(down, up)
	half.Wait()
	down.Close()
	up.Close()
	f.mu.Lock()
	delete(f.conns, down)
	delete(f.conns, up)
	f.mu.Unlock()
}

// Cut closes every forwarded connection, both sides, at once; later
// connections are closed as they come.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for c := range f.conns {
		c.Close()
	}
}

// Reset is Cut with a TCP reset instead of a close, as an upstream whose
// machine went away would answer. The proxy's sides are reset first: a
// side closed before them would have the forwarder half-close them with
// a FIN.
func (f *Forwarder) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for _, proxySide := range []bool{true, false} {
		for c, down := range f.conns {
			if down != proxySide {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
		}
	}
}

// WaitForwarded waits until at least n bytes went to the upstream.
func (f *Forwarder) WaitForwarded(t testing.TB, n int64) {
	t.Helper()
	if !Eventually(func() bool { return f.ToUpstream.Load() >= n }) {
		t.Fatalf("only %d of %d bytes reached the upstream", f.ToUpstream.Load(), n)
	}
}

// counting is a reader that counts what it reads.
type counting struct {
	r io.Reader
	n *atomic.Int64
}

func (c counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Dialer is a proxy.Options.Dial that counts the upstream connections
// the proxy opens and, of those, the ones it has not closed yet.
type Dialer struct {
	Dials atomic.Int64 // connections dialled
	Open  atomic.Int64 // of those, not yet closed by the proxy

	// Hook, when set, runs at the start of each dial (before the real
	// one); it may block on ctx, as an upstream that never answers.
	Hook func(ctx context.Context) error
}

// Dial dials as a net.Dialer does.
func (d *Dialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.Hook != nil {
		if err := d.Hook(ctx); err != nil {
			return nil, err
		}
	}
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.Dials.Add(1)
	d.Open.Add(1)
	return &dialedConn{TCPConn: nc.(*net.TCPConn), d: d}, nil
}

// WaitOpen waits until the proxy holds exactly n upstream connections.
func (d *Dialer) WaitOpen(t testing.TB, n int64) {
	t.Helper()
	if !Eventually(func() bool { return d.Open.Load() == n }) {
		t.Fatalf("timed out waiting for the proxy to hold %d upstream connections: open=%d dials=%d", n, d.Open.Load(), d.Dials.Load())
	}
}

// dialedConn counts the proxy's Close of an upstream connection.
type dialedConn struct {
	*net.TCPConn
	d    *Dialer
	once sync.Once
}

func (c *dialedConn) Close() error {
	c.once.Do(func() { c.d.Open.Add(-1) })
	return c.TCPConn.Close()
}
