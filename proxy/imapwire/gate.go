package imapwire

import (
	"bytes"
	"sync"
	"sync/atomic"
)

// LiteralGate tells the client-side framer how the upstream answered a
// synchronizing literal: "+" (send it) or a tagged completion (the
// command is over and no literal follows, RFC 9051 §4.3, §7.5). The
// upstream-side framer sees that answer before the client does, so the
// decision is known by the time the client's next bytes arrive. The two
// framers run on different goroutines; the gate is safe for that.
type LiteralGate struct {
	waiting atomic.Bool
	mu      sync.Mutex
	tag     []byte
	state   GateState
}

// GateState is the upstream's answer to a synchronizing literal.
type GateState int

const (
	GateUnknown  GateState = iota // no answer seen
	GateAccepted                  // "+"
	GateRejected                  // a tagged response to the command
)

// Open starts waiting for the answer to the command with tag.
func (g *LiteralGate) Open(tag []byte) {
	g.mu.Lock()
	g.tag = append(g.tag[:0], tag...)
	g.state = GateUnknown
	g.mu.Unlock()
	g.waiting.Store(true)
}

// Waiting reports whether an answer is awaited: a cheap check the
// response framer makes for every line.
func (g *LiteralGate) Waiting() bool { return g.waiting.Load() }

// Observe is called with the start of each upstream response line while
// an answer is awaited.
func (g *LiteralGate) Observe(line []byte) {
	if len(line) == 0 || line[0] == '*' {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case line[0] == '+':
		g.state = GateAccepted
	case len(line) > len(g.tag) && line[len(g.tag)] == ' ' && bytes.Equal(line[:len(g.tag)], g.tag):
		g.state = GateRejected
	default:
		return
	}
	g.waiting.Store(false)
}

// Take returns the decision and clears it.
func (g *LiteralGate) Take() GateState {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.state
	g.state = GateUnknown
	g.waiting.Store(false)
	return s
}
