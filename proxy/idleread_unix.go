//go:build unix

package proxy

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idleReader reads a socket without holding a buffer while it waits: it
// reads through syscall.RawConn, taking a pooled buffer only for the read
// attempt and giving it back when there is nothing yet (EAGAIN), so Go's
// poller parks the goroutine bufferless. That costs no more system calls
// than net.Conn.Read (a read that finds nothing, then the read that finds
// data), and an idle session holds no buffer at all.
//
// A read that waits can also be evicted (see parker): it then returns
// errPark and the goroutine can end, leaving the direction to the parker.
type idleReader struct {
	rc     syscall.RawConn
	conn   interface{ SetReadDeadline(time.Time) error }
	fd     int
	size   int
	bufp   *[]byte
	n      int
	err    error
	readFn func(fd uintptr) bool // r.rawRead, bound once: no allocation per read

	// Eviction: the sweeper may end a waiting read by setting a read
	// deadline in the past. mu orders that against the reader clearing
	// it, so no stale deadline is ever left behind.
	state atomic.Int32 // readBusy, readWaiting, readEvicting
	mu    sync.Mutex
}

const (
	readBusy = iota
	readWaiting
	readEvicting
)

// newIdleReader returns an idleReader for src, or nil when src is not a
// socket (then the caller reads the ordinary way).
func newIdleReader(src any, size int) *idleReader {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	conn, ok := src.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &idleReader{rc: rc, conn: conn, size: size, fd: -1}
	rc.Control(func(fd uintptr) { r.fd = int(fd) })
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
// holding n of them; the caller gives it back with putBuf. At the end of
// the stream it returns io.EOF and no buffer; after an eviction, errPark.
func (r *idleReader) read() (*[]byte, int, error) {
	r.n, r.err = 0, nil
	r.state.Store(readWaiting)
	err := r.rc.Read(r.readFn)
	evicted := false
	if !r.state.CompareAndSwap(readWaiting, readBusy) {
		r.mu.Lock()
		r.conn.SetReadDeadline(time.Time{})
		r.state.Store(readBusy)
		r.mu.Unlock()
		evicted = true
	}
	bufp := r.bufp
	r.bufp = nil
	switch {
	case err != nil:
		if evicted && errors.Is(err, os.ErrDeadlineExceeded) {
			err = errPark
		}
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

// waiting reports whether a read is waiting (a hint for the sweeper).
func (r *idleReader) waiting() bool { return r.state.Load() == readWaiting }

// evict ends a read that is waiting, which then returns errPark. It
// reports whether there was one.
func (r *idleReader) evict() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.state.CompareAndSwap(readWaiting, readEvicting) {
		return false
	}
	r.conn.SetReadDeadline(time.Unix(1, 0))
	return true
}

// isGone reports whether the socket src can no longer be read: a peek
// that does not wait finds a reset, or the end of the stream (Linux
// reports a reset to one system call only, and an end of stream after
// it). Data or nothing yet (EAGAIN) mean it is alive; a src that is not
// a socket counts as gone.
func isGone(src any) bool {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := true
	var b [1]byte
	rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = !(n > 0 || err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	})
	return gone
}
