package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
)

// This file frames the client-to-upstream stream after authentication:
// it finds where each command starts and ends (lines and literals, RFC
// 9051 §2.2.1, §4.3; RFC 7888 LITERAL+/-; RFC 3516 literal8) so that
// max_command_size holds for the whole session, COMPRESS (RFC 4978) and a
// late STARTTLS cannot blind the framing, and the proxy can answer a
// refused command itself. It never holds more than one buffer: lines are
// forwarded as they are checked, and literals stream through (spliced by
// the kernel when both ends are plain TCP).

// errCommandTooBig ends a session whose oversize command had already been
// partly passed on to the upstream.
var errCommandTooBig = errors.New("proxy: command too big after part of it was relayed")

// spliceMin is the smallest literal remainder copied with io.CopyN straight
// between the sockets instead of through the buffer.
const spliceMin = 64 << 10

// spliceChunk bounds one io.CopyN so that activity is noted at least this
// often while a large literal streams.
const spliceChunk = 1 << 20

// literalGate tells the client-side framer how the upstream answered a
// synchronizing literal: "+" (send it) or a tagged completion (the command
// is over and no literal follows). The upstream-side framer sees that
// answer before the client does, so the decision is known by the time the
// client's next bytes arrive.
type literalGate struct {
	waiting atomic.Bool
	mu      sync.Mutex
	tag     []byte
	state   int // gateUnknown, gateAccepted, gateRejected
}

const (
	gateUnknown = iota
	gateAccepted
	gateRejected
)

func (g *literalGate) open(tag []byte) {
	g.mu.Lock()
	g.tag = append(g.tag[:0], tag...)
	g.state = gateUnknown
	g.mu.Unlock()
	g.waiting.Store(true)
}

// observe is called by the upstream-side framer with the start of each
// response line while a decision is awaited.
func (g *literalGate) observe(line []byte) {
	if len(line) == 0 || line[0] == '*' {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case line[0] == '+':
		g.state = gateAccepted
	case len(line) > len(g.tag) && line[len(g.tag)] == ' ' && bytes.Equal(line[:len(g.tag)], g.tag):
		g.state = gateRejected
	default:
		return
	}
	g.waiting.Store(false)
}

// take returns and clears the decision.
func (g *literalGate) take() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.state
	g.state = gateUnknown
	g.waiting.Store(false)
	return s
}

// cmdFramer copies client commands to the upstream.
type cmdFramer struct {
	src io.Reader // client
	dst io.Writer // upstream
	max int       // max_command_size

	// reply sends one response line to the client at a response boundary.
	reply func(line string)
	// noteActivity is called after each read and write (idle timer).
	noteActivity func()
	gate         *literalGate

	bufSize int
	bufp    *[]byte // pooled; nil while waiting with nothing buffered
	idle    *idleReader
	one     [1]byte // waits for a non-socket client without a buffer
	buf     []byte
	r, w    int // buf[r:w] is read but not yet handled
	out     int // buf[out:r] is handled and waits to be forwarded

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
	tail         []byte

	// Bytes forwarded to the upstream; a session points it at its own
	// counter, read live by the admin API and metrics.
	sentBytes *atomic.Int64
	// onLogout is called when the client starts a LOGOUT command, so
	// that the upstream's close after it counts as the client's doing.
	onLogout func()
	// onTooBig is called when an oversize command is refused with BAD
	// [TOOBIG] (the session goes on).
	onTooBig func()
}

func newCmdFramer(src io.Reader, dst io.Writer, max int, initial []byte) *cmdFramer {
	size := max + 512
	if size < 16<<10 {
		size = 16 << 10
	}
	f := &cmdFramer{src: src, dst: dst, max: max, bufSize: size, tail: make([]byte, 0, tailSize)}
	f.idle = newIdleReader(src, size)
	if len(initial) > 0 {
		f.takeBuf()
		f.w = copy(f.buf, initial)
	}
	f.reply = func(string) {}
	f.noteActivity = func() {}
	f.onLogout = func() {}
	f.onTooBig = func() {}
	f.sentBytes = new(atomic.Int64)
	f.gate = &literalGate{}
	return f
}

// flush forwards buf[out:r].
func (f *cmdFramer) flush() error {
	if f.r > f.out {
		n, err := f.dst.Write(f.buf[f.out:f.r])
		f.sentBytes.Add(int64(n))
		f.out = f.r
		f.noteActivity()
		if err != nil {
			return err
		}
	}
	f.out = f.r
	return nil
}

// drop discards buf[r:r+n] (flushing what precedes it first).
func (f *cmdFramer) drop(n int) error {
	if err := f.flush(); err != nil {
		return err
	}
	f.r += n
	f.out = f.r
	return nil
}

func (f *cmdFramer) takeBuf() {
	f.bufp = getBuf(f.bufSize)
	f.buf = (*f.bufp)[:f.bufSize]
}

// releaseBuf returns the buffer to the pool; nothing may be buffered.
func (f *cmdFramer) releaseBuf() {
	putBuf(f.bufp)
	f.bufp, f.buf = nil, nil
}

