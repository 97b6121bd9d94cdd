package imapwire

import "bytes"

// This file is the part of the command framer that waits for the
// upstream (see the rules at the top of framer.go): a line held until
// every earlier command is answered, the upstream's "+" or tagged answer
// to a literal or IDLE, and the line that ends an accepted IDLE.

// nextAnswer goes on once the upstream has answered the line that
// waits: "+" or the command's tagged end.
func (f *CommandFramer) nextAnswer(st *Step) {
	answer := f.gate.take()
	if answer == GateUnknown {
		st.Await = true
		return
	}
	what := f.await
	f.await = awaitNone
	switch {
	case what == awaitIdle && answer == GateAccepted:
		f.idling = true
		f.gate.idling(f.tag)
		f.endCommand()
	case what == awaitIdle:
		f.endCommand()
	case answer == GateAccepted:
		f.litLeft = f.litN // the octets follow, as part of the command
	case f.litSync:
		// The client waits for "+" that will not come: what it sends
		// next is a new command (RFC 9051 §7.5).
		f.endCommand()
	default:
		// The client sent the octets without waiting (RFC 7888); the
		// upstream, which answered the command already, will not read
		// them: they and the rest of the command are thrown away.
		f.discarding = true
		f.refuse = RefuseNone
		f.litLeft = f.litN
	}
}

// nextHeld passes a held line on once the upstream has answered the
// probe sent before it.
func (f *CommandFramer) nextHeld(in []byte, st *Step) {
	if f.gate.probing() {
		st.Await = true
		return
	}
	f.emitHeld(in, st)
}

// emitHeld passes on the held line (at the start of in), which waits for
// the upstream's answer.
func (f *CommandFramer) emitHeld(in []byte, st *Step) {
	n := f.held
	f.held = 0
	if f.plusAt >= 0 {
		// {N+} goes upstream as {N}: shift the line over the "+" and drop
		// the first byte.
		copy(in[1:f.plusAt+1], in[:f.plusAt])
		st.Drop = 1
		n--
	}
	st.Forward = n
	st.Flush = true
	f.sent()
	f.gate.open(f.tag, f.await == awaitLiteral && !f.litSync)
}

// sent notes that the command's first line is passed on: a command that
// waits for a "+" after it needs a probe first.
func (f *CommandFramer) sent() {
	if !f.forwarded {
		f.dirty = true
	}
	f.forwarded = true
}

// nextIdleEnd frames the line that ends an IDLE the upstream accepted.
func (f *CommandFramer) nextIdleEnd(in []byte, st *Step) error {
	if f.gate.idleEnded() {
		// The upstream ended the IDLE itself: the line is a command.
		f.idling, f.idleBad = false, false
		return f.nextLine(in, st)
	}
	i := bytes.IndexByte(in, '\n')
	if i < 0 {
		if len(in) == 0 || (!f.idleBad && donePrefix(in)) {
			st.More = true
			return nil
		}
		// Not DONE: throw it away as it comes.
		f.idleBad = true
		st.Drop = len(in)
		return nil
	}
	line := in[:i+1]
	if !f.idleBad && EqualFoldASCII(TrimEOL(line), "DONE") {
		f.idling = false
		f.gate.stopIdle()
		st.Forward = len(line)
		st.Flush = true
		return nil
	}
	// Anything else would end the IDLE on the upstream without being
	// checked as a command: refuse it, and the IDLE goes on.
	f.idleBad = false
	st.Drop = len(line)
	st.Refuse = RefuseExpectedDone
	return nil
}

// donePrefix reports whether p, a line without its LF yet, may still
// become DONE.
func donePrefix(p []byte) bool {
	const done = "DONE\r"
	if len(p) > len(done) {
		return false
	}
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != done[i] {
			return false
		}
	}
	return true
}
