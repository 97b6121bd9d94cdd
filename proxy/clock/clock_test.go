package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(start)
	fired := make(chan string, 4)
	a := c.AfterFunc(time.Minute, func() { fired <- "a" })
	c.AfterFunc(2*time.Minute, func() { fired <- "b" })
	stopped := c.AfterFunc(time.Second, func() { fired <- "stopped" })
	if !c.WaitPending(3, time.Second) {
		t.Fatalf("%d timers pending; want 3", c.Pending())
	}
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of a waiting timer = false, or a second Stop = true")
	}
	c.Advance(59 * time.Second)
	select {
	case f := <-fired:
		t.Fatalf("%s fired before its time", f)
	default:
	}
	c.Advance(time.Second)
	if f := <-fired; f != "a" {
		t.Fatalf("fired %s; want a", f)
	}
	if got := c.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("Now = %v", got)
	}
	// Reset re-arms a fired timer.
	if a.Reset(time.Minute) {
		t.Fatal("Reset of a fired timer reports it was waiting")
	}
	c.Advance(time.Minute)
	got := map[string]bool{<-fired: true, <-fired: true}
	if !got["a"] || !got["b"] {
		t.Fatalf("fired %v; want a and b", got)
	}
	if c.Pending() != 0 {
		t.Fatalf("%d timers pending after all fired", c.Pending())
	}
	if c.WaitPending(1, 10*time.Millisecond) {
		t.Fatal("WaitPending reports a timer that is not there")
	}
}

func TestReal(t *testing.T) {
	done := make(chan struct{})
	Real.AfterFunc(time.Millisecond, func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a real timer did not fire")
	}
	if d := time.Since(Real.Now()); d < 0 || d > time.Minute {
		t.Fatalf("Real.Now is %v away from time.Now", d)
	}
}
