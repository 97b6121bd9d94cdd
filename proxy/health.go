package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Health checks of Options.Backends (issue 13). Every HealthInterval, on
// the server's clock, each backend is probed as a login would dial it
// (TCP, its TLS, the PROXY header with proxy_v1/v2, the greeting) and
// logged out of, bounded by connect_timeout and login_timeout. After
// UnhealthyAfter failed probes in a row a backend is down and "hash"
// sends its users to their next choice; after HealthyAfter good probes
// in a row it is up again. A backend is up until probes say otherwise,
// so a proxy serves at once when it starts. The next round is armed
// when a round has ended, so rounds never overlap.

// health is the state of every backend the proxy knows, by Backend.key.
type health struct {
	mu      sync.Mutex
	states  map[string]*backendState
	timer   clock.Timer
	serving bool // Serve has started the checks
	armed   bool // a round waits on the clock
	stopped bool
	rounds  sync.WaitGroup
	// ctx bounds the probes; stopHealth cancels it, so that Shutdown
	// does not wait login_timeout for a backend that does not answer.
	ctx    context.Context
	cancel context.CancelFunc
}

// state returns b's state, made (up) the first time b is seen.
func (h *health) state(b Backend) *backendState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stateLocked(b)
}

func (h *health) stateLocked(b Backend) *backendState {
	if h.states == nil {
		h.states = make(map[string]*backendState)
	}
	st := h.states[b.key()]
	if st == nil {
		st = &backendState{up: true}
		h.states[b.key()] = st
	}
	return st
}

func (h *health) isUp(b Backend) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stateLocked(b).up
}

// startHealth starts the health checks (Serve calls it): the first
// round is armed when the options route among backends, now or after a
// reload (armHealth). With Route "single" no timer waits on the clock.
func (s *Server) startHealth() {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.serving || h.stopped {
		return
	}
	h.serving = true
	h.ctx, h.cancel = context.WithCancel(context.Background())
	s.armHealthLocked()
}

// armHealth arms the next round if the options in force route among
// backends and none waits (SetOptions calls it).
func (s *Server) armHealth() {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	s.armHealthLocked()
}

func (s *Server) armHealthLocked() {
	h := &s.health
	if !h.serving || h.stopped || h.armed || !s.options().routed() {
		return
	}
	h.armed = true
	h.timer = s.clock.AfterFunc(s.options().HealthInterval, s.healthRound)
}

// stopHealth stops the health checks and waits for a round under way.
func (s *Server) stopHealth() {
	h := &s.health
	h.mu.Lock()
	h.stopped = true
	if h.timer != nil {
		h.timer.Stop()
	}
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.rounds.Wait()
}

// healthRound probes every backend at once, records the results and
// arms the next round.
func (s *Server) healthRound() {
	h := &s.health
	h.mu.Lock()
	h.armed = false
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.rounds.Add(1)
	ctx := h.ctx
	h.mu.Unlock()
	defer h.rounds.Done()
	// The next round is armed in the step that records this one's
	// results: whoever sees them sees it armed (tests on a fake clock).
	// Once per round: the timer may have fired again by the time the
	// deferred call runs.
	nexted := false
	next := func() {
		if !nexted {
			nexted = true
			s.armHealthLocked()
		}
	}
	defer func() {
		if v := recover(); v != nil {
			logPanic(s.log, v)
		}
		h.mu.Lock()
		next()
		h.mu.Unlock()
	}()

	s.refreshRouteMap(false)
	o := s.options()
	if !o.routed() {
		return
	}
	now := s.clock.Now()
	errs := make([]error, len(o.Backends))
	var wg sync.WaitGroup
	for i, b := range o.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if v := recover(); v != nil {
					logPanic(s.log, v)
				}
			}()
			errs[i] = s.probe(ctx, o.forBackend(b))
		}()
	}
	wg.Wait()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return // cut short by Shutdown: not the backends' failures
	}
	keep := make(map[string]bool, len(o.Backends))
	for i, b := range o.Backends {
		keep[b.key()] = true
		st := h.stateLocked(b)
		st.lastProbe = now
		if errs[i] == nil {
			st.fails, st.lastErr = 0, ""
			if !st.up {
				st.goods++
				if st.goods >= o.HealthyAfter {
					st.up, st.goods = true, 0
					s.log.Info("backend up", "backend", b.Name, "address", b.Addr)
				}
			}
			continue
		}
		st.goods = 0
		st.fails++
		st.lastErr = errs[i].Error()
		if st.up && st.fails >= o.UnhealthyAfter {
			st.up = false
			s.log.Warn("backend down", "backend", b.Name, "address", b.Addr, "failures", st.fails, "err", errs[i])
		}
	}
	// A backend no longer configured is forgotten (its sessions, if
	// any, hold their own pointer to its state).
	for k := range h.states {
		if !keep[k] {
			delete(h.states, k)
		}
	}
	next()
}

