package imapwire

import (
	"bytes"
	"crypto/rand"
	"fmt"
)

// This file frames the client-to-upstream stream after authentication:
// it finds where each command starts and ends (lines and literals, RFC
// 9051 §2.2.1, §4.3; RFC 7888 LITERAL+/-; RFC 3516 literal8) so that
// max_command_size holds for the whole session, COMPRESS (RFC 4978) and a
// late STARTTLS cannot blind the framing, and the proxy can answer a
// refused command itself.
//
// The framer must read the client's bytes exactly as the upstream will,
// or bytes it takes for a literal's octets could run on the upstream as
// commands nobody checked. So:
//
//   - A literal is recognised only where an argument can start: after SP
//     or "(", outside a quoted string, after the tag and the command
//     name, as the last token of its line. A line with any other "{"
//     outside a quoted string is refused (a server reads a literal
//     wherever an argument starts, and may ask for its octets before it
//     finds the line goes on), and so is one with a CR that does not end
//     it. Commands that take no arguments (NOOP, IDLE, ...) refuse any
//     literal: the upstream would not read one there (a server that does
//     not parse NOOP's arguments runs the octets as commands). APPEND's
//     arguments are checked up to each literal (append.go).
//   - Every literal waits for the upstream's "+" before its octets go
//     on: a client's non-synchronizing literal ({N+}, RFC 7888) is sent
//     upstream as a synchronizing one ({N}) and the "+" is not relayed
//     (the response framer drops it). An upstream that does not mean to
//     read the literal (an unknown command, an argument past those it
//     parses, a mailbox that does not exist) answers with a tagged
//     response instead, and then the octets are not a literal: the
//     client's non-synchronizing octets are thrown away with the rest of
//     the command, and after a synchronizing one the client's next bytes
//     are a new command, exactly as the upstream reads them.
//   - Before a command that waits for a "+" (a literal, IDLE) goes on,
//     the upstream has read everything before it as the framer did: if
//     any command went on since the last time that was known, the proxy
//     sends a NOOP of its own with a tag nobody else knows and waits for
//     its answer, which the client never sees (see LiteralGate). The "+"
//     or tagged answer that comes next is then this command's and nobody
//     else's (a pipelined IDLE or a reused tag cannot answer for it), and
//     the command's tag must be one the upstream answers with.
//   - After the upstream accepted IDLE, the client's next line ends it
//     (RFC 2177): it goes on only if it is DONE, and the upstream's own
//     end of the IDLE makes the next line a command again.
//
// The size policy: every line and literal of a command counts toward
// max_command_size, except the message literals of APPEND (RFC 9051
// §6.3.12, MULTIAPPEND), which are mail, not commands; the mailbox name
// of "APPEND {N}" is a literal that counts. A literal announced so that
// its octets and the CRLF after it cannot fit is over the cap at once.

// awaiting is what the framer waits for the upstream to answer.
type awaiting uint8

const (
	awaitNone    awaiting = iota
	awaitLiteral          // "+" to a literal, or the command's tagged end
	awaitIdle             // "+" to IDLE, or its tagged end
)

