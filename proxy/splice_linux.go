package proxy

import (
	"io"
	"os"
	"syscall"
)

// splicer moves one large literal from one socket to another with
// splice(2), through a pipe pair that it holds only while the literal is
// in flight: the octets never enter the process. It never waits: run
// moves what the sockets allow and returns; the event loop calls it again
// on the next edge.
type splicer struct {
	p      [2]int // read end, write end
	left   int64  // octets still to take from the source
	inPipe int    // octets in the pipe, not yet sent on
}

// splicePipeSize is what the pipe is asked to hold (F_SETPIPE_SZ): a few
// system calls per megabyte rather than one per 64 KiB. If the kernel
// refuses (pipe-max-size, or the user's pipe quota), the default stays.
const splicePipeSize = 256 << 10

// newSplicer returns a splicer for n octets.
func newSplicer(n int64) (*splicer, error) {
	sp := &splicer{left: n}
	if err := syscall.Pipe2(sp.p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, err
	}
	syscall.Syscall(syscall.SYS_FCNTL, uintptr(sp.p[1]), syscall.F_SETPIPE_SZ, splicePipeSize)
	return sp, nil
}

// spliced is what one run moved: in, from the source into the pipe; out,
// from the pipe to the destination.
type spliced struct{ in, out int64 }

const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

// run moves octets from src into the pipe and from the pipe to dst (only
// if canWrite: nothing else is queued for dst). readable is the source's
// "may have bytes" flag, cleared when it has none. Errors reading src
// are returned as they are (the end of the stream as
// io.ErrUnexpectedEOF); errors writing dst as a *writeError.
func (sp *splicer) run(src, dst int, canWrite bool, readable *bool) (k spliced, err error) {
	for {
		progress := false
		if sp.left > 0 && *readable {
			n, e := splice(src, sp.p[1], int(min(sp.left, splicePipeSize)))
			switch {
			case n > 0:
				sp.left -= int64(n)
				sp.inPipe += n
				k.in += int64(n)
				progress = true
			case e == syscall.EAGAIN:
				// The socket is empty, or the pipe is full: in both cases
				// the next edge (or the pipe's draining below) says when.
				if sp.inPipe == 0 {
					*readable = false
				}
			case e != nil:
				return k, os.NewSyscallError("splice", e)
			default:
				return k, io.ErrUnexpectedEOF
			}
		}
		if sp.inPipe > 0 && canWrite {
			n, e := splice(sp.p[0], dst, sp.inPipe)
			switch {
			case n > 0:
				sp.inPipe -= n
				k.out += int64(n)
				progress = true
			case e == syscall.EAGAIN:
			case e != nil:
				return k, &writeError{os.NewSyscallError("splice", e)}
			}
		}
		if !progress || sp.done() {
			return k, nil
		}
	}
}

// done reports whether the whole literal went through.
func (sp *splicer) done() bool { return sp.left == 0 && sp.inPipe == 0 }

// close frees the pipe.
func (sp *splicer) close() {
	syscall.Close(sp.p[0])
	syscall.Close(sp.p[1])
}

func splice(in, out, n int) (int, error) {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceFlags)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
