package imapwire

import "testing"

func TestLiteralGate(t *testing.T) {
	var g LiteralGate
	g.Open([]byte("a1"))
	if !g.Waiting() {
		t.Fatal("not waiting after Open")
	}
	for _, l := range []string{"", "* OK", "a1", "a1x NO", "a NO", "b1 OK"} {
		g.Observe([]byte(l))
		if !g.Waiting() {
			t.Fatalf("decided on %q", l)
		}
	}
	g.Observe([]byte("a1 NO nope\r\n"))
	if g.Waiting() {
		t.Fatal("still waiting after the tagged answer")
	}
	if s := g.Take(); s != GateRejected {
		t.Fatalf("Take = %d; want rejected", s)
	}
	if s := g.Take(); s != GateUnknown {
		t.Fatalf("second Take = %d; want unknown", s)
	}
	g.Open([]byte("a2"))
	g.Observe([]byte("+ go ahead\r\n"))
	if s := g.Take(); s != GateAccepted {
		t.Fatalf("Take = %d; want accepted", s)
	}
	g.Open([]byte("a3"))
	if s := g.Take(); s != GateUnknown || g.Waiting() {
		t.Fatalf("Take without answer = %d, waiting %v", s, g.Waiting())
	}
}