// fill reads more from the client, compacting the buffer first. With
// nothing buffered it gives the buffer back while it waits, so an idle
// session holds none.
func (f *cmdFramer) fill() error {
	if err := f.flush(); err != nil {
		return err
	}
	if f.r == f.w {
		f.r, f.w, f.out = 0, 0, 0
		f.releaseBuf()
		return f.fillEmpty()
	}
	if f.w == len(f.buf) && f.r > 0 {
		copy(f.buf, f.buf[f.r:f.w])
		f.w -= f.r
		f.r, f.out = 0, 0
	}
	return f.read(f.buf[f.w:])
}

// fillEmpty waits for the client with no buffer held, then reads.
func (f *cmdFramer) fillEmpty() error {
	if f.idle != nil { // a socket: see idleReader
		bufp, n, err := f.idle.read()
		if err != nil {
			return err
		}
		f.bufp, f.buf, f.w = bufp, (*bufp)[:f.bufSize], n
		f.noteActivity()
		return nil
	}
	if _, ok := f.src.(*tls.Conn); !ok {
		f.takeBuf()
		return f.read(f.buf)
	}
	// TLS: wait on a one-byte read; the rest of the record is already
	// decrypted in the TLS connection and comes with the next read,
	// without a system call.
	if err := f.read(f.one[:]); err != nil {
		return err
	}
	f.takeBuf()
	f.buf[0] = f.one[0]
	return nil
}

