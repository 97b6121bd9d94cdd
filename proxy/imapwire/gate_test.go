package imapwire

import (
	"testing"
	"time"
)

func TestLiteralGate(t *testing.T) {
	var g LiteralGate
	g.open([]byte("a1"), false)
	if tag, ok := g.Awaited(); !ok || tag != "a1" {
		t.Fatalf("Awaited = %q, %v after open", tag, ok)
	}
	for _, l := range []string{"", "* OK", "a1", "a1x NO", "a NO", "b1 OK"} {
		if g.Response([]byte(l)) {
			t.Fatalf("dropped %q", l)
		}
		if _, ok := g.Awaited(); !ok {
			t.Fatalf("decided on %q", l)
		}
	}
	g.Response([]byte("a1 NO nope\r\n"))
	if _, ok := g.Awaited(); ok {
		t.Fatal("still waiting after the tagged answer")
	}
	if s := g.take(); s != GateRejected {
		t.Fatalf("take = %d; want rejected", s)
	}
	if s := g.take(); s != GateUnknown {
		t.Fatalf("second take = %d; want unknown", s)
	}
	g.open([]byte("a2"), false)
	if g.Response([]byte("+ go ahead\r\n")) {
		t.Fatal("dropped the client's own continuation request")
	}
	if s := g.take(); s != GateAccepted {
		t.Fatalf("take = %d; want accepted", s)
	}
	// A "+" the proxy asked for itself is dropped.
	g.open([]byte("a3"), true)
	if !g.Response([]byte("+ OK\r\n")) {
		t.Fatal("the proxy's own continuation request is not dropped")
	}
	if g.take() != GateAccepted || g.watch.Load() {
		t.Fatal("not accepted, or still watching")
	}
	// Not watching: a "+" is nothing to the gate.
	if g.Response([]byte("+ x")) || g.take() != GateUnknown {
		t.Fatal("decided while not waiting")
	}
}

// The gate counts the commands passed on and their tagged answers, and
// Wait returns once every one is answered.
func TestLiteralGateDrain(t *testing.T) {
	var g LiteralGate
	g.sentCommand()
	g.sentCommand()
	if g.drained() || g.Outstanding() != 2 || !g.watch.Load() {
		t.Fatalf("drained with 2 outstanding (or not watching)")
	}
	done := make(chan struct{})
	waited := make(chan bool)
	go func() { waited <- g.Wait(done) }()
	g.Response([]byte("* 1 EXISTS"))
	g.Response([]byte("+ idling"))
	g.Response([]byte("a OK"))
	select {
	case <-waited:
		t.Fatal("Wait returned with one command outstanding")
	default:
	}
	g.Response([]byte("b OK"))
	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("Wait = false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once every command was answered")
	}
	if !g.drained() || g.watch.Load() {
		t.Fatal("not drained, or still watching")
	}
	// Wait gives up when done closes.
	g.open([]byte("c"), false)
	go func() { waited <- g.Wait(done) }()
	close(done)
	if <-waited {
		t.Fatal("Wait = true without an answer")
	}
}
