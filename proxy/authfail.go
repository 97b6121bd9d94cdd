package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// The brute-force defence across connections (issue 11), on the proxy's
// side: before a login reaches the upstream, the server's limits.Tracker
// says whether it waits (auth_failure_delay) or is refused
// (max_auth_failures_per_ip, max_auth_failures_per_user); after the
// upstream's answer, a wrong password or a success is recorded. The
// rules themselves are in limits/authfail.go.

// addrTracked reports whether the brute-force defence counts, delays
// and blocks this connection's client by its address: not for clients in
// limits.exempt_networks (a webmail host, a monitoring probe). Its user
// is tracked in any case.
func (c *conn) addrTracked() bool {
	return !c.srv.limiter.Exempt(clientAddr(c.remote))
}

// authAttempt is the tracker's view of a login by user on c.
func (c *conn) authAttempt(user string) limits.Attempt {
	return limits.Attempt{Addr: clientAddr(c.remote), User: user, TrackAddr: c.addrTracked()}
}

// authGate runs the brute-force defence before a login is passed on: it
// refuses a blocked address or user, or waits out the delay. It reports
// whether the login goes on to the upstream; when it does not, the
// attempt is ended and cont says whether the connection goes on.
func (c *conn) authGate(a *authSpan, log *slog.Logger, tag, user string) (proceed, cont bool) {
	t := c.srv.tracker
	if t == nil {
		return true, true
	}
	delay, err := t.Check(c.authAttempt(user), c.clock.Now())
	var le *limits.Error
	if errors.As(err, &le) {
		// Asked nothing of the upstream: the refusal costs it nothing
		// and tells the client nothing about the password.
		c.trace.limitEvents(a.span, []limits.Check{{Limit: le.Limit, Count: le.Count, Max: le.Value}}, err)
		a.end(authBlocked, "")
		log.Info("login refused", "reason", le.Error(), "limit", le.Limit, "count", le.Count, "max", le.Value)
		return false, c.authFailed(authBlockedNo(tag, le))
	}
	if delay <= 0 {
		return true, true
	}
	a.delayed(delay)
	log.Debug("delaying login", "delay", delay)
	if !c.penaltyWait(delay) {
		a.end(authAborted, "")
		return false, false
	}
	return true, true
}

// penaltyWait holds the connection for d (auth_failure_delay) on the
// server's clock, without a goroutine spinning: it waits on a timer, the
// connection's context (a kick, a shutdown) and a read of the client's
// next byte, which returns at once when the client goes away (or when
// preauth_timeout sets its deadline). It reports whether the login goes
// on; when it does not, the connection is over.
func (c *conn) penaltyWait(d time.Duration) bool {
	fired := make(chan struct{})
	timer := c.clock.AfterFunc(d, func() { close(fired) })
	defer timer.Stop()
	// Bytes the client pipelined are in the buffer already: then there
	// is nothing to watch but the timer and the context.
	var gone chan error
	if c.br.Buffered() == 0 {
		gone = make(chan error, 1)
		go func() {
			defer func() {
				if v := recover(); v != nil {
					logPanic(c.log, v)
					gone <- errClientClosed
				}
			}()
			_, err := c.br.Peek(1)
			gone <- err
		}()
	}
	// stopWatching ends the read under way, if any, and gives the reader
	// back to this goroutine.
	stopWatching := func() error {
		if gone == nil {
			return nil
		}
		c.mu.Lock()
		c.nc.SetReadDeadline(time.Unix(1, 0))
		c.mu.Unlock()
		err := <-gone
		c.mu.Lock()
		if !c.preauthExpired { // preauthExpire's deadline stays
			c.nc.SetReadDeadline(time.Time{})
		}
		c.mu.Unlock()
		return err
	}
	for {
		select {
		case <-fired:
			stopWatching()
			return true
		case <-c.ctx.Done():
			stopWatching()
			return false
		case err := <-gone:
			gone = nil
			if err == nil {
				continue // the client sent more: wait on
			}
			// The client closed or reset its end, or preauth_timeout
			// expired: readError answers and records how it ended.
			c.readError(err)
			return false
		}
	}
}

// authFailedUpstream records a login the upstream rejected as a wrong
// password.
func (c *conn) authFailedUpstream(user string) {
	if t := c.srv.tracker; t != nil {
		t.Failed(c.authAttempt(user), c.clock.Now())
	}
}

// authSucceeded records a login the upstream accepted.
func (c *conn) authSucceeded(user string) {
	if t := c.srv.tracker; t != nil {
		t.Succeeded(c.authAttempt(user), c.clock.Now())
	}
}

// PenaltyMatch selects what ClearPenalties forgets: everything (All), or
// the failures of the addresses within Address (an IP address or a
// prefix; an IPv6 address clears the group it is counted in) and/or of
// User.
type PenaltyMatch struct {
	All     bool
	Address string
	User    string
}

// ErrNoTracker is returned by ClearPenalties when the server has no
// brute-force defence.
var ErrNoTracker = errors.New("proxy: the brute-force defence is off")

// errEmptyPenaltyMatch is returned for a PenaltyMatch with nothing set.
var errEmptyPenaltyMatch = errors.New("clearing needs all, an address or a user")

// AuthTracker returns the brute-force defence's tracker
// (Options.AuthTracker), nil when there is none; SIGHUP changes its
// settings through it.
func (s *Server) AuthTracker() *limits.Tracker { return s.tracker }

// Penalties lists the brute-force defence's tracked failures now, as
// limits.Tracker.Penalties does; none without a tracker.
func (s *Server) Penalties() []limits.Penalty {
	if s.tracker == nil {
		return nil
	}
	return s.tracker.Penalties(s.clock.Now())
}

// ClearPenalties forgets the failures m selects, as doveadm penalty's
// reset does, and returns how many tracked keys it cleared. Blocks end
// with them; the (user, address) pairs that logged in are kept.
func (s *Server) ClearPenalties(m PenaltyMatch) (int, error) {
	if s.tracker == nil {
		return 0, ErrNoTracker
	}
	if m.All {
		return s.tracker.ClearAll(), nil
	}
	addr, user := strings.TrimSpace(m.Address), strings.TrimSpace(m.User)
	if addr == "" && user == "" {
		return 0, errEmptyPenaltyMatch
	}
	var p netip.Prefix
	if addr != "" {
		var err error
		if p, err = netip.ParsePrefix(addr); err != nil {
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				return 0, fmt.Errorf("address %q is not an IP address or a prefix", m.Address)
			}
			ip = ip.Unmap().WithZone("")
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
	}
	n := 0
	if addr != "" {
		n += s.tracker.ClearAddr(p)
	}
	if user != "" {
		n += s.tracker.ClearUser(user)
	}
	return n, nil
}
