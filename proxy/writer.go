package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// errClientClosed is returned by writes after a closing line was sent.
var errClientClosed = errors.New("proxy: client connection closed by proxy")

// clientWriter is the one writer to the client connection. The proxy's
// own responses (greeting, pre-authentication responses, injected
// BAD/NO/BYE) and the bytes relayed from the upstream all go through it,
// so they never interleave. After login the relay tells it whether the
// upstream stream is inside a response; an injected line waits for the
// next response boundary, so it never cuts a literal or a response in
// half.
type clientWriter struct {
	// record is told of every response with an outcome or a refusal,
	// before it is written (respond); set once.
	record func(response)
	// writeFailed, when set, is told why a response could not be written.
	writeFailed func(error)

	mu          sync.Mutex
	nc          writeConn
	midResponse bool   // relayed stream is inside a response
	pending     []byte // injected lines waiting for a boundary
	closeAfter  bool   // close once pending is written
	closed      bool   // a closing line was sent; drop all writes
	onClose     func() // closes the connection(s) after a closing line
	timeout     time.Duration
	muted       bool          // a TLS handshake has begun on nc: no plaintext may follow
	flushed     chan struct{} // closed when pending is written (or the writer closes)
}

// maxPending bounds the proxy's own lines waiting for a response
// boundary. A client that sends refused commands faster than the
// upstream finishes its responses waits for the boundary (its commands
// are not read meanwhile) instead of being buffered for; if the boundary
// never comes, idle_timeout ends the session.
const maxPending = 16 << 10

// writeConn is what the writer writes to: the client's net.Conn, or, in
// an event-loop session, its clientQueue.
type writeConn interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
}

func newClientWriter(nc net.Conn, onClose func(), record func(response)) *clientWriter {
	return &clientWriter{nc: nc, onClose: onClose, record: record, timeout: writeTimeout}
}

// mute drops every write until setConn: once a TLS handshake has begun,
// a plaintext line (a shutdown BYE) would only corrupt it.
func (w *clientWriter) mute() {
	w.mu.Lock()
	w.muted = true
	w.mu.Unlock()
}

// setConn switches to a new connection (after STARTTLS, or to an event
// loop's queue).
func (w *clientWriter) setConn(nc writeConn) {
	w.mu.Lock()
	w.nc = nc
	w.muted = false
	w.mu.Unlock()
}

// handOver gives the writer to a session: relayed writes may wait on a
// slow reader for up to timeout, and a closing line closes what onClose
// closes.
func (w *clientWriter) handOver(timeout time.Duration, onClose func()) {
	w.mu.Lock()
	w.timeout = timeout
	w.onClose = onClose
	w.mu.Unlock()
}

// writeLocked sends raw bytes; callers hold w.mu.
func (w *clientWriter) writeLocked(p []byte) error {
	if len(p) == 0 || w.muted {
		return nil
	}
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.nc.Write(p)
	return err
}

// respond sends responses, in one write: at once, or at the next
// response boundary while the relayed stream is inside a response. It
// is the one place the proxy's own lines are written. Each response's
// outcome and refusal are recorded first; after a closing one the writer
// drops every later write and closes the connection. A silent response
// is recorded and, if closing, closes at once without waiting for a
// boundary.
func (w *clientWriter) respond(rs ...response) error {
	var buf []byte
	closing, silent := false, true
	for _, r := range rs {
		if r.outcome != outcomeClosed || r.refusal != "" {
			w.record(r)
		}
		if !r.silent {
			buf = r.appendTo(buf)
			silent = false
		}
		closing = closing || r.closing
	}
	w.mu.Lock()
	for !closing && !w.closed && w.midResponse && len(w.pending)+len(buf) > maxPending {
		if w.flushed == nil {
			w.flushed = make(chan struct{})
		}
		flushed := w.flushed
		w.mu.Unlock()
		<-flushed
		w.mu.Lock()
	}
	if w.closed {
		w.mu.Unlock()
		return errClientClosed
	}
	if w.midResponse && !silent {
		w.pending = append(w.pending, buf...)
		w.closeAfter = w.closeAfter || closing
		w.mu.Unlock()
		return nil
	}
	err := w.writeLocked(buf)
	if closing {
		w.closed = true
	}
	onClose := w.onClose
	w.mu.Unlock()
	if err != nil && w.writeFailed != nil {
		w.writeFailed(err)
	}
	if closing {
		onClose()
	}
	return err
}

