package park

import (
	"sync"
	"syscall"
)

// epoll is the Linux Parker: one epoll set and one goroutine waiting in
// epoll_wait. Each socket is registered one-shot; when it fires, its
// direction resumes on a new goroutine and the socket leaves the set.
type epoll struct {
	epfd   int
	wake   [2]int // a pipe: Close writes to it to end the loop
	mu     sync.Mutex
	parked map[int]Resumer // by file descriptor
	closed bool
	done   chan struct{}
}

// New returns an epoll parker, or Nop if epoll is not available.
func New() Parker {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return Nop{}
	}
	p := &epoll{epfd: fd, parked: make(map[int]Resumer), done: make(chan struct{})}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(fd)
		return Nop{}
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(fd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		syscall.Close(fd)
		syscall.Close(p.wake[0])
		syscall.Close(p.wake[1])
		return Nop{}
	}
	go p.loop()
	return p
}

const epollOneShot = 1 << 30 // EPOLLONESHOT

func (p *epoll) Park(fd int, r Resumer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	p.parked[fd] = r
	return true
}

func (p *epoll) Unpark(fd int, r Resumer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[fd] != r {
		return false
	}
	delete(p.parked, fd)
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	return true
}

func (p *epoll) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	syscall.Write(p.wake[1], []byte{0})
	<-p.done
	return nil
}

func (p *epoll) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			continue // EINTR
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == p.wake[0] {
				p.shutdown()
				return
			}
			p.mu.Lock()
			r := p.parked[fd]
			if r != nil {
				delete(p.parked, fd)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
			}
			p.mu.Unlock()
			if r != nil {
				go r.Resume()
			}
		}
	}
}

// shutdown resumes whatever is still parked and frees the descriptors.
func (p *epoll) shutdown() {
	p.mu.Lock()
	left := p.parked
	p.parked = nil
	for fd := range left {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	}
	p.mu.Unlock()
	for _, r := range left {
		go r.Resume()
	}
	syscall.Close(p.epfd)
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
}