// CommandFramer follows the client's command stream. It is a state
// machine that does no I/O: the caller feeds it the bytes it read and
// carries out each Step.
type CommandFramer struct {
	// OnCommand, when set, is told of every command as it ends: its tag,
	// the octets counted toward max_command_size, and whether any of it
	// was passed on. The proxy's differential tests compare it with what
	// the upstream answered.
	OnCommand func(tag []byte, size int, forwarded bool)

	max  int
	gate *LiteralGate

	// The command being framed.
	inCmd      bool
	size       int         // bytes of it that count toward max
	forwarded  bool        // part of it reached the upstream
	discarding bool        // it is thrown away to its end
	refuse     RefusalKind // why, answered at its end (none: the upstream answered it)
	appendCmd  bool        // APPEND: message literals do not count
	appendAt   appendState // where APPEND's arguments stand (append.go)
	litMessage bool        // the literal is APPEND message data
	noArgs     bool        // the command takes no arguments
	idleCmd    bool        // IDLE
	tag        []byte
	tagOK      bool // tag is a valid tag followed by SP: answer with it
	argsFrom   int  // where arguments can start on the command's first line

	// Inside a literal.
	litLeft int64
	// A line that waits for the upstream (held: its length, until every
	// earlier command is answered), and the answer it waits for.
	held    int
	await   awaiting
	litN    int64 // the awaited literal's size
	litSync bool  // the client sent it synchronizing
	plusAt  int   // where the "+" of {N+} is in the held line, or -1
	// Between the upstream's "+" to IDLE and the line that ends it.
	idling  bool
	idleBad bool // part of a line other than DONE was thrown away
	// Inside an overlong line being thrown away.
	skippingLine bool
	tail         Tail

	// dirty: a command went on since the upstream last answered a probe.
	dirty     bool
	probeLine []byte // the probe: "ig<random> NOOP" CRLF
}

// NewCommandFramer returns a framer for commands of at most max octets;
// gate carries the upstream's answers (see ResponseFramer); nil gives it
// one of its own.
func NewCommandFramer(max int, gate *LiteralGate) *CommandFramer {
	if gate == nil {
		gate = new(LiteralGate)
	}
	return &CommandFramer{max: max, gate: gate}
}

// Max is the command size cap the framer enforces.
func (f *CommandFramer) Max() int { return f.max }

// Gate is the gate the framer waits on.
func (f *CommandFramer) Gate() *LiteralGate { return f.gate }

// Streamed notes n literal octets (at most the Step's Stream) that the
// caller copied to the upstream without Next.
func (f *CommandFramer) Streamed(n int64) { f.litLeft -= n }

// Next examines in, the bytes read from the client and not yet consumed,
// and says in *st what to do with them (st is the caller's, so that a
// step costs no copies). It may rewrite bytes of in that it tells the
// caller to forward (a {N+} becomes {N}). Its error is ErrCommandTooBig
// or ErrCommandInvalid, after which the session cannot go on.
func (f *CommandFramer) Next(in []byte, st *Step) error {
	*st = Step{}
	switch {
	case f.held > 0:
		f.nextHeld(in, st)
	case f.await != awaitNone:
		f.nextAnswer(st)
	case f.litLeft > 0:
		f.nextLiteral(in, st)
	case f.skippingLine:
		return f.nextSkipLine(in, st)
	case f.idling:
		return f.nextIdleEnd(in, st)
	default:
		return f.nextLine(in, st)
	}
	return nil
}

// Refusal is the answer to the command that st refused.
func (f *CommandFramer) Refusal(st *Step) Refusal {
	if f.tagOK && st.Refuse != RefuseExpectedDone {
		return Refusal{Kind: st.Refuse, Tag: string(f.tag)}
	}
	return Refusal{Kind: st.Refuse}
}

func (f *CommandFramer) nextLiteral(in []byte, st *Step) {
	if len(in) == 0 {
		st.More = true
		if !f.discarding {
			st.Stream = f.litLeft
		}
		return
	}
	take := int(min(int64(len(in)), f.litLeft))
	f.litLeft -= int64(take)
	if f.discarding {
		st.Drop = take
	} else {
		st.Forward = take
	}
}

// nextSkipLine throws away an overlong line to its end.
func (f *CommandFramer) nextSkipLine(in []byte, st *Step) error {
	if len(in) == 0 {
		st.More = true
		return nil
	}
	i := bytes.IndexByte(in, '\n')
	if i < 0 {
		f.tail.Keep(in)
		st.Drop = len(in)
		return nil
	}
	f.tail.Keep(in[:i+1])
	f.skippingLine = false
	st.Drop = i + 1
	return f.lineEnd(f.tail.Bytes(), 0, false, st)
}

