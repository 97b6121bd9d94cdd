package proxy

import (
	"sync"
	"time"
)

// sweeper evicts the waiting reads of sessions idle for parkAfter, so
// that their directions park (see parker) and give up their goroutines.
// Its goroutine runs only while there are sessions to look at.
type sweeper struct {
	mu       sync.Mutex
	sessions map[*session]struct{}
	running  bool
}

func (w *sweeper) add(s *session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions == nil {
		w.sessions = make(map[*session]struct{})
	}
	w.sessions[s] = struct{}{}
	if !w.running {
		w.running = true
		go w.loop()
	}
}

func (w *sweeper) remove(s *session) {
	w.mu.Lock()
	delete(w.sessions, s)
	w.mu.Unlock()
}

func (w *sweeper) loop() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		if len(w.sessions) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		now := time.Now().UnixNano()
		for s := range w.sessions {
			s.evictIdle(now)
		}
		w.mu.Unlock()
	}
}
