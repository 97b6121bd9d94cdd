package park

import (
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
)

type idler struct{ calls chan time.Time }

func (i *idler) EvictIdle(since time.Time) { i.calls <- since }

// The sweeper asks each session whether it has been idle since After ago,
// on the clock it is given, and stops looking at removed sessions.
func TestSweeper(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := clock.NewFake(start)
	w := &Sweeper{After: 500 * time.Millisecond, Every: time.Millisecond, Clock: c}
	s := &idler{calls: make(chan time.Time, 100)}
	w.Add(s)
	select {
	case since := <-s.calls:
		if want := start.Add(-500 * time.Millisecond); !since.Equal(want) {
			t.Fatalf("EvictIdle(%v); want %v", since, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sweeper never looked")
	}
	w.Remove(s)
	// The loop notices it has nothing left and stops.
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		running := w.running
		w.mu.Unlock()
		if !running {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the sweeper keeps running without sessions")
		case <-s.calls:
		case <-time.After(time.Millisecond):
		}
	}
}

func TestNop(t *testing.T) {
	var p Parker = Nop{}
	if p.Park(0, nil) || p.Unpark(0, nil) || p.Close() != nil {
		t.Fatal("Nop parked something")
	}
}