func (f *CommandFramer) nextLine(in []byte, st *Step) error {
	i := bytes.IndexByte(in, '\n')
	if i < 0 {
		partial := len(in)
		size := 0 // a new command starts with nothing counted
		if f.inCmd {
			size = f.size
		}
		if size+partial <= f.max {
			st.More = true
			return nil
		}
		if f.inCmd && f.discarding && f.forwarded {
			// The rest of a command the upstream answered already (a
			// literal it refused): thrown away to the line's end, never
			// sent, so not over any cap.
			f.tail.Reset()
			f.tail.Keep(in)
			f.skippingLine = true
			st.Drop = partial
			return nil
		}
		if !f.inCmd {
			f.startCommand(in, st)
		}
		if err := f.refuseCommand(RefuseTooBig); err != nil {
			return err
		}
		// Throw the line away to its end, watching its tail for a
		// literal announcement.
		f.tail.Reset()
		f.tail.Keep(in)
		f.skippingLine = true
		st.Drop = partial
		return nil
	}
	line := in[:i+1]
	first := !f.inCmd
	if first {
		if k := f.startCommand(line, st); k != RefuseNone {
			// Refused whole, with any literals it announces.
			f.discarding, f.refuse = true, k
		}
	}
	if !f.discarding || !f.forwarded {
		// What is thrown away after part of the command went on never
		// reaches the upstream: it does not count toward the cap.
		f.size += len(line)
	}
	return f.lineEnd(line, len(line), true, st)
}

// lineEnd handles the end of a line of n bytes (line holds at least its
// end); inBuf says whether the line is still at the front of the input.
func (f *CommandFramer) lineEnd(line []byte, n int, inBuf bool, st *Step) error {
	lit, sync, isLit, malformed := LiteralAt(line)
	open := -1
	if isLit {
		open = literalOpen(line)
	}
	f.litMessage = false
	if !f.discarding && f.size > f.max {
		if err := f.refuseCommand(RefuseTooBig); err != nil {
			return err
		}
	}
	if !f.discarding {
		// The line is whole: a line being thrown away was refused.
		if k := f.checkLine(line, open); k != RefuseNone {
			if err := f.refuseCommand(k); err != nil {
				return err
			}
		}
	}
	counted := isLit && !f.litMessage
	// At least CRLF follows a literal: a literal without room for it
	// cannot make a command within the cap.
	if !f.discarding && counted && int64(f.size)+lit+2 > int64(f.max) {
		if err := f.refuseCommand(RefuseTooBig); err != nil {
			return err
		}
	}
	if malformed && !f.discarding {
		// The upstream may read a literal here that we cannot frame:
		// refuse the command rather than lose track of it.
		if err := f.refuseCommand(RefuseInvalidLiteral); err != nil {
			return err
		}
	}
	f.argsFrom = 1 // the rest of the command's lines follow literals
	if f.discarding {
		if inBuf {
			st.Drop = n
		}
		if !isLit || sync {
			// The command ends here; after a synchronizing literal, the
			// client waits for "+" that will not come, and the answer
			// ends the command (RFC 9051 §7.5).
			st.Refuse = f.endCommand()
			return nil
		}
		f.litLeft = lit // thrown away as it comes
		return nil
	}
	if counted {
		f.size += int(lit)
	}
	if !isLit && !f.idleCmd {
		st.Forward = n
		st.Flush = true
		f.sent()
		f.endCommand()
		return nil
	}
	// A line that waits for the upstream's answer: a literal's, or
	// IDLE's.
	f.held = n
	f.plusAt = -1
	if isLit {
		f.await, f.litN, f.litSync = awaitLiteral, lit, sync
		if !sync {
			f.plusAt = bytes.LastIndexByte(line, '+')
		}
	} else {
		f.await = awaitIdle
	}
	if !f.forwarded && f.dirty {
		// Other commands went on since the upstream last answered a
		// probe: probe first (nextHeld waits for the answer).
		f.dirty = false
		st.Probe = f.probe()
		st.Await = true
		return nil
	}
	f.emitHeld(line, st)
	return nil
}