// read reads into p, which is f.buf[f.w:] or f.one, advancing f.w.
func (f *cmdFramer) read(p []byte) error {
	n, err := f.src.Read(p)
	f.w += n
	if n > 0 {
		f.noteActivity()
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// replyTag is the tag for the proxy's answer to the current command.
func (f *cmdFramer) replyTag() string {
	if f.tagOK {
		return string(f.tag)
	}
	return "*"
}

func (f *cmdFramer) tooBigLine() string {
	return f.replyTag() + " BAD [TOOBIG] Command too long (max_command_size=" + strconv.Itoa(f.max) + ")"
}

// TooBigBye is the line that ends a session whose oversize command was
// already partly relayed.
func tooBigBye(max int) string {
	return "* BYE [TOOBIG] Command too long (max_command_size=" + strconv.Itoa(max) + ")"
}

// endCommand finishes the current command.
func (f *cmdFramer) endCommand() {
	switch {
	case f.invalid:
		f.reply(f.replyTag() + " BAD Invalid literal")
	case f.discarding:
		f.onTooBig()
		f.reply(f.tooBigLine())
	}
	f.inCmd = false
	f.discarding = false
	f.invalid = false
}

// oversize handles a command found too big. Nothing of it reached the
// upstream: it is thrown away and answered BAD [TOOBIG]. Otherwise the
// session cannot go on.
func (f *cmdFramer) oversize() error {
	if f.forwarded {
		return errCommandTooBig
	}
	f.discarding = true
	return nil
}

// startCommand notes the first line of a command.
func (f *cmdFramer) startCommand(line []byte) {
	tag, name := splitTagName(line)
	f.tag = append(f.tag[:0], tag...)
	// Seen whole however the line was read: a partial line is
	// examined only once it is over max octets.
	f.tagOK = name != nil && len(tag) < f.max && validTag(tag)
	f.inCmd = true
	f.size = 0
	f.forwarded = false
	f.discarding = false
	f.invalid = false
	f.firstLit = true
	f.appendCmd = equalFoldASCII(name, "APPEND")
	if equalFoldASCII(name, "LOGOUT") {
		f.onLogout()
	}
	f.mboxLit = false
	if f.appendCmd {
		// "tag APPEND {N}": the mailbox name itself is a literal and counts.
		rest := line[len(tag)+1+len(name):]
		rest = bytes.TrimLeft(rest, " ")
		f.mboxLit = len(rest) > 0 && (rest[0] == '{' || (rest[0] == '~' && len(rest) > 1 && rest[1] == '{'))
	}
}

// local answers commands the proxy must not pass on. It reports whether
// line (a whole one-line command) was handled.
func (f *cmdFramer) local(line []byte) bool {
	_, name := splitTagName(line)
	switch {
	case equalFoldASCII(name, "COMPRESS"):
		// RFC 4978 would turn the rest of the stream into deflate data and
		// blind the framing; the capability is hidden too.
		f.reply(f.replyTag() + " NO [CANNOT] COMPRESS is not available through this proxy")
	case equalFoldASCII(name, "STARTTLS"):
		// RFC 9051 §6.2.1: only valid before authentication.
		f.reply(f.replyTag() + " BAD STARTTLS is not valid in the authenticated state")
	default:
		return false
	}
	return true
}

// run frames and forwards until the client closes or an error.
func (f *cmdFramer) run() error {
	defer f.releaseBuf()
	for {
		if err := f.step(); err != nil {
			if ferr := f.flush(); err == io.EOF && ferr != nil {
				return ferr
			}
			return err
		}
	}
}

// step makes progress on the buffered data or reads more.
func (f *cmdFramer) step() error {
	switch {
	case f.awaitsGo:
		return f.stepGate()
	case f.litLeft > 0:
		return f.stepLiteral()
	case f.skippingLine:
		return f.stepSkipLine()
	default:
		return f.stepLine()
	}
}

func (f *cmdFramer) stepLine() error {
	i := bytes.IndexByte(f.buf[f.r:f.w], '\n')
	if i < 0 {
		partial := f.w - f.r
		size := 0 // a new command starts with nothing counted
		if f.inCmd {
			size = f.size
		}
		if size+partial > f.max {
			if !f.inCmd {
				f.startCommand(f.buf[f.r:f.w])
			}
			if err := f.oversize(); err != nil {
				return err
			}
			// Throw the line away to its end, watching its tail for a
			// literal announcement.
			f.tail = f.tail[:0]
			f.keepTail(f.buf[f.r:f.w])
			f.skippingLine = true
			return f.drop(partial)
		}
		return f.fill()
	}
	line := f.buf[f.r : f.r+i+1]
	if !f.inCmd {
		f.startCommand(line)
		if f.local(line) {
			f.inCmd = false
			return f.drop(len(line))
		}
	}
	f.size += len(line)
	return f.lineEnd(line, len(line), true)
}

// lineEnd handles the end of a line of n bytes (line holds at least its
// end); inBuf says whether the line is still in buf[r:r+n].
func (f *cmdFramer) lineEnd(line []byte, n int, inBuf bool) error {
	lit, sync, isLit, bad := literalAt(line)
	counted := isLit && !(f.appendCmd && !(f.firstLit && f.mboxLit))
	// At least CRLF follows a literal: a literal without room for it
	// cannot make a command within the cap.
	if !f.discarding && (f.size > f.max || (counted && int64(f.size)+lit+2 > int64(f.max))) {
		if err := f.oversize(); err != nil {
			return err
		}
	}
	if bad && !f.discarding {
		// The upstream may read a literal here that we cannot frame:
		// refuse the command rather than lose track of it.
		if err := f.oversize(); err != nil {
			return err
		}
		f.invalid = true
	}
	if inBuf {
		if f.discarding {
			if err := f.drop(n); err != nil {
				return err
			}
		} else {
			f.r += n
			f.forwarded = true
		}
	}
	if !isLit {
		if !f.discarding {
			if err := f.flush(); err != nil {
				return err
			}
		}
		f.endCommand()
		return nil
	}
	f.firstLit = false
	if sync && f.discarding {
		// The client waits for "+" that will not come: the tagged BAD
		// ends the command (RFC 9051 §7.5).
		f.endCommand()
		return nil
	}
	f.litLeft = lit
	if counted {
		f.size += int(lit)
	}
	if sync && !f.discarding {
		// Learn whether the upstream says "+" before the client sends.
		f.gate.open(f.tag)
		f.awaitsGo = true
		return f.flush()
	}
	return nil
}

// stepGate waits for the client's bytes after a synchronizing literal
// was passed on: by the time they come, the upstream has answered it.
func (f *cmdFramer) stepGate() error {
	if f.r == f.w {
		return f.fill()
	}
	f.awaitsGo = false
	if f.gate.take() == gateRejected {
		// The upstream refused the literal with a tagged response; the
		// client will not send it, and what follows is a new command
		// (RFC 9051 §7.5).
		f.litLeft = 0
		f.inCmd = false
	}
	return nil
}

func (f *cmdFramer) stepLiteral() error {
	avail := int64(f.w - f.r)
	if avail == 0 {
		if f.discarding {
			return f.fill()
		}
		if f.litLeft >= spliceMin {
			if err := f.flush(); err != nil {
				return err
			}
			n, err := copyN(f.dst, f.src, min(f.litLeft, spliceChunk))
			f.litLeft -= n
			f.sentBytes.Add(n)
			f.noteActivity()
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			return nil
		}
		return f.fill()
	}
	take := int(min(avail, f.litLeft))
	if f.discarding {
		if err := f.drop(take); err != nil {
			return err
		}
	} else {
		f.r += take
	}
	f.litLeft -= int64(take)
	return nil
}

// stepSkipLine throws away an overlong line to its end.
func (f *cmdFramer) stepSkipLine() error {
	if f.r == f.w {
		return f.fill()
	}
	i := bytes.IndexByte(f.buf[f.r:f.w], '\n')
	if i < 0 {
		f.keepTail(f.buf[f.r:f.w])
		return f.drop(f.w - f.r)
	}
	f.keepTail(f.buf[f.r : f.r+i+1])
	if err := f.drop(i + 1); err != nil {
		return err
	}
	f.skippingLine = false
	return f.lineEnd(f.tail, 0, false)
}

func (f *cmdFramer) keepTail(p []byte) {
	if len(p) >= tailSize {
		f.tail = append(f.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	f.tail = append(f.tail, p...)
	if n := len(f.tail); n > tailSize {
		copy(f.tail, f.tail[n-tailSize:])
		f.tail = f.tail[:tailSize]
	}
}
