package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// The two copy loops of a session. Each reads with an idleReader where it
// can, so that it holds no buffer while it waits, and returns errPark when
// the sweeper evicts it, so that its direction can park (relay.go).

const (
	// relayBufSize is the upstream-to-client buffer. Large literals
	// bypass it (spliced), so it only has to hold response lines.
	relayBufSize = 32 << 10
	// spliceMin is the smallest literal remainder copied straight between
	// the sockets (io.CopyN, which the kernel splices between two TCP
	// connections) instead of through the buffer.
	spliceMin = 64 << 10
	// spliceChunk bounds one such copy, so that activity is noted at
	// least this often while a large literal streams.
	spliceChunk = 1 << 20
)

// errPark is returned by a copy loop whose waiting read the sweeper
// evicted: its direction parks instead of ending.
var errPark = errors.New("proxy: direction parked")

// commandCopier copies client commands to the upstream, framed by an
// imapwire.CommandFramer: it carries out the framer's steps (forward,
// drop, flush, refuse, read more, stream a literal). It never holds more
// than one buffer, and none while it waits with nothing buffered.
type commandCopier struct {
	src io.Reader // client
	dst io.Writer // upstream
	f   *imapwire.CommandFramer

	// noteActivity is called after each read and write (idle timer).
	noteActivity func()
	// sent counts the bytes forwarded to the upstream; a session points
	// it at its own counter, read live by the admin API and metrics.
	sent *atomic.Int64
	// onLogout is called when the client starts a LOGOUT command, so that
	// the upstream's close after it counts as the client's doing.
	onLogout func()
	// refuse answers a command the framer refused.
	refuse func(imapwire.Refusal)
	// await waits for the upstream's answer the framer waits for (see
	// imapwire.LiteralGate.Wait) and reports whether it came; false ends
	// the loop (the session is closing).
	await func() bool

	st   imapwire.Step // the step being carried out
	idle *idleReader
	one  [1]byte // waits for a TLS client without a buffer
	cmdBuf
}

// cmdBufSize is the client-to-upstream buffer a session starts with, and
// goes back to whenever it has nothing buffered: commands are short, and
// literal octets pass through it in pieces. A partial line grows it, as
// its bytes arrive, up to max_command_size+512, never beyond what the
// client sent.
const cmdBufSize = 4 << 10

func newCommandCopier(src io.Reader, dst io.Writer, f *imapwire.CommandFramer, initial []byte) *commandCopier {
	c := &commandCopier{src: src, dst: dst, f: f, cmdBuf: cmdBuf{maxBuf: max(f.Max()+512, cmdBufSize)},
		noteActivity: func() {}, sent: new(atomic.Int64), onLogout: func() {}, refuse: func(imapwire.Refusal) {},
		await: func() bool { return f.Gate().Wait(nil) }}
	c.idle = newIdleReader(src, cmdBufSize)
	if len(initial) > 0 {
		c.takeBuf(len(initial))
		c.w = copy(c.buf, initial)
	}
	return c
}

// run frames and forwards until the client closes, an error, or an
// eviction (errPark; run may then be called again).
func (c *commandCopier) run() error {
	defer c.releaseBuf()
	for {
		if err := c.step(); err != nil {
			if ferr := c.flush(); err == io.EOF && ferr != nil {
				return ferr
			}
			return err
		}
	}
}

// step carries out one step of the framer.
func (c *commandCopier) step() error {
	st := &c.st
	err := c.f.Next(c.buf[c.r:c.w], st)
	if st.Logout {
		c.onLogout()
	}
	if err != nil {
		return err
	}
	if st.Drop > 0 {
		if err := c.drop(st.Drop); err != nil {
			return err
		}
	}
	c.r += st.Forward
	if st.Flush {
		if err := c.flush(); err != nil {
			return err
		}
	}
	if st.Refuse != imapwire.RefuseNone {
		c.refuse(c.f.Refusal(st))
	}
	if st.Probe != nil {
		// The proxy's own command: not counted in sent, which is the
		// client's bytes.
		c.noteActivity()
		if _, err := c.dst.Write(st.Probe); err != nil {
			return &writeError{err}
		}
	}
	if st.Await && !c.await() {
		return net.ErrClosed
	}
	switch {
	case !st.More:
		return nil
	case st.Stream >= spliceMin && c.r == c.w:
		return c.stream(min(st.Stream, spliceChunk))
	}
	return c.fill()
}

