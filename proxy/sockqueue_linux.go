package proxy

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// sockQueue writes to a non-blocking socket without ever waiting: what
// the socket does not take at once is queued, and sent by flush when the
// event loop sees the socket writable again. The queue is bounded by its
// users, who stop reading the other side while it holds more than
// queueMax (backpressure, not buffering).
type sockQueue struct {
	fd   int
	bufp *[]byte // pooled; nil while empty
	b    []byte  // queued bytes: b[off:]
	off  int
	err  error // sticky: the socket failed or was closed
}

// queueMax is how much a direction may have queued before the loop stops
// reading the side that feeds it: two relay buffers' worth.
const queueMax = 2 * relayBufSize

func (q *sockQueue) len() int { return len(q.b) - q.off }

// send writes p, queueing what the socket does not take.
func (q *sockQueue) send(p []byte) error {
	if q.err != nil {
		return q.err
	}
	if q.len() == 0 {
		for len(p) > 0 {
			n, err := rawWrite(q.fd, p)
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				q.err = os.NewSyscallError("write", err)
				return q.err
			}
			p = p[n:]
		}
		if len(p) == 0 {
			return nil
		}
	}
	q.queue(p)
	return nil
}

// queue appends p to the queue.
func (q *sockQueue) queue(p []byte) {
	if q.bufp == nil {
		q.bufp = getBuf(max(len(p), 4<<10))
		q.b, q.off = (*q.bufp)[:0], 0
	}
	if len(q.b)+len(p) > cap(q.b) {
		n := q.len()
		nb := getBuf(n + len(p))
		b := append((*nb)[:0], q.b[q.off:]...)
		putBuf(q.bufp)
		q.bufp, q.b, q.off = nb, b, 0
	}
	q.b = append(q.b, p...)
}

// flush sends what is queued; it reports whether the queue is empty.
func (q *sockQueue) flush() (bool, error) {
	if q.err != nil {
		return false, q.err
	}
	for q.len() > 0 {
		n, err := rawWrite(q.fd, q.b[q.off:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return false, nil
		}
		if err != nil {
			q.err = os.NewSyscallError("write", err)
			return false, q.err
		}
		q.off += n
	}
	q.release()
	return true, nil
}

func (q *sockQueue) release() {
	putBuf(q.bufp)
	q.bufp, q.b, q.off = nil, nil, 0
}

// close drops what is queued; later writes fail with net.ErrClosed.
func (q *sockQueue) close() {
	q.release()
	if q.err == nil {
		q.err = net.ErrClosed
	}
}

// clientQueue is the queue to a client socket, shared between the event
// loop (relayed bytes, flushes) and whoever writes the proxy's own lines
// (a kick, the idle BYE): the client writer writes through it as its
// connection, so its lines and the relayed bytes keep their order.
type clientQueue struct {
	mu sync.Mutex
	q  sockQueue
}

// Write is the client writer's write: it never waits.
func (c *clientQueue) Write(p []byte) (int, error) {
	c.mu.Lock()
	err := c.q.send(p)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline does nothing: writes never wait; the loop bounds a
// client that does not read (idle_timeout, and writeTimeout for the last
// lines of a closing session).
func (c *clientQueue) SetWriteDeadline(time.Time) error { return nil }

func (c *clientQueue) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.len()
}

func (c *clientQueue) flush() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.flush()
}

func (c *clientQueue) close() {
	c.mu.Lock()
	c.q.close()
	c.mu.Unlock()
}

// rawRead and rawWrite are read(2) and write(2) without the runtime's
// entersyscall and exitsyscall: the loop's sockets are non-blocking, so
// the calls never wait, and the loop's thread need not give its P away
// for them (as syscall.Read and syscall.Write would arrange, for calls
// that might block).
func rawRead(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
