package park

import (
	"syscall"
	"testing"
	"time"
)

type resumer chan struct{}

func (r resumer) Resume() { close(r) }

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

func wait(t *testing.T, r resumer, what string) {
	t.Helper()
	select {
	case <-r:
	case <-time.After(10 * time.Second):
		t.Fatalf("not resumed: %s", what)
	}
}

// A parked socket resumes its direction when it turns readable; one taken
// off before that does not; Close resumes what is left.
func TestEpoll(t *testing.T) {
	p := New()
	if _, ok := p.(*epoll); !ok {
		t.Fatalf("New() = %T; want the epoll parker", p)
	}
	a, b := socketPair(t)
	r := make(resumer)
	if !p.Park(a, r) {
		t.Fatal("Park failed")
	}
	if p.Park(a, make(resumer)) {
		t.Fatal("a descriptor parked twice")
	}
	syscall.Write(b, []byte("x"))
	wait(t, r, "data arrived")
	if p.Unpark(a, r) {
		t.Fatal("Unpark after resume reports it was still parked")
	}

	c, _ := socketPair(t)
	r2 := make(resumer)
	if !p.Park(c, r2) || !p.Unpark(c, r2) {
		t.Fatal("Park then Unpark failed")
	}

	d, _ := socketPair(t)
	r3 := make(resumer)
	if !p.Park(d, r3) {
		t.Fatal("Park failed")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wait(t, r3, "the parker closed")
	select {
	case <-r2:
		t.Fatal("an unparked direction resumed")
	default:
	}
	if p.Park(d, make(resumer)) {
		t.Fatal("Park after Close succeeded")
	}
	p.Close() // twice is fine
}
