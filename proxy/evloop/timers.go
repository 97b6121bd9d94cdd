package evloop

import (
	"container/heap"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
)

// Timers is one loop's timers: a heap of deadlines and one clock timer,
// armed for the earliest, whose firing posts the expired ones' functions
// to the loop. A session's idle timeout is one entry, so an idle session
// holds no runtime timer of its own. All its methods run on the loop.
//
// A heap rather than a timer wheel: its entries move only when they fire
// (a session notes its activity in a field and is put back, later, when
// its deadline comes), so each session costs O(log n) once per idle
// period, and deadlines stay exact on the injected clock, which tests
// advance by exactly a timeout.
type Timers struct {
	clock clock.Clock
	post  func(func()) bool
	h     deadlineHeap
	timer clock.Timer
	armed time.Time // when timer fires; zero while it is stopped
	fire  func()    // t.expire bound once
}

// Deadline is one entry; its owner embeds or allocates it. F runs on the
// loop when At has passed, with the time it ran at.
type Deadline struct {
	At  time.Time
	F   func(now time.Time)
	pos int // index in the heap + 1; 0 when not scheduled
}

// NewTimers returns the timers of a loop that runs posted functions with
// post, on clk.
func NewTimers(clk clock.Clock, post func(func()) bool) *Timers {
	t := &Timers{clock: clk, post: post}
	t.fire = func() { t.post(t.expire) }
	return t
}

// Now is the clock's time.
func (t *Timers) Now() time.Time { return t.clock.Now() }

// Schedule (re)schedules d for at.
func (t *Timers) Schedule(d *Deadline, at time.Time) {
	d.At = at
	if d.pos > 0 {
		heap.Fix(&t.h, d.pos-1)
	} else {
		heap.Push(&t.h, d)
	}
	t.arm()
}

// Cancel takes d off, if it is scheduled.
func (t *Timers) Cancel(d *Deadline) {
	if d.pos > 0 {
		heap.Remove(&t.h, d.pos-1)
		d.pos = 0
		t.arm()
	}
}

// Scheduled reports whether d is scheduled.
func (d *Deadline) Scheduled() bool { return d.pos > 0 }

// Len is the number of deadlines scheduled.
func (t *Timers) Len() int { return len(t.h) }

// arm points the clock timer at the earliest deadline.
func (t *Timers) arm() {
	if len(t.h) == 0 {
		if t.timer != nil && !t.armed.IsZero() {
			t.timer.Stop()
			t.armed = time.Time{}
		}
		return
	}
	at := t.h[0].At
	if !t.armed.IsZero() && !at.Before(t.armed) {
		return // fires early enough; expire re-arms
	}
	d := at.Sub(t.clock.Now())
	if t.timer == nil {
		t.timer = t.clock.AfterFunc(d, t.fire)
	} else {
		t.timer.Stop()
		t.timer.Reset(d)
	}
	t.armed = at
}

// expire runs the functions of the deadlines that have passed.
func (t *Timers) expire() {
	t.armed = time.Time{}
	now := t.clock.Now()
	for len(t.h) > 0 && !t.h[0].At.After(now) {
		d := heap.Pop(&t.h).(*Deadline)
		d.F(now)
	}
	t.arm()
}

type deadlineHeap []*Deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].At.Before(h[j].At) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i+1, j+1
}
func (h *deadlineHeap) Push(x any) {
	d := x.(*Deadline)
	d.pos = len(*h) + 1
	*h = append(*h, d)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	d.pos = 0
	return d
}