// stream copies n literal octets straight from the client to the
// upstream.
func (c *commandCopier) stream(n int64) error {
	if err := c.flush(); err != nil {
		return err
	}
	c.noteActivity()
	k, err := copyN(c.dst, c.src, n)
	c.f.Streamed(k)
	c.sent.Add(k)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// flush forwards buf[out:r].
func (c *commandCopier) flush() error {
	if c.r > c.out {
		// Traffic is noted before the write: the upstream may answer, and
		// the client read the answer, before the write returns.
		c.noteActivity()
		n, err := c.dst.Write(c.buf[c.out:c.r])
		c.sent.Add(int64(n))
		c.out = c.r
		if err != nil {
			return &writeError{err}
		}
	}
	c.out = c.r
	return nil
}

// drop discards buf[r:r+n] (flushing what precedes it first).
func (c *commandCopier) drop(n int) error {
	if err := c.flush(); err != nil {
		return err
	}
	c.r += n
	c.out = c.r
	return nil
}

// fill reads more from the client, compacting the buffer first. With
// nothing buffered it gives the buffer back while it waits, so an idle
// session holds none.
func (c *commandCopier) fill() error {
	if err := c.flush(); err != nil {
		return err
	}
	if c.r == c.w {
		c.r, c.w, c.out = 0, 0, 0
		c.releaseBuf()
		return c.fillEmpty()
	}
	c.makeRoom()
	return c.read(c.buf[c.w:])
}

// fillEmpty waits for the client with no buffer held, then reads.
func (c *commandCopier) fillEmpty() error {
	if c.idle != nil { // a socket: see idleReader
		bufp, n, err := c.idle.read()
		if err != nil {
			return err
		}
		c.bufp, c.buf, c.w = bufp, (*bufp)[:cmdBufSize], n
		c.noteActivity()
		return nil
	}
	if _, ok := c.src.(*tls.Conn); !ok {
		c.takeBuf(0)
		return c.read(c.buf)
	}
	// TLS: wait on a one-byte read; the rest of the record is already
	// decrypted in the TLS connection and comes with the next read,
	// without a system call.
	if err := c.read(c.one[:]); err != nil {
		return err
	}
	c.takeBuf(0)
	c.buf[0] = c.one[0]
	return nil
}

// read reads into p, which is buf[w:] or one, advancing w.
func (c *commandCopier) read(p []byte) error {
	n, err := c.src.Read(p)
	c.w += n
	if n > 0 {
		c.noteActivity()
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// responseSink is where a respCopier writes: the clientWriter, or a
// recorder in tests.
type responseSink interface {
	relay(p []byte, boundary int, mid bool) error
	copyLiteral(src io.Reader, n int64) (int64, error)
}

// respCopier copies upstream responses to the client through an
// imapwire.ResponseFramer, with a pooled buffer of bufSize (>
// imapwire.HoldMax) that it gives back whenever it waits with nothing
// held back. run is resumable after errPark.
type respCopier struct {
	src      io.Reader
	dst      responseSink
	f        *imapwire.ResponseFramer
	bufSize  int
	progress func(n int64)
	idle     *idleReader

	bufp  *[]byte // nil while waiting with nothing held
	carry int     // bytes held back at the start of the buffer
	fresh bool    // the buffer holds initial bytes not yet scanned
}

// newRespCopier copies src to dst through f, starting with initial
// (bytes read from src before); progress is told of every read and
// literal copy.
func newRespCopier(src io.Reader, dst responseSink, f *imapwire.ResponseFramer, bufSize int, initial []byte, progress func(n int64)) *respCopier {
	c := &respCopier{src: src, dst: dst, f: f, bufSize: bufSize, progress: progress, idle: newIdleReader(src, bufSize)}
	if len(initial) > 0 {
		c.bufp = getBuf(bufSize)
		c.carry = copy((*c.bufp)[:bufSize], initial)
		c.fresh = true
	}
	return c
}

func (c *respCopier) run() error {
	for {
		var n int
		var err error
		switch {
		case c.fresh:
			c.fresh = false
			c.progress(int64(c.carry)) // read during login, relayed now
		case c.carry == 0 && c.idle != nil:
			// Nothing held back: wait without a buffer.
			putBuf(c.bufp)
			if c.bufp, n, err = c.idle.read(); err != nil {
				return err
			}
		default:
			if c.bufp == nil {
				c.bufp = getBuf(c.bufSize)
			}
			n, err = c.src.Read((*c.bufp)[c.carry:c.bufSize])
		}
		if n > 0 {
			c.progress(int64(n))
		}
		if total := c.carry + n; total > 0 {
			buf := (*c.bufp)[:c.bufSize]
			// A short partial line is held back even in a full buffer: it
			// moves to the front (HoldMax < bufSize).
			newLen, done, boundary := c.f.Scan(buf[:total], err != nil)
			werr := c.dst.relay(buf[:done], boundary, c.f.Mid())
			c.carry = copy(buf, buf[done:newLen])
			if werr != nil {
				c.release()
				return &writeError{werr}
			}
			for c.carry == 0 && c.f.LiteralLeft() >= spliceMin {
				c.progress(0) // traffic, noted before the copy that may take long
				k, cerr := c.dst.copyLiteral(c.src, min(c.f.LiteralLeft(), spliceChunk))
				c.f.Skip(k)
				c.progress(k)
				if cerr != nil {
					c.release()
					return cerr
				}
				if k == 0 {
					c.release()
					return io.ErrUnexpectedEOF
				}
			}
		}
		if err != nil {
			c.release()
			return err
		}
	}
}

func (c *respCopier) release() {
	putBuf(c.bufp)
	c.bufp = nil
}
