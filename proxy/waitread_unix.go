//go:build unix

package proxy

import (
	"errors"
	"syscall"
)

// waitReadable blocks until src has bytes to read, has reached EOF or has
// failed, without reading anything: it peeks one byte with MSG_PEEK
// through the connection's syscall.RawConn, so Go's poller parks the
// goroutine and no buffer is held meanwhile. Read deadlines apply. For a
// source that is not a socket it returns at once.
func waitReadable(src any) error {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing yet, let the poller wait. Anything else (data,
		// EOF, an error) is for the real read to report.
		return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
	})
}
