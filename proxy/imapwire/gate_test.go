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

// The gate waits for the answer to the proxy's probe, drops it, and
// takes no other line for it: another tag, a line that only starts like
// it, an untagged line.
func TestLiteralGateProbe(t *testing.T) {
	var g LiteralGate
	g.probe([]byte("igp"))
	if tag, ok := g.Probe(); !ok || tag != "igp" || !g.watch.Load() {
		t.Fatalf("Probe = %q, %v (or not watching)", tag, ok)
	}
	done := make(chan struct{})
	waited := make(chan bool)
	go func() { waited <- g.Wait(done) }()
	for _, l := range []string{"* 1 EXISTS", "+ idling", "a OK", "igpx OK", "igp", "* igp OK"} {
		if g.Response([]byte(l)) {
			t.Fatalf("dropped %q", l)
		}
	}
	select {
	case <-waited:
		t.Fatal("Wait returned before the probe's answer")
	default:
	}
	if !g.Response([]byte("igp OK NOOP completed\r\n")) {
		t.Fatal("the probe's answer is not dropped")
	}
	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("Wait = false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once the probe was answered")
	}
	if g.probing() || g.watch.Load() {
		t.Fatal("still probing, or still watching")
	}
	// A second answer with the same tag is not the proxy's: relayed.
	if g.Response([]byte("igp OK again")) {
		t.Fatal("dropped a line after the probe was answered")
	}
	// Wait gives up when done closes.
	g.open([]byte("c"), false)
	go func() { waited <- g.Wait(done) }()
	close(done)
	if <-waited {
		t.Fatal("Wait = true without an answer")
	}
}
