package imapwire

import (
	"bytes"
	"errors"
)

// This file frames the client-to-upstream stream after authentication:
// it finds where each command starts and ends (lines and literals, RFC
// 9051 §2.2.1, §4.3; RFC 7888 LITERAL+/-; RFC 3516 literal8) so that
// max_command_size holds for the whole session, COMPRESS (RFC 4978) and a
// late STARTTLS cannot blind the framing, and the proxy can answer a
// refused command itself.
//
// The size policy: every line and literal of a command counts toward
// max_command_size, except the message literals of APPEND (RFC 9051
// §6.3.12, MULTIAPPEND), which are mail, not commands; the mailbox name
// of "APPEND {N}" is a literal that counts. A literal announced so that
// its octets and the CRLF after it cannot fit is over the cap at once.

// ErrCommandTooBig ends a session whose oversize command was already
// partly passed on to the upstream: it can be neither refused nor
// completed.
var ErrCommandTooBig = errors.New("imapwire: command too big after part of it was relayed")

// RefusalKind is why the proxy answers a command itself.
type RefusalKind uint8

const (
	RefuseNone           RefusalKind = iota
	RefuseTooBig                     // over max_command_size: BAD [TOOBIG]
	RefuseInvalidLiteral             // a literal announcement that is not one
	RefuseCompress                   // COMPRESS would blind the framing (RFC 4978)
	RefuseStartTLS                   // STARTTLS is not valid after login (RFC 9051 §6.2.1)
)

// Refusal is a command the proxy answers itself instead of passing it
// on. Tag is the command's tag, or empty when the tag is not valid (the
// answer is then untagged).
type Refusal struct {
	Kind RefusalKind
	Tag  string
}

// Step is what the caller does next with the framer's input, in this
// order: pass the first Forward bytes on to the upstream, or throw the
// first Drop bytes away; write out what it has passed on if Flush is
// set; answer the command if Refuse is set (Refusal says with which
// tag). With More, nothing further can be decided from the input: the
// caller reads more and calls Next again with the bytes not yet consumed
// and the new ones; if Stream is positive, the next Stream bytes of the
// client's stream are literal octets that the caller may copy to the
// upstream without reading them into its buffer, and report with
// Streamed. Logout is set when a LOGOUT command begins: the upstream's
// close after it is the client's doing. The fields are few and small:
// Next runs once or twice per command.
type Step struct {
	Forward int
	Drop    int
	Stream  int64
	Refuse  RefusalKind
	Flush   bool
	More    bool
	Logout  bool
}

// CommandFramer follows the client's command stream. It is a state
// machine that does no I/O: the caller feeds it the bytes it read and
// carries out each Step.
type CommandFramer struct {
	max  int
	gate *LiteralGate

	// The command being framed.
	inCmd      bool
	size       int  // bytes of it that count toward max
	forwarded  bool // part of it reached the upstream
	discarding bool // it is too big and thrown away to its end
	invalid    bool // it is thrown away for an invalid literal
	appendCmd  bool // APPEND: message literals do not count
	firstLit   bool // the next literal is the command's first
	mboxLit    bool // APPEND's first literal is its mailbox name
	tag        []byte
	tagOK      bool // tag is a valid tag followed by SP: answer with it

	// Inside a literal.
	litLeft  int64
	awaitsGo bool // a synchronizing literal waits for the upstream's "+"
	// Inside an overlong line being thrown away.
	skippingLine bool
	tail         Tail
}

// NewCommandFramer returns a framer for commands of at most max octets;
// gate carries the upstream's answers to synchronizing literals (see
// ResponseFramer); nil gives it one of its own.
func NewCommandFramer(max int, gate *LiteralGate) *CommandFramer {
	if gate == nil {
		gate = new(LiteralGate)
	}
	return &CommandFramer{max: max, gate: gate}
}

// Max is the command size cap the framer enforces.
func (f *CommandFramer) Max() int { return f.max }

// Streamed notes n literal octets (at most the Step's Stream) that the
// caller copied to the upstream without Next.
func (f *CommandFramer) Streamed(n int64) { f.litLeft -= n }

// Next examines in, the bytes read from the client and not yet consumed,
// and says in *st what to do with them (st is the caller's, so that a
// step costs no copies). Its error is ErrCommandTooBig, after which the
// session cannot go on.
func (f *CommandFramer) Next(in []byte, st *Step) error {
	*st = Step{}
	switch {
	case f.awaitsGo:
		f.nextGate(in, st)
	case f.litLeft > 0:
		f.nextLiteral(in, st)
	case f.skippingLine:
		return f.nextSkipLine(in, st)
	default:
		return f.nextLine(in, st)
	}
	return nil
}

