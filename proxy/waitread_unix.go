//go:build unix

package proxy

import (
	"io"
	"os"
	"syscall"
)

// idleReader reads a socket without holding a buffer while it waits: it
// reads through syscall.RawConn, taking a pooled buffer only for the read
// attempt and giving it back when there is nothing yet (EAGAIN), so Go's
// poller parks the goroutine bufferless. That costs no more system calls
// than net.Conn.Read (a read that finds nothing, then the read that finds
// data), and an idle session holds no buffer at all.
type idleReader struct {
	rc     syscall.RawConn
	size   int
	bufp   *[]byte
	n      int
	err    error
	readFn func(fd uintptr) bool // r.rawRead, bound once: no allocation per read
}

// newIdleReader returns an idleReader for src, or nil when src is not a
// socket (then the caller reads the ordinary way).
func newIdleReader(src any, size int) *idleReader {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &idleReader{rc: rc, size: size}
	r.readFn = r.rawRead
	return r
}

func (r *idleReader) rawRead(fd uintptr) bool {
	if r.bufp == nil {
		r.bufp = getBuf(r.size)
	}
	n, err := syscall.Read(int(fd), (*r.bufp)[:r.size])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		putBuf(r.bufp)
		r.bufp = nil
		return false
	}
	r.n, r.err = n, err
	return true
}

// read waits for data and returns a pooled buffer of at least size bytes
// holding n of them; the caller gives it back with putBuf. Read deadlines
// apply. At the end of the stream it returns io.EOF and no buffer.
func (r *idleReader) read() (*[]byte, int, error) {
	r.n, r.err = 0, nil
	err := r.rc.Read(r.readFn)
	bufp := r.bufp
	r.bufp = nil
	switch {
	case err != nil:
	case r.err != nil:
		err = os.NewSyscallError("read", r.err)
	case r.n <= 0:
		err = io.EOF
	}
	if err != nil {
		putBuf(bufp)
		return nil, 0, err
	}
	return bufp, r.n, nil
}
