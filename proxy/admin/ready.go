package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

const (
	// readyTimeout bounds one upstream check of /readyz.
	readyTimeout = 5 * time.Second
	// readyCacheTTL is how long a check's result answers /readyz: the
	// endpoint needs no token, so it must not let anyone make the proxy
	// hammer the upstream.
	readyCacheTTL = time.Second
	// upstreamUnreachable is all /readyz says of a failed check.
	upstreamUnreachable = "unreachable"
)

// upstreamCheck runs the upstream check for /readyz: at most one at a
// time, shared by every request that arrives while it runs, and its result
// reused for readyCacheTTL after it finished.
type upstreamCheck struct {
	check func(context.Context) error
	now   func() time.Time
	base  context.Context // cancelled when the server shuts down
	log   *slog.Logger

	mu      sync.Mutex
	last    *flight // the latest finished check, nil before the first
	running *flight // the check under way, nil when none
}

// flight is one check; err is set before done is closed.
type flight struct {
	done     chan struct{}
	err      error
	finished time.Time
}

// result returns the result of a check no older than readyCacheTTL,
// starting one when there is none, or ctx's error if ctx ends first.
func (u *upstreamCheck) result(ctx context.Context) error {
	u.mu.Lock()
	if l := u.last; l != nil && u.now().Sub(l.finished) < readyCacheTTL {
		u.mu.Unlock()
		return l.err
	}
	f := u.running
	if f == nil {
		f = &flight{done: make(chan struct{})}
		u.running = f
		go u.run(f)
	}
	u.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("upstream check: %w", ctx.Err())
	}
}

// run runs f on a context of its own, so that a request that gives up
// does not cancel the check for the others waiting on it. A failure is
// logged here, once per check however many requests it answers; a check
// cut short by Shutdown is not a failure worth a line.
func (u *upstreamCheck) run(f *flight) {
	defer func() {
		if v := recover(); v != nil {
			u.log.Error("admin API: upstream check panicked", "panic", v, "stack", string(debug.Stack()))
			f.err = errors.New("upstream check failed (panic; see the log)")
		} else if f.err != nil && u.base.Err() == nil {
			u.log.Warn("admin API: upstream check failed", "err", f.err)
		}
		u.mu.Lock()
		f.finished = u.now()
		u.last, u.running = f, nil
		u.mu.Unlock()
		close(f.done)
	}()
	ctx, cancel := context.WithTimeout(u.base, readyTimeout)
	defer cancel()
	f.err = u.check(ctx)
}
