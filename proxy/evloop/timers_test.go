package evloop

import (
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
)

// TestTimers runs deadlines in order, on a fake clock, with one clock
// timer for all of them, and honours Cancel and rescheduling.
func TestTimers(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	posted := make(chan func(), 16)
	tm := NewTimers(clk, func(f func()) bool { posted <- f; return true })
	var fired []string
	mk := func(name string) *Deadline {
		return &Deadline{F: func(time.Time) { fired = append(fired, name) }}
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	start := clk.Now()
	tm.Schedule(c, start.Add(3*time.Second))
	tm.Schedule(a, start.Add(1*time.Second))
	tm.Schedule(b, start.Add(2*time.Second))
	if got := clk.Pending(); got != 1 {
		t.Fatalf("%d clock timers pending, want 1", got)
	}
	tm.Cancel(b)
	if b.Scheduled() || tm.Len() != 2 {
		t.Fatalf("after Cancel: b scheduled %v, %d left", b.Scheduled(), tm.Len())
	}
	tm.Schedule(c, start.Add(1500*time.Millisecond)) // earlier now
	// run runs the one function the clock timer posts when it fires (the
	// fake clock fires it on a goroutine of its own).
	run := func() {
		t.Helper()
		select {
		case f := <-posted:
			f()
		case <-time.After(10 * time.Second):
			t.Fatal("the clock timer posted nothing")
		}
	}
	clk.Advance(time.Second)
	run()
	if len(fired) != 1 || fired[0] != "a" {
		t.Fatalf("after 1s fired %v, want [a]", fired)
	}
	clk.Advance(499 * time.Millisecond)
	if clk.Pending() != 1 {
		t.Fatalf("the clock timer fired before c's deadline")
	}
	clk.Advance(time.Millisecond)
	run()
	if len(fired) != 2 || fired[1] != "c" || tm.Len() != 0 {
		t.Fatalf("fired %v, %d left; want [a c], 0", fired, tm.Len())
	}
	if got := clk.Pending(); got != 0 {
		t.Fatalf("%d clock timers pending with nothing scheduled", got)
	}
}
