package proxy

import (
	"sync"
	"syscall"
)

// parker holds relay directions that have been idle for a while in one
// epoll set, so that a parked direction costs no goroutine: with
// thousands of sessions idling in IDLE, goroutine stacks would be most of
// the proxy's memory. A direction parks after parkAfter without traffic
// (the sweeper in sweep.go evicts it from Go's poller); when its socket
// turns readable (data, EOF or an error), it resumes on a new goroutine.
// Busy directions never come here, so the extra epoll calls cost nothing
// on the hot path.
//
// There is one parker per process, like Go's own poller: it is created on
// first use and its goroutine waits in epoll_wait from then on.
type parker struct {
	epfd   int
	mu     sync.Mutex
	parked map[int]*direction // by file descriptor
}

var (
	parkerOnce sync.Once
	theParker  *parker
)

// getParker returns the process's parker, or nil where epoll fails.
func getParker() *parker {
	parkerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		theParker = &parker{epfd: fd, parked: make(map[int]*direction)}
		go theParker.loop()
	})
	return theParker
}

// park registers d to resume when fd turns readable.
func (p *parker) park(fd int, d *direction) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	p.parked[fd] = d
	return true
}

// unpark takes d off the set; it reports whether d was still parked (then
// it will not resume and the caller finishes it).
func (p *parker) unpark(fd int, d *direction) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[fd] != d {
		return false
	}
	delete(p.parked, fd)
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	return true
}

const epollOneShot = 1 << 30 // EPOLLONESHOT

func (p *parker) loop() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			continue // EINTR
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			p.mu.Lock()
			d := p.parked[fd]
			if d != nil {
				delete(p.parked, fd)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
			}
			p.mu.Unlock()
			if d != nil {
				go d.pump()
			}
		}
	}
}
