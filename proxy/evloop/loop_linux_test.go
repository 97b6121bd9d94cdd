package evloop

import (
	"net"
	"syscall"
	"testing"
	"time"
)

type chanHandler chan uint32

func (h chanHandler) Event(ev uint32) { h <- ev }

// TestLoopEvents registers a socket taken from a net.Conn and gets its
// edges: readable when the peer writes, RDHUP when it closes; Post runs
// on the loop in order; Remove stops the events.
func TestLoopEvents(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := nc.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	fd := int(f.Fd())
	syscall.SetNonblock(fd, true)
	h := make(chanHandler, 16)
	ids := make(chan int32, 1)
	l.Post(func() {
		id, err := l.Add(fd, h)
		if err != nil {
			t.Error(err)
		}
		ids <- id
	})
	id := <-ids
	wait := func(want uint32) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-h:
				if ev&want != 0 {
					return
				}
			case <-deadline:
				t.Fatalf("no event %#x", want)
			}
		}
	}
	wait(Out) // writable at once
	peer.Write([]byte("x"))
	wait(In)
	order := make(chan int, 3)
	for i := range 3 {
		l.Post(func() { order <- i })
	}
	for i := range 3 {
		if got := <-order; got != i {
			t.Fatalf("posted function %d ran as %d", i, got)
		}
	}
	peer.Close()
	wait(RDHup)
	done := make(chan struct{})
	l.Post(func() { l.Remove(fd, id); close(done) })
	<-done
	f.Close()
}

// TestLoopClose refuses Post after Close.
func TestLoopClose(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	l.Post(func() { close(ran) })
	<-ran
	l.Close()
	if l.Post(func() {}) {
		t.Fatal("Post after Close was accepted")
	}
}
