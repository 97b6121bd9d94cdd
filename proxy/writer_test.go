package proxy

import (
	"io"
	"sync"
	"testing"
	"time"
)

// The proxy's own lines waiting for a response boundary are bounded: a
// client that sends refused commands faster than the upstream finishes
// its response waits for the boundary instead of being buffered for, and
// goes on once the response has ended; a closing connection wakes it.
func TestWriterPendingBounded(t *testing.T) {
	for _, end := range []string{"boundary", "close"} {
		t.Run(end, func(t *testing.T) {
			clientEnd, proxyEnd := tcpPair(t)
			go io.Copy(io.Discard, clientEnd) // the client reads everything
			w := newClientWriter(proxyEnd, func() {}, func(response) {})
			w.handOver(time.Minute, func() {})
			if err := w.relay([]byte("* 1 FETCH (BODY[] {100}\r\npartial"), -1, true); err != nil {
				t.Fatal(err)
			}
			refusal := tooBig("a", 1024)
			perLine := len(refusal.appendTo(nil))
			fit := maxPending / perLine
			var wg sync.WaitGroup
			errs := make(chan error, fit+10)
			for range fit + 10 {
				wg.Go(func() { errs <- w.respond(refusal) })
			}
			// Lines past the bound wait; the queue never grows past it.
			waiting := func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				if len(w.pending) > maxPending {
					t.Fatalf("%d bytes pending; bound %d", len(w.pending), maxPending)
				}
				return w.flushed != nil && len(w.pending) >= fit*perLine
			}
			eventually(t, "writers waiting at the bound", waiting)
			if end == "boundary" {
				// The response ends: what waited is written, and the rest
				// of the writers go on.
				if err := w.relay([]byte(")\r\n"), 3, false); err != nil {
					t.Fatal(err)
				}
			} else {
				w.abandon()
			}
			wg.Wait()
			close(errs)
			var failed int
			for err := range errs {
				if err != nil {
					failed++
				}
			}
			if end == "boundary" && failed != 0 {
				t.Errorf("%d lines failed after the boundary", failed)
			}
			if end == "close" && failed == 0 {
				t.Errorf("every line succeeded on an abandoned writer")
			}
		})
	}
}