// tryRespond is respond for the event loop, which must never wait: it
// reports false, and does nothing, when r would have to wait for room
// among the lines pending for a response boundary. The loop's own
// refusals are the only lines that wait; the other writers' (kick,
// shutdown, idle timeout) close the session and never wait.
func (w *clientWriter) tryRespond(r response) bool {
	w.mu.Lock()
	full := !r.closing && !w.closed && w.midResponse && len(w.pending)+r.size() > maxPending
	w.mu.Unlock()
	if full {
		return false
	}
	w.respond(r)
	return true
}

// relay writes bytes from the upstream. boundary is the offset in p just
// after its last complete response (-1 when none ends in p) and mid says
// whether the stream is inside a response after p. Pending injected lines
// are written at that boundary.
func (w *clientWriter) relay(p []byte, boundary int, mid bool) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errClientClosed
	}
	if len(w.pending) == 0 || (boundary < 0 && w.midResponse) {
		err := w.writeLocked(p)
		w.midResponse = mid
		w.mu.Unlock()
		return err
	}
	if boundary < 0 { // at a boundary before p
		boundary = 0
	}
	if err := w.writeLocked(p[:boundary]); err != nil {
		w.mu.Unlock()
		return err
	}
	err := w.writeLocked(w.pending)
	w.pending = w.pending[:0]
	w.wakeLocked()
	if w.closeAfter {
		w.closed = true
		onClose := w.onClose
		w.mu.Unlock()
		onClose()
		return errClientClosed
	}
	if err == nil {
		err = w.writeLocked(p[boundary:])
	}
	w.midResponse = mid
	w.mu.Unlock()
	return err
}

// copyLiteral relays n bytes of a literal straight from src, letting the
// kernel splice when both ends are plain TCP. The stream stays inside a
// response, so injected lines wait (midResponse is set), and the copy
// runs without the writer's lock: it may block for as long as the
// upstream stalls, and an idle timeout, a kick or a close must still be
// able to take the lock and end the session. An error writing to the
// client is a *writeError.
func (w *clientWriter) copyLiteral(src io.Reader, n int64) (int64, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return 0, errClientClosed
	}
	nc := w.nc
	nc.SetWriteDeadline(time.Now().Add(w.timeout))
	w.mu.Unlock()
	k, err := copyN(nc, src, n)
	if err != nil && writeSide(err, src) {
		err = &writeError{err}
	}
	return k, err
}

// copyN copies n bytes from src to dst: with io.CopyN between two TCP
// connections, so the kernel splices, and through a pooled buffer
// otherwise (a TLS connection on either side), so no 32 KiB buffer is
// allocated per call. A write error of the buffered copy is a
// *writeError; a splice's error does not say which side failed (see
// writeSide).
func copyN(dst io.Writer, src io.Reader, n int64) (int64, error) {
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	if dstTCP && srcTCP {
		return io.CopyN(dst, src, n)
	}
	bufp := getBuf(32 << 10)
	defer putBuf(bufp)
	// Wrapping hides ReaderFrom, which would allocate a buffer of its own.
	k, err := io.CopyBuffer(taggedWriter{dst}, io.LimitReader(src, n), *bufp)
	if err == nil && k < n {
		err = io.EOF
	}
	return k, err
}

// taggedWriter marks its write errors as a *writeError.
type taggedWriter struct{ w io.Writer }

func (t taggedWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// writeSide reports whether err, from a copy from src, came from the
// writing side. A splice between two sockets fails with the same errors
// for either: EPIPE and a write deadline are the writer's; after a
// reset, the writer's if src can still be read.
func writeSide(err error, src io.Reader) bool {
	var we *writeError
	switch {
	case errors.As(err, &we):
		return false // tagged already
	case errors.Is(err, syscall.EPIPE), errors.Is(err, os.ErrDeadlineExceeded):
		return true
	case errors.Is(err, syscall.ECONNRESET):
		return !isGone(src)
	}
	return false
}

// wakeLocked wakes whoever waits for pending to be written; w.mu is held.
func (w *clientWriter) wakeLocked() {
	if w.flushed != nil {
		close(w.flushed)
		w.flushed = nil
	}
}

// abandon drops every later write and wakes whoever waits: the
// connection is closing.
func (w *clientWriter) abandon() {
	w.mu.Lock()
	w.closed = true
	w.wakeLocked()
	w.mu.Unlock()
}

// inResponse reports whether the relayed stream is inside a response.
func (w *clientWriter) inResponse() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.midResponse
}
