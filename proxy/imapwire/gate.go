package imapwire

import (
	"bytes"
	"sync"
	"sync/atomic"
)

// LiteralGate carries what the command framer must learn from the
// upstream's responses before it may go on, so that it reads the
// client's bytes exactly as the upstream will:
//
//   - whether the upstream accepted a literal ("+") or ended the command
//     with a tagged response instead, in which case no literal follows
//     (RFC 9051 §4.3, §7.5);
//   - whether it accepted an IDLE ("+", RFC 2177), and when it ended it;
//   - whether it has answered the proxy's probe: a NOOP with a tag that
//     nobody else knows, sent before a command that waits for a "+"
//     whenever other commands went on since the last probe. Once the
//     upstream answers it, the upstream has read everything sent before
//     it as the proxy did, and a "+" or tagged response that comes next
//     answers the waiting command and nobody else (a pipelined command,
//     a reused tag, an error text that quotes a client's CRLF and so
//     forges a line cannot answer for it). Counting tagged responses
//     instead cannot be made exact: an upstream answers some lines the
//     proxy cannot tell from commands with an untagged BAD, or with a
//     tag that is not the line's, or not at all.
//
// The two framers run on different goroutines; the gate is safe for
// that. The response side's cost per response is one atomic load while
// the command side waits for nothing; the rest happens only while it
// waits.
type LiteralGate struct {
	watch atomic.Bool // the response side must call observe

	mu       sync.Mutex
	tag      []byte
	awaiting bool      // an answer to tag's "+" is awaited
	swallow  bool      // that "+" is the proxy's own request: not relayed
	state    GateState // the answer, until taken
	idleTag  []byte    // an accepted IDLE, until its tagged completion
	idleOver bool      // the upstream completed the IDLE
	probeTag []byte    // the proxy's probe, while its answer is awaited
	wake     chan struct{}
}

// GateState is the upstream's answer to a command that waits for a
// continuation (a synchronizing literal, IDLE).
type GateState int

const (
	GateUnknown  GateState = iota // no answer seen
	GateAccepted                  // "+"
	GateRejected                  // a tagged response to the command
)

// Response is called by the response side with the start of each
// response (a response's first line; not the lines that continue it
// after a literal). It reports whether the line must not reach the
// client: a "+" the proxy asked for itself, or the answer to its probe.
func (g *LiteralGate) Response(line []byte) (drop bool) {
	if !g.watch.Load() {
		return false
	}
	return g.observe(line, len(line) > 0 && line[0] != '*' && line[0] != '+')
}

func (g *LiteralGate) observe(line []byte, tagged bool) (drop bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	switch {
	case g.probeTag != nil && tagged && hasTag(line, g.probeTag):
		g.probeTag, changed, drop = nil, true, true
	case g.awaiting && len(line) > 0 && line[0] == '+':
		g.state, g.awaiting, changed = GateAccepted, false, true
		drop = g.swallow
	case g.awaiting && tagged && hasTag(line, g.tag):
		g.state, g.awaiting, changed = GateRejected, false, true
	case g.idleTag != nil && tagged && hasTag(line, g.idleTag):
		g.idleTag, g.idleOver, changed = nil, true, true
	}
	if changed {
		g.updateWatch()
		g.signal()
	}
	return drop
}

func hasTag(line, tag []byte) bool {
	return len(line) > len(tag) && line[len(tag)] == ' ' && bytes.Equal(line[:len(tag)], tag)
}

// signal wakes a waiting command side; g.mu is held.
func (g *LiteralGate) signal() {
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
}

// updateWatch says whether the response side must report; g.mu is held.
func (g *LiteralGate) updateWatch() {
	g.watch.Store(g.awaiting || g.idleTag != nil || g.probeTag != nil)
}

// probe starts waiting for the tagged answer to the proxy's probe, which
// has tag; the answer is not relayed.
func (g *LiteralGate) probe(tag []byte) {
	g.mu.Lock()
	g.probeTag = append(g.probeTag[:0:0], tag...)
	g.updateWatch()
	g.mu.Unlock()
}

// probing reports whether the probe's answer is still awaited.
func (g *LiteralGate) probing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.probeTag != nil
}

// open starts waiting for the upstream's answer to the command with tag:
// "+" or a tagged response. With swallow, the "+" is not relayed.
func (g *LiteralGate) open(tag []byte, swallow bool) {
	g.mu.Lock()
	g.tag = append(g.tag[:0], tag...)
	g.awaiting, g.swallow, g.state = true, swallow, GateUnknown
	g.updateWatch()
	g.mu.Unlock()
}

// take returns the answer, GateUnknown while none has come, and clears
// it.
func (g *LiteralGate) take() GateState {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.state
	g.state = GateUnknown
	g.updateWatch()
	return s
}

// idling notes an IDLE the upstream accepted: its tagged completion
// ends it, whether the client sent DONE or the upstream ended it itself.
func (g *LiteralGate) idling(tag []byte) {
	g.mu.Lock()
	g.idleTag = append(g.idleTag[:0], tag...)
	g.idleOver = false
	g.updateWatch()
	g.mu.Unlock()
}

// idleEnded reports whether the upstream completed the IDLE, and stops
// watching for it.
func (g *LiteralGate) idleEnded() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	over := g.idleOver
	if over {
		g.idleOver = false
	}
	return over
}

// stopIdle stops watching for the IDLE's completion (the client ended
// it with DONE; the completion may still come, and is counted).
func (g *LiteralGate) stopIdle() {
	g.mu.Lock()
	g.idleTag = nil
	g.idleOver = false
	g.updateWatch()
	g.mu.Unlock()
}

// Wait blocks until what the command framer waits for has come (a
// Step's Await: an answer, or the probe's) or done is closed; it
// reports whether it came.
func (g *LiteralGate) Wait(done <-chan struct{}) bool {
	for {
		g.mu.Lock()
		ready := g.state != GateUnknown || (!g.awaiting && g.probeTag == nil)
		if ready {
			g.mu.Unlock()
			return true
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-wake:
		case <-done:
			return false
		}
	}
}

// Ready reports, without waiting, what Wait would return at once: that
// what the command framer waits for has come (the event-loop relay asks
// it each time the upstream's bytes have been scanned).
func (g *LiteralGate) Ready() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state != GateUnknown || (!g.awaiting && g.probeTag == nil)
}

// Awaited returns the tag whose "+" or tagged answer the command side
// awaits, if any (tests play the upstream with it and Response).
func (g *LiteralGate) Awaited() (tag string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.tag), g.awaiting
}

// Probe returns the tag of the proxy's probe while its answer is awaited
// (tests play the upstream with it and Response).
func (g *LiteralGate) Probe() (tag string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.probeTag), g.probeTag != nil
}
