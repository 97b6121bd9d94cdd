package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// Upstreams of the suite's own, which the proxy is pointed at with
// SIGHUP (upstream.address applies to new connections on reload): a relay
// to cmd/imapd that can hold a connection at a chosen point, and servers
// that never greet, stall or answer garbage.

// fakeUpstream is a loopback listener whose connections a handler serves.
type fakeUpstream struct {
	ln       net.Listener
	handler  atomic.Pointer[func(f *fakeUpstream, nc net.Conn)]
	closed   chan struct{} // closed by close: every handler returns
	accepted atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startFake(handler func(f *fakeUpstream, nc net.Conn)) (*fakeUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fakeUpstream{ln: ln, closed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	f.handler.Store(&handler)
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

func (f *fakeUpstream) addr() string { return f.ln.Addr().String() }

// heal ends the fault where it is: new connections to the same address
// are relayed to target (cmd/imapd), as when a broken upstream recovers.
// Connections already open stay as they are.
func (f *fakeUpstream) heal(target string) {
	h := (&relay{target: target}).serve
	f.handler.Store(&h)
}

func (f *fakeUpstream) accept() {
	defer f.wg.Done()
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.accepted.Add(1)
		f.mu.Lock()
		f.conns[nc] = struct{}{}
		f.mu.Unlock()
		handler := *f.handler.Load()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.forget(nc)
			handler(f, nc)
		}()
	}
}

func (f *fakeUpstream) forget(nc net.Conn) {
	nc.Close()
	f.mu.Lock()
	delete(f.conns, nc)
	f.mu.Unlock()
}

// open returns how many of its connections are open.
func (f *fakeUpstream) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// close ends the fault: the listener and every connection close, and
// close returns once every handler has.
func (f *fakeUpstream) close() {
	select {
	case <-f.closed:
		return
	default:
	}
	close(f.closed)
	f.ln.Close()
	f.mu.Lock()
	for nc := range f.conns {
		nc.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// hold is a connection stopped at a point of the relay; it goes on when
// release is closed.
type hold struct {
	release chan struct{}
}

func newHold() *hold { return &hold{release: make(chan struct{})} }

// relay passes connections to target (cmd/imapd), holding each at one
// point when the channel for that point is set: before it connects to
// target (the proxy is then waiting for the greeting: mid-dial), or
// before it passes on the proxy's login command (the proxy is waiting for
// the upstream's answer: mid-login). A hold is offered on the channel;
// whoever takes it releases it.
type relay struct {
	target       string
	holdGreeting chan *hold
	holdLogin    chan *hold
}

func (rl *relay) serve(f *fakeUpstream, nc net.Conn) {
	if rl.holdGreeting != nil {
		if !rl.wait(f, rl.holdGreeting) {
			return
		}
	}
	up, err := net.Dial("tcp", rl.target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	var once sync.Once
	end := func() {
		once.Do(func() {
			close(done)
			nc.Close()
			up.Close()
		})
	}
	go func() {
		defer end()
		io.Copy(nc, up)
	}()
	defer end()
	br := bufio.NewReader(nc)
	if rl.holdLogin != nil {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if isLogin(line) {
				h := newHold()
				select {
				case rl.holdLogin <- h:
				case <-done:
					return
				case <-f.closed:
					return
				}
				select {
				case <-h.release:
				case <-done:
					return
				case <-f.closed:
					return
				}
			}
			if _, err := io.WriteString(up, line); err != nil {
				return
			}
			if isLogin(line) {
				break
			}
		}
	}
	io.Copy(up, br)
}

// wait offers a hold on ch and waits for its release; false when the
// fake closed first.
func (rl *relay) wait(f *fakeUpstream, ch chan *hold) bool {
	h := newHold()
	select {
	case ch <- h:
	case <-f.closed:
		return false
	}
	select {
	case <-h.release:
		return true
	case <-f.closed:
		return false
	}
}

// isLogin reports whether a line from the proxy is its login command.
func isLogin(line string) bool {
	_, rest, _ := strings.Cut(line, " ")
	cmd, _, _ := strings.Cut(rest, " ")
	return strings.EqualFold(cmd, "AUTHENTICATE") || strings.EqualFold(cmd, "LOGIN")
}