// probe dials the upstream o names as a login would and logs out.
func (s *Server) probe(ctx context.Context, o *Options) error {
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout+o.LoginTimeout)
	defer cancel()
	up, err := dialUpstream(ctx, o, nil)
	if err != nil {
		return err
	}
	s.learnUpstreamCaps(o, up.caps)
	up.logout()
	return nil
}

// BackendInfo describes one of several upstreams (Options.Backends).
type BackendInfo struct {
	Name    string
	Address string
	Weight  float64
	// Up is the health checks' verdict (up until they say otherwise).
	Up bool
	// Failures is the count of failed probes in a row; LastError the
	// last one's error, LastProbe its time (zero: not probed yet).
	Failures  int
	LastProbe time.Time
	LastError string
	Sessions  int // sessions relaying through it
}

// State is "up" or "down".
func (i BackendInfo) State() string {
	if i.Up {
		return "up"
	}
	return "down"
}

// Backends returns the configured backends in configuration order; none
// with Route "single".
func (s *Server) Backends() []BackendInfo {
	o := s.options()
	if !o.routed() {
		return nil
	}
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]BackendInfo, 0, len(o.Backends))
	for _, b := range o.Backends {
		st := h.stateLocked(b)
		out = append(out, BackendInfo{
			Name: b.Name, Address: b.Addr, Weight: b.Weight, Up: st.up,
			Failures: st.fails, LastProbe: st.lastProbe, LastError: st.lastErr,
			Sessions: int(st.sessions.Load()),
		})
	}
	return out
}

// ErrNoBackendUp is CheckUpstream's answer when every backend is down.
var ErrNoBackendUp = errors.New("proxy: no backend is up")

// Route returns the route in force (Options.Route; "single" for "") and
// its backends, as Backends: for the admin API's GET /backends.
func (s *Server) Route() (string, []BackendInfo) {
	r := s.options().Route
	if r == "" {
		r = RouteSingle
	}
	return r, s.Backends()
}

// BackendsReady reports whether logins have somewhere to go: true with
// Route "single", else while at least one backend is up.
func (s *Server) BackendsReady() bool {
	bs := s.Backends()
	if bs == nil {
		return true
	}
	return slices.ContainsFunc(bs, func(b BackendInfo) bool { return b.Up })
}

// instrumentBackends registers the gauges of several upstreams on mp:
// imapguard.backend.up (1 up, 0 down) and imapguard.backend.sessions,
// each with the attribute backend (its name: as many series as
// [[upstream.backend]] entries). None with Route "single". Kept apart
// like instrumentDrain; a second Instrument replaces it.
func (s *Server) instrumentBackends(mp metric.MeterProvider) error {
	m := mp.Meter(instrumentationName)
	up, err := m.Int64ObservableGauge("imapguard.backend.up",
		metric.WithDescription("1 while the health checks find the backend up, else 0"))
	if err != nil {
		return err
	}
	sessions, err := m.Int64ObservableGauge("imapguard.backend.sessions", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions relaying through the backend"))
	if err != nil {
		return err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, b := range s.Backends() {
			attrs := metric.WithAttributes(attribute.String("backend", b.Name))
			var v int64
			if b.Up {
				v = 1
			}
			o.ObserveInt64(up, v, attrs)
			o.ObserveInt64(sessions, int64(b.Sessions), attrs)
		}
		return nil
	}, up, sessions)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.backendReg
	s.backendReg = reg
	s.mu.Unlock()
	if old != nil {
		return old.Unregister()
	}
	return nil
}
