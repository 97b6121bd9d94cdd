package proxytest

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// Eventually checks ok every 2 ms until it holds, for at most Timeout,
// and reports whether it did. It is for state with no event to wait on:
// the proxy releases slots and updates its registry when handlers unwind,
// after the client has seen the close.
func Eventually(ok func() bool) bool {
	deadline := time.After(Timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-deadline:
			return ok()
		case <-tick.C:
		}
	}
	return true
}

// WaitFor fails the test unless ok comes to hold (see Eventually).
func WaitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	if !Eventually(ok) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// WaitCounts fails the test unless the limiter's counts come to satisfy
// ok, and then shows them.
func WaitCounts(t testing.TB, lim *limits.Limiter, what string, ok func(limits.Counts) bool) {
	t.Helper()
	var n limits.Counts
	if !Eventually(func() bool { n = lim.Counts(); return ok(n) }) {
		t.Fatalf("%s: counts %+v", what, n)
	}
}

// WaitZero waits for every count to return to zero.
func WaitZero(t testing.TB, lim *limits.Limiter) {
	t.Helper()
	WaitCounts(t, lim, "counts did not return to zero", zero)
}

func zero(n limits.Counts) bool {
	return n.Connections == 0 && n.Addresses == 0 && n.Users == 0 && n.Sessions == 0
}

// Buffer is a bytes.Buffer safe for concurrent Write and String: for
// logs and a process's output, written on other goroutines.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