// probe returns the probe line to send and has the gate wait for its
// answer. Its tag is random, once per session: the client cannot make
// the upstream forge its answer (an error text that quotes a client's
// CRLF can start a line with any text the client knows).
func (f *CommandFramer) probe() []byte {
	if f.probeLine == nil {
		var b [8]byte
		rand.Read(b[:])
		f.probeLine = fmt.Appendf(nil, "ig%x NOOP\r\n", b[:])
	}
	tag := f.probeLine[:bytes.IndexByte(f.probeLine, ' ')]
	f.gate.probe(tag)
	if f.OnCommand != nil {
		f.OnCommand(tag, len(f.probeLine), true)
	}
	return f.probeLine
}

// refuseCommand refuses the command being framed for reason k, unless
// part of it already reached the upstream: then the session cannot go
// on.
func (f *CommandFramer) refuseCommand(k RefusalKind) error {
	if f.forwarded {
		if k == RefuseTooBig {
			return ErrCommandTooBig
		}
		return ErrCommandInvalid
	}
	f.discarding, f.refuse = true, k
	return nil
}

// endCommand finishes the current command and returns why the proxy
// answers it itself, if it does.
func (f *CommandFramer) endCommand() RefusalKind {
	k := RefuseNone
	if f.discarding {
		k = f.refuse
	}
	if f.OnCommand != nil {
		f.OnCommand(f.tag, f.size, f.forwarded)
	}
	f.inCmd = false
	f.discarding = false
	f.refuse = RefuseNone
	return k
}

// startCommand notes the first line of a command (LOGOUT in st) and
// returns the refusal of a command the proxy must not pass on, if it is
// one; line may be only the start of an overlong first line.
func (f *CommandFramer) startCommand(line []byte, st *Step) RefusalKind {
	tag, name := SplitTagName(line)
	f.tag = append(f.tag[:0], tag...)
	// Seen whole however the line was read: a partial line is
	// examined only once it is over max octets.
	f.tagOK = name != nil && len(tag) < f.max && ValidTag(tag)
	f.inCmd = true
	f.size = 0
	f.forwarded = false
	f.discarding = false
	f.refuse = RefuseNone
	f.appendCmd, f.appendAt, f.noArgs, f.idleCmd = false, appendMailbox, false, false
	f.argsFrom = len(tag) + 1 + len(name) + 1
	switch len(name) {
	case len("NOOP"): // and IDLE
		f.noArgs = EqualFoldASCII(name, "NOOP")
		f.idleCmd = EqualFoldASCII(name, "IDLE")
		f.noArgs = f.noArgs || f.idleCmd
	case len("CHECK"): // and CLOSE
		f.noArgs = EqualFoldASCII(name, "CHECK") || EqualFoldASCII(name, "CLOSE")
	case len("APPEND"): // and LOGOUT
		if EqualFoldASCII(name, "LOGOUT") {
			st.Logout = true
			f.noArgs = true
		} else {
			f.appendCmd = EqualFoldASCII(name, "APPEND")
		}
	case len("EXPUNGE"):
		f.noArgs = EqualFoldASCII(name, "EXPUNGE")
	case len("COMPRESS"): // and STARTTLS, UNSELECT
		// RFC 4978 would turn the rest of the stream into deflate data and
		// blind the framing (the capability is hidden too); STARTTLS is
		// valid only before authentication (RFC 9051 §6.2.1).
		if EqualFoldASCII(name, "COMPRESS") {
			return RefuseCompress
		}
		if EqualFoldASCII(name, "STARTTLS") {
			return RefuseStartTLS
		}
		f.noArgs = EqualFoldASCII(name, "UNSELECT")
	case len("NAMESPACE"):
		f.noArgs = EqualFoldASCII(name, "NAMESPACE")
	case len("CAPABILITY"):
		f.noArgs = EqualFoldASCII(name, "CAPABILITY")
	}
	return RefuseNone
}
