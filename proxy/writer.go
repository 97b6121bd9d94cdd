package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// errClientClosed is returned by writes after a closing BYE was sent.
var errClientClosed = errors.New("proxy: client connection closed by proxy")

// clientWriter is the one writer to the client connection. The proxy's
// own lines (greeting, pre-authentication responses, injected BAD/NO/BYE)
// and the bytes relayed from the upstream all go through it, so they never
// interleave. After login the relay tells it whether the upstream stream is
// inside a response; an injected line waits for the next response
// boundary, so it never cuts a literal or a response in half.
type clientWriter struct {
	mu          sync.Mutex
	nc          net.Conn
	midResponse bool   // relayed stream is inside a response
	pending     []byte // injected lines waiting for a boundary
	closeAfter  bool   // close once pending is written
	closed      bool   // a closing line was sent; drop all writes
	onClose     func() // closes the connections after a closing line; set once
	timeout     time.Duration
	muted       bool // a TLS handshake has begun on nc: no plaintext may follow
}

// mute drops every write until setConn: once a TLS handshake has begun,
// a plaintext line (a shutdown BYE) would only corrupt it.
func (w *clientWriter) mute() {
	w.mu.Lock()
	w.muted = true
	w.mu.Unlock()
}

func newClientWriter(nc net.Conn, onClose func()) *clientWriter {
	return &clientWriter{nc: nc, onClose: onClose, timeout: writeTimeout}
}

// setConn switches to a new connection (after STARTTLS).
func (w *clientWriter) setConn(nc net.Conn) {
	w.mu.Lock()
	w.nc = nc
	w.muted = false
	w.mu.Unlock()
}

func (w *clientWriter) setTimeout(d time.Duration) {
	w.mu.Lock()
	w.timeout = d
	w.mu.Unlock()
}

// write sends raw bytes under the lock; callers hold w.mu.
func (w *clientWriter) writeLocked(p []byte) error {
	if len(p) == 0 || w.muted {
		return nil
	}
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.nc.Write(p)
	return err
}

// line writes one of the proxy's own response lines (without CRLF). With
// closing set, it is the connection's last: later writes are dropped and
// onClose runs. Outside a relay it is written at once.
func (w *clientWriter) line(s string, closing bool) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errClientClosed
	}
	if w.midResponse {
		w.pending = append(w.pending, s...)
		w.pending = append(w.pending, '\r', '\n')
		w.closeAfter = w.closeAfter || closing
		w.mu.Unlock()
		return nil
	}
	buf := make([]byte, 0, len(s)+2)
	buf = append(append(buf, s...), '\r', '\n')
	err := w.writeLocked(buf)
	if closing {
		w.closed = true
	}
	w.mu.Unlock()
	if closing && w.onClose != nil {
		w.onClose()
	}
	return err
}

// lines writes several lines in one write (an untagged response and its
// tagged completion).
func (w *clientWriter) lines(ss ...string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClientClosed
	}
	var buf []byte
	for _, s := range ss {
		buf = append(append(buf, s...), '\r', '\n')
	}
	return w.writeLocked(buf)
}

// closeNow marks the writer closed without writing (an idle session whose
// upstream stalled inside a response: there is no boundary to wait for).
func (w *clientWriter) closeNow() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
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
	if w.closeAfter {
		w.closed = true
		w.mu.Unlock()
		if w.onClose != nil {
			w.onClose()
		}
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
// response, so injected lines wait.
func (w *clientWriter) copyLiteral(src io.Reader, n int64) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errClientClosed
	}
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	return copyN(w.nc, src, n)
}

// copyN copies n bytes from src to dst: with io.CopyN between two TCP
// connections, so the kernel splices, and through a pooled buffer
// otherwise (a TLS connection on either side), so no 32 KiB buffer is
// allocated per call.
func copyN(dst io.Writer, src io.Reader, n int64) (int64, error) {
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	if dstTCP && srcTCP {
		return io.CopyN(dst, src, n)
	}
	bufp := getBuf(32 << 10)
	defer putBuf(bufp)
	// Wrapping hides ReaderFrom, which would allocate a buffer of its own.
	k, err := io.CopyBuffer(struct{ io.Writer }{dst}, io.LimitReader(src, n), *bufp)
	if err == nil && k < n {
		err = io.EOF
	}
	return k, err
}
