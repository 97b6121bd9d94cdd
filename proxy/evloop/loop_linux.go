package evloop

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// Loop is one event loop: a goroutine locked to its thread, waiting in
// epoll_wait on the sockets registered with it, edge-triggered, and
// running their handlers and the functions posted to it, one at a time.
// Handlers and posted functions must not block.
type Loop struct {
	epfd int
	efd  int // eventfd: Post wakes the loop through it

	mu     sync.Mutex
	tasks  []func()
	spare  []func() // the other half of the task double buffer
	woken  bool     // efd was written and not yet read
	closed bool

	// handlers by registration id (the epoll event's data); ids are
	// reused through free. Only the loop's thread touches them.
	handlers []Handler
	free     []int32

	done chan struct{}
}

// Handler is what a registered socket's events are handed to, on the
// loop's thread. events is the epoll mask (EPOLLIN, EPOLLOUT, EPOLLRDHUP,
// EPOLLERR, EPOLLHUP).
type Handler interface {
	Event(events uint32)
}

// The events a registration is edge-triggered for.
const (
	In    = syscall.EPOLLIN
	Out   = syscall.EPOLLOUT
	RDHup = syscall.EPOLLRDHUP
	Err   = syscall.EPOLLERR
	Hup   = syscall.EPOLLHUP

	epollET = 1 << 31 // EPOLLET, which package syscall types as a negative int
)

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("evloop: loop closed")

// Supported reports whether event loops work here (Linux: yes).
func Supported() bool { return true }

// New starts a loop.
func New() (*Loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	l := &Loop{epfd: epfd, efd: int(efd), done: make(chan struct{})}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: -1}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.efd, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(l.efd)
		return nil, err
	}
	go l.run()
	return l, nil
}

// Add registers fd, a non-blocking socket, for all its events,
// edge-triggered, and returns the registration id for Remove. It must be
// called on the loop (from a handler or a posted function).
func (l *Loop) Add(fd int, h Handler) (int32, error) {
	var id int32
	if n := len(l.free); n > 0 {
		id = l.free[n-1]
		l.free = l.free[:n-1]
		l.handlers[id] = h
	} else {
		id = int32(len(l.handlers))
		l.handlers = append(l.handlers, h)
	}
	ev := syscall.EpollEvent{Events: In | Out | RDHup | epollET, Fd: id}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.handlers[id] = nil
		l.free = append(l.free, id)
		return -1, err
	}
	return id, nil
}

// Remove unregisters fd, registered as id, before it is closed. It must
// be called on the loop; events already collected for id in this round
// are dropped.
func (l *Loop) Remove(fd int, id int32) {
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	l.handlers[id] = nil
	l.free = append(l.free, id)
}

// Post runs f on the loop, after the events being handled. It reports
// false, and f does not run, once the loop is closed.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.tasks = append(l.tasks, f)
	wake := !l.woken
	l.woken = true
	l.mu.Unlock()
	if wake {
		one := uint64(1)
		syscall.Write(l.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	return true
}

// Close stops the loop after the functions already posted have run, and
// waits for it. Registered sockets are neither told nor closed: their
// owners close them first (Server.Shutdown waits for its sessions).
func (l *Loop) Close() {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if !already {
		one := uint64(1)
		syscall.Write(l.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	<-l.done
}

// run is the loop's goroutine. It is locked to its thread so that the
// sockets' work stays on one thread, without hand-offs between threads
// for each message.
func (l *Loop) run() {
	runtime.LockOSThread()
	// Unlocked at the end, so that the thread goes back to the runtime
	// instead of exiting with the goroutine: a thread's exit is a
	// parent-death signal to the processes it started (Pdeathsig), such as
	// a Dovecot started by a test on this thread before it was locked.
	defer runtime.UnlockOSThread()
	defer close(l.done)
	events := make([]syscall.EpollEvent, 256)
	var buf [8]byte
	for {
		// First without waiting and without leaving the runtime (a raw
		// call): under load the next events are often there already, and
		// a call that may block costs the thread its P, which it then has
		// to get back. Only an empty set waits, in a call the runtime
		// knows may block.
		n, err := epollPoll(l.epfd, events)
		if n == 0 && err == nil {
			n, err = syscall.EpollWait(l.epfd, events, -1)
		}
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			panic("evloop: epoll_wait: " + err.Error())
		}
		posted := false
		for i := range events[:n] {
			ev := &events[i]
			if ev.Fd < 0 {
				posted = true
				continue
			}
			if h := l.handlers[ev.Fd]; h != nil {
				h.Event(ev.Events)
			}
		}
		if posted {
			syscall.Read(l.efd, buf[:])
			if l.runTasks() {
				syscall.Close(l.epfd)
				syscall.Close(l.efd)
				return
			}
		}
	}
}

// runTasks runs what was posted, until nothing is left; it reports
// whether the loop is closed.
func (l *Loop) runTasks() bool {
	for {
		l.mu.Lock()
		tasks := l.tasks
		l.tasks = l.spare[:0]
		if len(tasks) == 0 {
			l.woken = false
			closed := l.closed
			l.mu.Unlock()
			l.spare = tasks
			return closed
		}
		l.mu.Unlock()
		for i, f := range tasks {
			f()
			tasks[i] = nil
		}
		l.spare = tasks
	}
}

// epollPoll is epoll_wait with a zero timeout, as a raw system call
// (epoll_pwait without a signal mask: arm64 has no epoll_wait).
func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
