package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// The upstream's pre-login capabilities, which decide whether the proxy
// offers AUTH=OAUTHBEARER and AUTH=XOAUTH2 (it can only pass them
// through). The proxy learns them from every login's dial, and, with
// Options.ProbeUpstream, from a probe of its own: at Serve, and on a
// client's connection when what it knows is older than capsMaxAge or is
// of another upstream (after a reload; a probe that ends with another
// upstream configured starts one for it). A probe runs on its own
// goroutine, one at a time and at most once per probeRetry: a greeting
// never waits for it, and gets the list as last known (none at first).
const (
	// capsMaxAge is how long learned capabilities are used before a
	// client's connection starts a fresh probe (they are still used
	// until it answers).
	capsMaxAge = 10 * time.Minute
	// probeRetry spaces probes out when the upstream does not answer.
	probeRetry = 30 * time.Second
)

// upstreamCaps is the cache. key is the upstream address and TLS mode
// the capabilities belong to.
type upstreamCaps struct {
	mu       sync.Mutex
	key      string
	caps     []string // nil: unknown
	learned  time.Time
	tried    time.Time // the last probe's start
	triedKey string    // and the upstream it probed
	probing  bool
}

func capsKey(o *Options) string { return o.UpstreamTLS + " " + o.UpstreamAddr }

// capsOptions returns the options of the upstream whose capabilities the
// greeting offers: with several backends (route.go), the first one
// configured. The capabilities come before the user, so before the
// backend is chosen: the backends of one installation are expected to
// offer the same mechanisms.
func capsOptions(o *Options) *Options {
	if o.routed() {
		return o.forBackend(o.Backends[0])
	}
	return o
}

// learn records caps as the pre-login capabilities of the upstream o
// names.
func (s *Server) learnUpstreamCaps(o *Options, caps []string) {
	if len(caps) == 0 || capsKey(o) != capsKey(capsOptions(s.options())) {
		return
	}
	uc := &s.upCaps
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.key, uc.caps, uc.learned = capsKey(o), slices.Clone(caps), s.clock.Now()
}

// knownUpstreamCaps returns the capabilities learned of the upstream o
// names (nil: none yet) and, with o.ProbeUpstream, starts a probe when
// they are missing or older than capsMaxAge.
func (s *Server) knownUpstreamCaps(o *Options) []string {
	o = capsOptions(o)
	uc := &s.upCaps
	now := s.clock.Now()
	key := capsKey(o)
	uc.mu.Lock()
	defer uc.mu.Unlock()
	var caps []string
	if uc.key == key {
		caps = uc.caps
	}
	stale := caps == nil || now.Sub(uc.learned) >= capsMaxAge
	if o.ProbeUpstream && stale && !uc.probing && (uc.tried.IsZero() || now.Sub(uc.tried) >= probeRetry || uc.triedKey != key) {
		uc.probing, uc.tried, uc.triedKey = true, now, key
		go s.probeUpstreamCaps(o)
	}
	return caps
}

// probeUpstreamCaps connects to the upstream as a login would (TCP, TLS
// as configured, PROXY header naming no client), reads its capabilities
// and logs out, bounded by connect_timeout and login_timeout.
func (s *Server) probeUpstreamCaps(o *Options) {
	var learnt []string
	defer func() {
		if v := recover(); v != nil {
			logPanic(s.log, v)
		}
		// Learnt and done in one step: whoever sees the list sees the
		// probe over.
		uc := &s.upCaps
		uc.mu.Lock()
		if len(learnt) > 0 {
			uc.key, uc.caps, uc.learned = capsKey(o), learnt, s.clock.Now()
		}
		uc.probing = false
		uc.mu.Unlock()
		// A reload named another upstream while this probe ran: probe
		// that one now rather than at the next connection.
		if now := s.options(); now.ProbeUpstream && capsKey(capsOptions(now)) != capsKey(o) {
			s.knownUpstreamCaps(now)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), o.ConnectTimeout+o.LoginTimeout)
	defer cancel()
	up, err := dialUpstream(ctx, o, nil)
	if err == nil {
		if len(up.caps) == 0 {
			err = up.capability("igp")
		}
		caps := slices.Clone(up.caps)
		up.logout()
		if err == nil && len(caps) > 0 {
			learnt = caps
			s.log.Debug("upstream capabilities probed", "upstream", o.UpstreamAddr, "capabilities", strings.Join(caps, " "))
			return
		}
		if err == nil {
			err = errors.New("no capabilities")
		}
	}
	s.log.Warn("probing the upstream's capabilities failed", "upstream", o.UpstreamAddr, "err", err)
}

// UpstreamCaps returns the upstream's pre-login capabilities as last
// learned (from a login or a probe), or nil if none are known yet. It
// starts no probe.
func (s *Server) UpstreamCaps() []string {
	o := capsOptions(s.options())
	uc := &s.upCaps
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.key != capsKey(o) {
		return nil
	}
	return slices.Clone(uc.caps)
}

// upstreamOffers reports whether the upstream offers the SASL mechanism,
// as last learned.
func (c *conn) upstreamOffers(mech string) bool {
	for _, cp := range c.srv.knownUpstreamCaps(c.opts) {
		if strings.EqualFold(cp, "AUTH="+mech) {
			return true
		}
	}
	return false
}

// oauthCaps are the AUTH= capabilities of the OAuth mechanisms the
// upstream offers, each with a leading space.
func (c *conn) oauthCaps() string {
	var b strings.Builder
	for _, m := range oauthMechanisms {
		if c.upstreamOffers(m) {
			b.WriteString(" AUTH=" + m)
		}
	}
	return b.String()
}