// Refusal is the answer to the command that st refused.
func (f *CommandFramer) Refusal(st *Step) Refusal {
	if f.tagOK {
		return Refusal{Kind: st.Refuse, Tag: string(f.tag)}
	}
	return Refusal{Kind: st.Refuse}
}

// nextGate decides, once the client sends again after a synchronizing
// literal was passed on, what its bytes are: by then the upstream has
// answered the literal.
func (f *CommandFramer) nextGate(in []byte, st *Step) {
	if len(in) == 0 {
		st.More = true
		return
	}
	f.awaitsGo = false
	if f.gate.Take() == GateRejected {
		// The upstream refused the literal with a tagged response; the
		// client will not send it, and what follows is a new command
		// (RFC 9051 §7.5).
		f.litLeft = 0
		f.inCmd = false
	}
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
		if !f.inCmd {
			f.startCommand(in, st)
		}
		if err := f.oversize(); err != nil {
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
	if !f.inCmd {
		if k := f.startCommand(line, st); k != RefuseNone {
			f.inCmd = false
			st.Drop = len(line)
			st.Refuse = k
			return nil
		}
	}
	f.size += len(line)
	return f.lineEnd(line, len(line), true, st)
}

// lineEnd handles the end of a line of n bytes (line holds at least its
// end); inBuf says whether the line is still at the front of the input.
func (f *CommandFramer) lineEnd(line []byte, n int, inBuf bool, st *Step) error {
	lit, sync, isLit, malformed := LiteralAt(line)
	counted := isLit && !(f.appendCmd && !(f.firstLit && f.mboxLit))
	// At least CRLF follows a literal: a literal without room for it
	// cannot make a command within the cap.
	if !f.discarding && (f.size > f.max || (counted && int64(f.size)+lit+2 > int64(f.max))) {
		if err := f.oversize(); err != nil {
			return err
		}
	}
	if malformed && !f.discarding {
		// The upstream may read a literal here that we cannot frame:
		// refuse the command rather than lose track of it.
		if err := f.oversize(); err != nil {
			return err
		}
		f.invalid = true
	}
	if inBuf {
		if f.discarding {
			st.Drop = n
		} else {
			st.Forward = n
			f.forwarded = true
		}
	}
	if !isLit {
		st.Flush = !f.discarding
		st.Refuse = f.endCommand()
		return nil
	}
	f.firstLit = false
	if sync && f.discarding {
		// The client waits for "+" that will not come: the tagged BAD
		// ends the command (RFC 9051 §7.5).
		st.Refuse = f.endCommand()
		return nil
	}
	f.litLeft = lit
	if counted {
		f.size += int(lit)
	}
	if sync && !f.discarding {
		// Learn whether the upstream says "+" before the client sends.
		f.gate.Open(f.tag)
		f.awaitsGo = true
		st.Flush = true
	}
	return nil
}

// oversize handles a command found too big. Nothing of it reached the
// upstream: it is thrown away and refused. Otherwise the session cannot
// go on.
func (f *CommandFramer) oversize() error {
	if f.forwarded {
		return ErrCommandTooBig
	}
	f.discarding = true
	return nil
}

// endCommand finishes the current command and returns why the proxy
// answers it itself, if it does.
func (f *CommandFramer) endCommand() RefusalKind {
	k := RefuseNone
	switch {
	case f.invalid:
		k = RefuseInvalidLiteral
	case f.discarding:
		k = RefuseTooBig
	}
	f.inCmd = false
	f.discarding = false
	f.invalid = false
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
	f.invalid = false
	f.firstLit = true
	f.appendCmd = false
	f.mboxLit = false
	switch len(name) {
	case len("APPEND"): // and LOGOUT
		if EqualFoldASCII(name, "LOGOUT") {
			st.Logout = true
		} else if EqualFoldASCII(name, "APPEND") {
			f.appendCmd = true
			// "tag APPEND {N}": the mailbox name itself is a literal and
			// counts.
			rest := bytes.TrimLeft(line[len(tag)+1+len(name):], " ")
			f.mboxLit = len(rest) > 0 && (rest[0] == '{' || (rest[0] == '~' && len(rest) > 1 && rest[1] == '{'))
		}
	case len("COMPRESS"): // and STARTTLS
		// RFC 4978 would turn the rest of the stream into deflate data and
		// blind the framing (the capability is hidden too); STARTTLS is
		// valid only before authentication (RFC 9051 §6.2.1).
		if EqualFoldASCII(name, "COMPRESS") {
			return RefuseCompress
		}
		if EqualFoldASCII(name, "STARTTLS") {
			return RefuseStartTLS
		}
	}
	return RefuseNone
}
